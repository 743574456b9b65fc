"""Chain of thought: the task's step-by-step prompt, one completion, the answer parsed from it."""

from __future__ import annotations

from typing import ClassVar

from tts.context import Context
from tts.errors import parse_options
from tts.strategies._proposer import ProposerSpec, SampledOptions, build_proposer, proposer
from tts.types import Problem, Result

__all__ = ["CoT", "CoTOptions"]


class CoTOptions(SampledOptions):
    proposer: ProposerSpec = proposer("few_shot", prompt="cot", sampling={"temperature": 0, "max_tokens": 256})
    """The proposer; greedy by default, any sampling parameters with n=1."""


class CoT:
    name: ClassVar[str] = "cot"
    Options: ClassVar[type[CoTOptions]] = CoTOptions

    def __init__(self, options: CoTOptions | None = None, **kw: object) -> None:
        where = f"strategy {self.name}"
        self.options = options or parse_options(self.Options, kw, where=where)
        self.proposer = build_proposer(self.options.proposer, where)

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, 1)
        return Result.choose(problem, candidates, winner=0 if candidates[0].answer is not None else None)
