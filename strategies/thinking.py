"""Reasoning models: ``<think>`` sections parsed apart from the answer, and a thinking budget.

:func:`split_thinking` separates reasoning from the answer (a server's ``Completion.reasoning``
when it filled one, else the text's ``<think>...</think>`` section). Answers are read from the
answer part only, so numbers in the reasoning never count as the answer.

The :class:`Thinking` strategy controls how long a chain runs ("budget forcing", as in s1):

- **budget** (``max_think``): reasoning is generated with ``max_tokens`` = the budget left and
  ``stop=[close_tag]``. When the budget runs out mid-thought, the strategy closes the section
  itself (``</think>``), appends an answer cue (``"\\nThe answer is"``) through
  ``Request.assistant_prefix`` and generates the answer.
- **minimum** (``min_think``): when reasoning ends before ``min_think`` tokens, the end is
  suppressed: ``"Wait"`` is appended and the model continues, up to ``max_waits`` times.

Every segment is a request through ``ctx`` (so the trace holds each rendered prompt, and usage
counts every token: completion tokens = the reasoning segments + the answer). Without a budget or a
minimum it is one plain generate call whose reply is split. With n > 1, n chains run concurrently
and the plurality answer wins.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.context import Context
from tts.sampling import SamplingParams
from tts.strategies import vote
from tts.strategies.few_shot import FewShotProposer, FewShotProposerOptions
from tts.types import Candidate, Completion, Problem, Request, Result

__all__ = ["Thinking", "ThinkingOptions", "parse_thinking", "split_thinking"]


def split_thinking(text: str, reasoning: str | None = None, *, open_tag: str = "<think>",
                   close_tag: str = "</think>") -> tuple[str | None, str]:
    """``(reasoning, answer_text)`` of a reply.

    A server's separate ``reasoning`` wins. Otherwise the text before ``close_tag`` is reasoning
    (with or without its ``open_tag``: chat templates often put the opening tag in the prompt);
    an opened section that never closes is all reasoning and leaves an empty answer; a text with
    no tags is all answer.
    """
    if reasoning is not None:
        return reasoning, text.strip()
    close = text.find(close_tag)
    if close >= 0:
        head = text[:close]
        start = head.find(open_tag)
        if start >= 0:
            head = head[start + len(open_tag):]
        return head.strip(), text[close + len(close_tag):].strip()
    start = text.find(open_tag)
    if start >= 0:
        return text[start + len(open_tag):].strip(), text[:start].strip()
    return None, text.strip()


def parse_thinking(ctx: Context, completion: Completion, *, open_tag: str = "<think>",
                   close_tag: str = "</think>") -> Candidate:
    """A candidate whose answer is read from the answer part only; the reasoning goes in
    ``meta["reasoning"]``."""
    reasoning, answer_text = split_thinking(completion.text, completion.reasoning, open_tag=open_tag,
                                            close_tag=close_tag)
    answer = ctx.task.extract(answer_text) if answer_text else None
    key = ctx.canonical(answer) if answer is not None else None
    cand = Candidate(text=answer_text, answer=answer, key=key, completion=completion)
    if reasoning is not None:
        cand.meta["reasoning"] = reasoning
    return cand


class ThinkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=1, ge=1)
    """Chains; with n > 1 the plurality answer wins."""
    prompt: str = "cot"
    """Template: ``cot``/``direct``, a shipped name, a path or a literal (see tts.prompts)."""
    sampling: SamplingParams = SamplingParams(temperature=0.6, max_tokens=256)
    """Sampling of every segment; ``max_tokens`` bounds the answer after the reasoning."""
    max_think: int | None = Field(default=None, ge=1)
    """Thinking budget in tokens: reasoning is cut there and the answer forced. ``None``: no total
    cap (each reasoning segment is still capped by ``sampling.max_tokens``)."""
    min_think: int = Field(default=0, ge=0)
    """Reasoning that ends before this many tokens is extended with ``wait``."""
    max_waits: int = Field(default=2, ge=0)
    """Extensions at most (k)."""
    wait: str = "Wait"
    """What is appended to reasoning that ended too early."""
    answer_cue: str = "\nThe answer is"
    """Appended after the closed reasoning; the answer is generated from there."""
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    start_thinking: bool = True
    """Open the reasoning section in the prompt (``assistant_prefix`` starts with ``open_tag``)."""
    chat: bool = True

    @model_validator(mode="after")
    def _check(self) -> ThinkingOptions:
        if self.max_think is not None and self.min_think > self.max_think:
            raise ValueError(f"min_think must be <= max_think={self.max_think}, got {self.min_think}.")
        if self.n > 1 and self.sampling.greedy:
            raise ValueError(f"sampling.temperature must be > 0 when n > 1, got {self.sampling.temperature}.")
        return self


class Thinking:
    """Reasoning-model decoding with a thinking budget and budget forcing (module docstring)."""

    name: ClassVar[str] = "thinking"
    Options = ThinkingOptions

    def __init__(self, options: ThinkingOptions | None = None, **kw: object) -> None:
        self.options = options or ThinkingOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = FewShotProposer(
            FewShotProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat, shots=0))

    @property
    def controlled(self) -> bool:
        return self.options.max_think is not None or self.options.min_think > 0

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        base = (await self.proposer.requests(problem, ctx, 1))[0]
        if not self.controlled:
            completions = await ctx.generate(Request(base.prompt, o.sampling.with_n(o.n), base.priority,
                                                     base.assistant_prefix))
            candidates = [parse_thinking(ctx, c, open_tag=o.open_tag, close_tag=o.close_tag)
                          for c in completions]
        else:
            candidates = list(await asyncio.gather(*(self.chain(base, ctx) for _ in range(o.n))))
        groups = vote.group(candidates)
        winner = vote.plurality(groups)
        return Result.choose(problem, candidates, winner=groups[winner][0] if winner is not None else None,
                             votes={k: len(v) for k, v in groups.items()})

    async def chain(self, base: Request, ctx: Context) -> Candidate:
        """One chain: reasoning segments under the budget, then the forced answer."""
        o = self.options
        head = base.assistant_prefix + (o.open_tag + "\n" if o.start_thinking else "")
        reasoning, used, waits, cut = "", 0, 0, False
        while True:
            left = o.max_think - used if o.max_think is not None else o.sampling.max_tokens
            params = o.sampling.replace(n=1, max_tokens=left, stop=(*o.sampling.stop, o.close_tag))
            seg = (await ctx.generate(Request(base.prompt, params, base.priority, head + reasoning)))[0]
            reasoning += seg.text
            used += seg.token_count
            if seg.finish_reason == "length":
                cut = True
                break
            if used < o.min_think and waits < o.max_waits and (o.max_think is None or used < o.max_think):
                reasoning = reasoning.rstrip() + "\n" + o.wait
                waits += 1
                continue
            break
        prefix = head + reasoning.rstrip() + "\n" + o.close_tag + o.answer_cue
        answer = (await ctx.generate(Request(base.prompt, o.sampling.with_n(1), base.priority, prefix)))[0]
        text = o.answer_cue + answer.text
        extracted = ctx.task.extract(text)
        return Candidate(text=text.strip(), answer=extracted,
                         key=ctx.canonical(extracted) if extracted is not None else None, completion=answer,
                         meta={"reasoning": reasoning.strip(), "reasoning_tokens": used, "waits": waits,
                               "budget_cut": cut})
