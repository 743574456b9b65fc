"""Chain of thought: the task's step-by-step prompt, one completion, the answer parsed from it."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from tts.context import Context
from tts.sampling import SamplingParams
from tts.strategies.propose import PromptProposer, ProposerOptions
from tts.types import Problem, Result

__all__ = ["CoT", "CoTOptions"]


class CoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "cot"
    """``cot``, ``direct`` or a literal template with ``{question}`` and ``{instruction}``."""
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=256)
    """Greedy by default; any sampling parameters with n=1."""
    chat: bool = True


class CoT:
    name: ClassVar[str] = "cot"
    Options = CoTOptions

    def __init__(self, options: CoTOptions | None = None, **kw: object) -> None:
        self.options = options or CoTOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = PromptProposer(ProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat))

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, n=1)
        return Result.choose(problem, candidates, winner=0 if candidates[0].answer is not None else None)
