"""The strategy protocol: ``async solve(problem, ctx) -> Result``.

Strategies compose rather than inherit: a proposer produces candidates, verifiers score them, a
selector picks. Each strategy is one short file in ``strategies/`` (``tts.strategies``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tts.context import Context
from tts.types import Candidate, Problem, Result

__all__ = ["Proposer", "Strategy"]


@runtime_checkable
class Strategy(Protocol):
    """Solves one problem through ``ctx`` (which batches, counts and caches every engine call)."""

    name: str

    async def solve(self, problem: Problem, ctx: Context) -> Result: ...


@runtime_checkable
class Proposer(Protocol):
    """Produces ``n`` candidate answers for a problem."""

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]: ...
