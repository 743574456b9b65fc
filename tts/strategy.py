"""The strategy protocol: ``async solve(problem, ctx) -> Result``.

Strategies compose rather than inherit: a proposer produces candidates, verifiers score them, a
selector picks (:mod:`tts.strategies._select`). Each strategy is one short file in
``strategies/`` (``tts.strategies``); the shared parts are its private modules (``_proposer``,
``_select``, ``_stop``, ``_scoring``).

A proposer is a component (``proposer: {name: few_shot, ...}``; registered like any other): the
built-ins (``few_shot``, ``program_of_thought``, ``thinking``) also give ``drawer(problem, ctx)``
for early stopping and a ``greedy`` property for the "temperature > 0 when n > 1" rule, see
:mod:`tts.strategies._proposer`.
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
    """Produces ``n`` candidate answers for a problem (the one required method)."""

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]: ...
