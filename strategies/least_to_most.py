"""Least-to-most prompting (Zhou et al., 2022): decompose, then solve the subquestions in order.

1. **Decompose**: one call (template ``least_to_most_decompose``) lists simpler subquestions;
   numbered (``1.``, ``2)``) or bulleted (``-``, ``*``) lines of the reply are read as
   subquestions, at most ``max_subquestions``.
2. **Solve sequentially**: one call per subquestion (template ``least_to_most_solve``) that shows
   the problem, the earlier subquestions with their answers (``{previous}``), and asks the next.
   The original question is always the last step, so the final answer answers it.

A reply with no parsable subquestion degrades to solving the question directly (one step).
The result has one candidate, the final step's, with every step's reply in ``Candidate.steps``;
``Result.meta`` has the subquestions.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from tts.context import Context
from tts.errors import parse_options
from tts.prompts import resolve_prompt
from tts.sampling import Count, SamplingParams
from tts.strategies._select import drop_non_answer, task_placeholders
from tts.types import Problem, Result

__all__ = ["LeastToMost", "LeastToMostOptions", "parse_subquestions"]

_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|(?:sub-?question|question|step)\s*\d+\s*[.:)])\s*(.+?)\s*$", re.I | re.M)


def parse_subquestions(text: str, limit: int | None = None) -> list[str]:
    """Numbered or bulleted lines of a decomposition reply, in order, without duplicates."""
    out: list[str] = []
    for m in _ITEM.finditer(text):
        item = m.group(1).strip()
        if item and item not in out:
            out.append(item)
    return out[:limit] if limit is not None else out


class LeastToMostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decompose_prompt: str = "least_to_most_decompose"
    """Template of the decomposition call (``{question}``)."""
    solve_prompt: str = "least_to_most_solve"
    """Template of each step: ``{question}``, ``{previous}``, ``{subquestion}``, ``{instruction}``."""
    max_subquestions: Count = 5
    """Subquestions kept from the decomposition (the original question comes after them)."""
    decompose_sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=192)
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=256)
    """Sampling of each step."""
    chat: bool = True


class LeastToMost:
    """Decompose into subquestions, then solve them in order feeding earlier answers forward."""

    name: ClassVar[str] = "least_to_most"
    Options = LeastToMostOptions

    def __init__(self, options: LeastToMostOptions | None = None, **kw: object) -> None:
        self.options = options or parse_options(LeastToMostOptions, kw, where=f"strategy {self.name}")
        o = self.options
        self.decomposer = resolve_prompt(o.decompose_prompt).require("question")
        self.solver = resolve_prompt(o.solve_prompt).require("subquestion")

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        task = ctx.task
        reply = (
            await ctx.generate(
                self.decomposer.request(
                    o.decompose_sampling, chat=o.chat, question=problem.question, instruction=task.instruction
                )
            )
        )[0]
        subquestions = [
            q for q in parse_subquestions(reply.text, o.max_subquestions) if q.strip() != problem.question.strip()
        ]
        steps = [*subquestions, problem.question]
        previous = ""
        completions = []
        for sub in steps:
            request = self.solver.request(
                o.sampling,
                chat=o.chat,
                prefix=task.assistant_prefix,
                question=problem.question,
                previous=previous,
                subquestion=sub,
                instruction=task.instruction,
            )
            completion = (await ctx.generate(request))[0]
            completions.append(completion)
            previous += f"Q: {sub}\nA: {completion.text.strip()}\n\n"
        final = drop_non_answer(ctx.parse(completions[-1]), task_placeholders(ctx.task))
        texts = [c.text.strip() for c in completions]
        final.steps = texts
        return Result.choose(
            problem,
            [final],
            winner=0 if final.answer is not None else None,
            subquestions=subquestions,
            decomposition=reply.text,
        )
