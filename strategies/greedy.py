"""Greedy: one deterministic answer to the task's direct prompt. The baseline every study compares with."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from tts.context import Context
from tts.sampling import SamplingParams
from tts.strategies.propose import PromptProposer, ProposerOptions
from tts.types import Problem, Result

__all__ = ["Greedy", "GreedyOptions"]


class GreedyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "direct"
    """``direct``, ``cot`` or a literal template."""
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=256)
    chat: bool = True

    @field_validator("sampling")
    @classmethod
    def _greedy(cls, v: SamplingParams) -> SamplingParams:
        if not v.greedy:
            raise ValueError(f"temperature must be 0 for greedy, got {v.temperature}.")
        return v


class Greedy:
    name: ClassVar[str] = "greedy"
    Options = GreedyOptions

    def __init__(self, options: GreedyOptions | None = None, **kw: object) -> None:
        self.options = options or GreedyOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = PromptProposer(ProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat))

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, n=1)
        return Result.choose(problem, candidates, winner=0 if candidates[0].answer is not None else None)
