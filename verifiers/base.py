"""The verifier extension point: one protocol with one required method, and a declared cost.

A verifier judges candidates of one problem. It may be a pure rule (math equivalence, exact match),
run programs, or call the engine itself (reward models, LLM judges) through ``ctx``. Studies count
what verification costs, so every verifier declares a :class:`VerifierCost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tts.types import Candidate, Problem, Score

if TYPE_CHECKING:  # tts.context imports tts.task, which imports this package: no runtime import
    from tts.context import Context

__all__ = ["Verifier", "VerifierCost", "VerifierKind", "cost_of"]

VerifierKind = Literal["rule", "symbolic", "program", "model", "llm"]
"""How a verifier judges: ``rule`` (string rules, microseconds), ``symbolic`` (a CAS under a time
limit), ``program`` (runs code in a sandbox), ``model`` (a reward model forward pass), ``llm``
(generation calls: judge or self-verification)."""


class VerifierCost(BaseModel):
    """What judging one candidate costs, declared up front so studies can account for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: VerifierKind = Field(description="How the verifier judges (see VerifierKind).")
    calls: int = Field(default=0, ge=0, description="Engine (generation or scoring) calls per candidate.")
    max_seconds: float | None = Field(
        default=None, ge=0, description="Seconds per candidate at most, where the verifier enforces a limit."
    )


@runtime_checkable
class Verifier(Protocol):
    """Scores candidates of one problem; returns one :class:`~tts.types.Score` per candidate, in order.

    Implementations also expose a ``cost: VerifierCost`` attribute (read it with :func:`cost_of`).
    """

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        ...


_UNKNOWN_COST = VerifierCost(kind="llm", calls=1)


def cost_of(verifier: object) -> VerifierCost:
    """The verifier's declared cost; a verifier that declares none is assumed to make one engine
    call per candidate, so studies never count an undeclared verifier as free."""
    cost = getattr(verifier, "cost", None)
    return cost if isinstance(cost, VerifierCost) else _UNKNOWN_COST
