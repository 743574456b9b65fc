"""Best-of-N: sample n chains of an inner proposer, score them with verifiers, keep the best.

Selection (``select``; rules in :mod:`tts.strategies._select`):

- ``best``: the highest score; ties on the best score go to the earliest candidate (the one score
  tie rule, which the study's best-of-n curves follow too).
- ``weighted``: each answer totals its candidates' scores; the highest total wins.
- ``majority``: plain vote (no verifier is called).

A candidate *fails* when it has no answer, no score or a score with ``passed=False``. When every
candidate fails (all wrong by an exact verifier, say), ``fallback="majority"`` votes over the
answered candidates and ``fallback="none"`` answers nothing.

Verifiers are components, ``verifiers: [{name: math}, {name: outcome_reward, weight: 0.5, ...}]``;
several are combined by a weighted sum (:mod:`tts.strategies._scoring`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from tts.context import Context
from tts.errors import parse_options
from tts.sampling import Count
from tts.strategies import _select
from tts.strategies._proposer import SampledOptions, build_proposer, check_sampled
from tts.strategies._scoring import VerifierSpec, Weighted, build_verifiers, resolve_verifiers, score_candidates
from tts.strategies._select import Fallback
from tts.types import Problem, Result

__all__ = ["BestOfN", "BestOfNOptions"]


class BestOfNOptions(SampledOptions):
    n: Count = 8
    """Number of sampled chains."""
    select: Literal["best", "weighted", "majority"] = "best"
    verifiers: tuple[VerifierSpec, ...] = ()
    """Verifier components (names or ``{name, weight, ...options}``); empty: the verifier objects
    given to the constructor (``scorers=[v, (v2, 0.5)]``), else the context's verifier."""
    fallback: Fallback = "majority"
    """When every candidate fails: ``majority`` vote over answered candidates, or ``none`` (no answer)."""


class BestOfN:
    """n sampled chains, scored by verifiers; the best one (or the best-scored answer) wins."""

    name: ClassVar[str] = "best_of_n"
    Options = BestOfNOptions

    def __init__(
        self, options: BestOfNOptions | None = None, *, scorers: Sequence[Any | Weighted] | None = None, **kw: object
    ) -> None:
        where = f"strategy {self.name}"
        self.options = o = options or parse_options(BestOfNOptions, kw, where=where)
        self.scorers = list(scorers or [])
        self.verifiers = build_verifiers(o.verifiers)
        self.proposer = build_proposer(o.proposer, where)
        check_sampled(self.proposer, o.n, where)

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        candidates = await self.proposer.propose(problem, ctx, o.n)
        if o.select == "majority":
            return Result.choose(problem, candidates, winner=_select.majority(candidates), select=o.select)
        found = resolve_verifiers(self.verifiers, self.scorers, ctx, "best_of_n")
        await score_candidates(candidates, ctx, found)
        pick = _select.best_score if o.select == "best" else _select.score_vote
        failed = sum(1 for c in candidates if _select.usable_score(c) is None)
        return Result.choose(problem, candidates, winner=pick(candidates, o.fallback), select=o.select, failed=failed)
