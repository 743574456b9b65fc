"""Program of thought: the model writes a short Python program; the sandbox runs it; the last line
it prints is the answer (the ``program_of_thought`` proposer, :mod:`tts.strategies._program`).

With n > 1 this is self-consistency over executed outputs: the n programs run concurrently and
their outputs vote; a program that fails (no code, an error exit, a time-out, no output) has no
answer and does not vote. It is ``self_consistency`` with this proposer, greedy and n=1 by default,
so weights and early stopping apply too; ``Result.meta["failed"]`` counts failed programs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tts.context import Context
from tts.sampling import Count
from tts.strategies._program import ProgramRunner, extract_code, output_answer
from tts.strategies._proposer import ProposerSpec, proposer
from tts.strategies.self_consistency import SelfConsistency, SelfConsistencyOptions
from tts.types import Problem, Result

__all__ = ["ProgramOfThought", "ProgramOfThoughtOptions", "extract_code", "output_answer"]


class ProgramOfThoughtOptions(SelfConsistencyOptions):
    n: Count = 1
    """Programs; with n > 1 their executed outputs vote (failed programs do not)."""
    proposer: ProposerSpec = proposer("program_of_thought", sampling={"temperature": 0, "max_tokens": 512})
    """Greedy by default; set ``sampling.temperature`` > 0 for n > 1 (``timeout``, ``max_concurrency``)."""


class ProgramOfThought(SelfConsistency):
    """Programs written by the model, executed in the sandbox, outputs voted (module docstring).

    ``runner`` replaces the sandbox call (tests)."""

    name: ClassVar[str] = "program_of_thought"
    Options: ClassVar[type[SelfConsistencyOptions]] = ProgramOfThoughtOptions

    def __init__(
        self, options: ProgramOfThoughtOptions | None = None, *, runner: ProgramRunner | None = None, **kw: Any
    ) -> None:
        super().__init__(options, **kw)
        if runner is not None:
            self.proposer.runner = runner

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        result = await super().solve(problem, ctx)
        result.meta["failed"] = sum(c.answer is None for c in result.candidates)
        return result
