"""Universal self-consistency (Chen et al., 2023): for free-text answers with no canonical form.

Sample n responses, then make one more generate call that lists them numbered ("Response 1: ...")
and asks the model which is most consistent with the others. The answer is the selected
response's answer.

Parsing the selection is lenient: the first "Response N" after "most consistent", else the first
"Response N" anywhere, else a reply that is only a number; N is 1-based and must be in range.
When nothing parses, the **first response** wins and ``Result.meta["parse_failed"]`` is True.
"""

from __future__ import annotations

import re
from typing import ClassVar

from tts.context import Context
from tts.errors import parse_options
from tts.prompts import resolve_prompt
from tts.sampling import Count, SamplingParams, TokenCount
from tts.strategies._proposer import SampledOptions, build_proposer, check_sampled
from tts.types import Candidate, Problem, Result

__all__ = ["UniversalSelfConsistency", "UniversalSelfConsistencyOptions", "format_responses", "parse_selection"]

_AFTER_PHRASE = re.compile(r"most\s+consistent[^\d]{0,40}?(?:response|answer|option)?\s*#?\s*\[?(\d+)", re.I)
_RESPONSE_N = re.compile(r"response\s*#?\s*\[?(\d+)", re.I)
_ONLY_NUMBER = re.compile(r"^\W*(\d+)\W*$")


def parse_selection(text: str, n: int) -> int | None:
    """The 0-based index a selection reply names (1-based "Response N" in the text), or None."""
    for pattern in (_AFTER_PHRASE, _RESPONSE_N):
        for m in pattern.finditer(text):
            k = int(m.group(1))
            if 1 <= k <= n:
                return k - 1
    only = _ONLY_NUMBER.match(text.strip())
    if only and 1 <= int(only.group(1)) <= n:
        return int(only.group(1)) - 1
    return None


def format_responses(candidates: list[Candidate], max_chars: int | None = None) -> str:
    """The responses as numbered blocks, "Response 1: ...", each cut to ``max_chars``."""
    blocks = []
    for i, c in enumerate(candidates, 1):
        text = c.text.strip()
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars] + " ..."
        blocks.append(f"Response {i}: {text}")
    return "\n\n".join(blocks)


class UniversalSelfConsistencyOptions(SampledOptions):
    n: Count = 8
    """Sampled responses (from ``proposer``)."""
    select_prompt: str = "usc_select"
    """Template of the selection call; needs ``{question}`` and ``{responses}``."""
    select_sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=64)
    max_chars: TokenCount | None = 2000
    """Each response is cut to this many characters in the selection prompt (``None``: whole)."""


class UniversalSelfConsistency:
    """n samples, then the model selects the most consistent one (module docstring)."""

    name: ClassVar[str] = "universal_self_consistency"
    Options = UniversalSelfConsistencyOptions

    def __init__(self, options: UniversalSelfConsistencyOptions | None = None, **kw: object) -> None:
        where = f"strategy {self.name}"
        self.options = o = options or parse_options(UniversalSelfConsistencyOptions, kw, where=where)
        self.proposer = build_proposer(o.proposer, where)
        check_sampled(self.proposer, o.n, where)
        self.selector = resolve_prompt(o.select_prompt).require("question", "responses")

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        candidates = await self.proposer.propose(problem, ctx, n=o.n)
        if len(candidates) == 1:
            return Result.choose(problem, candidates, winner=0, selection=None, parse_failed=False)
        request = self.selector.request(
            o.select_sampling,
            chat=self.proposer.options.chat,
            question=problem.question,
            responses=format_responses(candidates, o.max_chars),
            instruction=ctx.task.instruction,
        )
        reply = (await ctx.generate(request))[0].text
        index = parse_selection(reply, len(candidates))
        return Result.choose(
            problem, candidates, winner=index if index is not None else 0, selection=reply, parse_failed=index is None
        )
