"""Self-consistency: majority vote over n sampled chains of an inner proposer."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from tts.context import Context
from tts.sampling import SamplingParams
from tts.strategies import vote
from tts.strategies.propose import PromptProposer, ProposerOptions
from tts.types import Problem, Result

__all__ = ["SelfConsistency", "SelfConsistencyOptions"]


class SelfConsistencyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=8, ge=1)
    """Number of sampled chains."""
    prompt: str = "cot"
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=256)
    chat: bool = True


class SelfConsistency:
    """Majority vote over canonical answer keys; ties go to the answer sampled first."""

    name: ClassVar[str] = "self_consistency"
    Options = SelfConsistencyOptions

    def __init__(self, options: SelfConsistencyOptions | None = None, **kw: object) -> None:
        self.options = options or SelfConsistencyOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = PromptProposer(ProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat))

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, n=self.options.n)
        groups = vote.group(candidates)
        winner = vote.plurality(groups)
        return Result.choose(problem, candidates, winner=groups[winner][0] if winner is not None else None,
                             votes={k: len(v) for k, v in groups.items()})
