"""The thinking proposer: ``<think>`` sections parsed apart from the answer, and a thinking budget.

:func:`split_thinking` separates reasoning from the answer (a server's ``Completion.reasoning``
when it filled one, else the text's ``<think>...</think>`` section). Answers are read from the
answer part only, so numbers in the reasoning never count as the answer.

Budget forcing (as in s1) controls how long a chain runs:

- **budget** (``max_think``): reasoning is generated with ``max_tokens`` = the budget left and
  ``stop=[close_tag]``. When the budget runs out mid-thought, the proposer closes the section
  itself (``</think>``), appends an answer cue (``"\\nThe answer is"``) through
  ``Request.assistant_prefix`` and generates the answer.
- **minimum** (``min_think``): when reasoning ends before ``min_think`` tokens, the end is
  suppressed: ``"Wait"`` is appended and the model continues, up to ``max_waits`` times.

Every segment is a request through ``ctx`` (completion tokens = the reasoning segments + the
answer). Without a budget or a minimum, n samples are one plain request whose replies are split.
Every request starts with the task's assistant prefix, and replies are split with it in front.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, ClassVar

from pydantic import Field, model_validator

from tts.context import Context
from tts.sampling import MAX_TOKENS, CountOrZero, SamplingParams, TokenCount
from tts.strategies._proposer import Draw, Drawer, FewShotProposer, FewShotProposerOptions, TaskDraw
from tts.strategies._select import drop_non_answer, task_placeholders
from tts.types import Candidate, Completion, Problem, Request

__all__ = ["ThinkingProposer", "ThinkingProposerOptions", "parse_thinking", "split_thinking"]


def split_thinking(
    text: str, reasoning: str | None = None, *, open_tag: str = "<think>", close_tag: str = "</think>"
) -> tuple[str | None, str]:
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
            head = head[start + len(open_tag) :]
        return head.strip(), text[close + len(close_tag) :].strip()
    start = text.find(open_tag)
    if start >= 0:
        return text[start + len(open_tag) :].strip(), text[:start].strip()
    return None, text.strip()


def parse_thinking(
    ctx: Context, completion: Completion, *, prefix: str = "", open_tag: str = "<think>", close_tag: str = "</think>"
) -> Candidate:
    """A candidate whose answer is read from the answer part only (the reply with ``prefix``, the
    request's assistant prefix, in front); the reasoning goes in ``meta["reasoning"]``."""
    reasoning, answer_text = split_thinking(
        prefix + completion.text, completion.reasoning, open_tag=open_tag, close_tag=close_tag
    )
    answer = ctx.task.extract(answer_text) if answer_text else None
    key = ctx.canonical(answer) if answer is not None else None
    cand = Candidate(text=answer_text, answer=answer, key=key, completion=completion)
    if reasoning is not None:
        cand.meta["reasoning"] = reasoning
    return drop_non_answer(cand, task_placeholders(ctx.task))


class ThinkingProposerOptions(FewShotProposerOptions):
    sampling: SamplingParams = SamplingParams(temperature=0.6, max_tokens=256)
    """Sampling of every segment; ``max_tokens`` bounds the answer after the reasoning."""
    max_think: TokenCount | None = None
    """Thinking budget in tokens: reasoning is cut there and the answer forced. ``None``: no total
    cap (each reasoning segment is still capped by ``sampling.max_tokens``)."""
    min_think: int = Field(default=0, ge=0, le=MAX_TOKENS)
    """Reasoning that ends before this many tokens is extended with ``wait``."""
    max_waits: CountOrZero = 2
    """Extensions at most (k)."""
    wait: str = "Wait"
    """What is appended to reasoning that ended too early."""
    answer_cue: str = "\nThe answer is"
    """Appended after the closed reasoning; the answer is generated from there."""
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    start_thinking: bool = True
    """Open the reasoning section in the prompt of a budgeted chain (its prefix ends with ``open_tag``)."""

    @model_validator(mode="after")
    def _check(self) -> ThinkingProposerOptions:
        if self.max_think is not None and self.min_think > self.max_think:
            raise ValueError(f"min_think must be <= max_think={self.max_think}, got {self.min_think}.")
        return self


class ThinkingProposer(FewShotProposer):
    """Reasoning-model sampling with a thinking budget and budget forcing (module docstring)."""

    name: ClassVar[str] = "thinking"
    Options: ClassVar[type[FewShotProposerOptions]] = ThinkingProposerOptions
    options: ThinkingProposerOptions

    @property
    def controlled(self) -> bool:
        return self.options.max_think is not None or self.options.min_think > 0

    async def finish(self, ctx: Context, request: Request, completions: list[Completion]) -> list[Candidate]:
        o = self.options
        return [
            parse_thinking(ctx, c, prefix=request.assistant_prefix, open_tag=o.open_tag, close_tag=o.close_tag)
            for c in completions
        ]

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]:
        return await (await self.drawer(problem, ctx))(n, 0).result()

    async def drawer(self, problem: Problem, ctx: Context) -> Drawer:
        if not self.controlled:
            return await super().drawer(problem, ctx)
        base = (await self.requests(problem, ctx, 1))[0]

        def draw(size: int, priority: int) -> Draw:
            request = dataclasses.replace(base, priority=base.priority + priority)

            async def chains() -> list[Candidate]:
                return list(await asyncio.gather(*(self.chain(request, ctx) for _ in range(size))))

            return TaskDraw(chains())

        return draw

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
        meta: dict[str, Any] = {
            "reasoning": reasoning.strip(),
            "reasoning_tokens": used,
            "waits": waits,
            "budget_cut": cut,
        }
        candidate = Candidate(
            text=text.strip(),
            answer=extracted,
            key=ctx.canonical(extracted) if extracted is not None else None,
            completion=answer,
            meta=meta,
        )
        return drop_non_answer(candidate, task_placeholders(ctx.task))
