"""Ensemble: several strategies (or one strategy on several backends) on the same problem, combined.

Members run concurrently. A member runs on the ensemble's own context (its scheduler and backend)
unless it names another backend: ``backend`` is a key of the ``backends`` mapping given to the
constructor (name -> :class:`~tts.scheduler.Scheduler` or backend), so YAML pipelines can say
``backend: big`` and the recipe that builds the ensemble supplies the engine. Every member's usage
and trace events are added to the ensemble's (events noted ``member NAME``).

Combination (``combine``):

- ``pool``: multi-candidate voting: every answered candidate of every member votes with its
  member's weight; ties go to the answer sampled first (members in order).
- ``vote``: each member's chosen answer is one vote of its member's weight.
- ``rrf``: reciprocal-rank fusion (k=60 by default) of the members' rankings of answers: a
  member ranks its own answer first, then the rest by its vote counts (ties by first appearance).

A member that fails is recorded in ``meta["errors"]`` and left out; if all fail, the first error
is raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.backends.base import Backend
from tts.context import Context
from tts.errors import ConfigError
from tts.scheduler import Scheduler
from tts.strategies import select, vote
from tts.strategy import Strategy
from tts.types import Candidate, Problem, Result

__all__ = ["Ensemble", "EnsembleOptions", "Member", "MemberSpec"]


class MemberSpec(BaseModel):
    """A member by registered strategy name (for pipeline files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str
    options: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0)
    backend: str | None = None
    """Key of the constructor's ``backends`` mapping; None: the ensemble's own backend."""
    name: str | None = None


class EnsembleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    members: tuple[MemberSpec, ...] = ()
    """Members by registered name. The constructor's ``members`` also takes strategy objects and
    :class:`Member` wrappers (in order; order breaks ties)."""
    combine: Literal["pool", "vote", "rrf"] = "pool"
    rrf_k: float = Field(default=60.0, gt=0)


@dataclass
class Member:
    """A member strategy object, its weight, and where it runs (a ``backends`` key, a scheduler or a
    backend; None: the ensemble's own)."""

    strategy: Strategy
    weight: float = 1.0
    backend: str | Scheduler | Backend | None = None
    name: str | None = None


def _build(spec: MemberSpec) -> Member:
    from tts.registry import build_strategy

    return Member(build_strategy(spec.strategy, **spec.options), spec.weight, spec.backend, spec.name)


class Ensemble:
    """Several members on the same problem; their answers combined by pooled vote, vote or RRF."""

    name: ClassVar[str] = "ensemble"
    Options = EnsembleOptions

    def __init__(self, options: EnsembleOptions | None = None, *,
                 members: Sequence[Strategy | Member | MemberSpec | dict[str, Any]] | None = None,
                 backends: Mapping[str, Scheduler | Backend] | None = None, **kw: object) -> None:
        given: list[Member] = []
        specs: list[MemberSpec] = []
        for m in members or ():
            if isinstance(m, dict | MemberSpec):
                specs.append(MemberSpec.model_validate(m))
                given.append(_build(specs[-1]))
            else:
                given.append(m if isinstance(m, Member) else Member(m))
        if options is None:
            self.options = EnsembleOptions(members=tuple(specs), **kw)  # type: ignore[arg-type]
        else:
            self.options = options
            given += [_build(s) for s in options.members]
        if not given:
            raise ConfigError("members must name at least one strategy: set members=[{strategy: ...}] or "
                              "pass strategy objects to Ensemble(members=[...]).")
        backends = dict(backends or {})
        self.members: list[tuple[str, Strategy, float, Scheduler | None]] = []
        for i, m in enumerate(given):
            where = m.backend
            if isinstance(where, str):
                if where not in backends:
                    raise ConfigError(f"members[{i}].backend must be one of {sorted(backends)}, got "
                                      f"{where!r}; pass Ensemble(backends={{name: scheduler}}).")
                where = backends[where]
            scheduler = where if isinstance(where, Scheduler) or where is None else Scheduler(where)
            label = m.name or f"{i}:{getattr(m.strategy, 'name', type(m.strategy).__name__)}"
            self.members.append((label, m.strategy, m.weight, scheduler))

    def _context(self, ctx: Context, problem: Problem, scheduler: Scheduler | None) -> Context:
        if scheduler is None:
            return ctx.child(problem)
        return Context(scheduler, ctx.task, problem=problem, seed=ctx.seed, verifier=ctx.verifier,
                       extras=ctx.extras)

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        contexts = [self._context(ctx, problem, s) for _, _, _, s in self.members]
        runs = [m[1].solve(problem, c) for m, c in zip(self.members, contexts, strict=True)]
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        candidates: list[Candidate] = []
        weights: list[float] = []
        rankings: list[tuple[list[str], float]] = []  # each member's ranking of answer keys, its weight
        chosen: list[tuple[str, float, int]] = []  # (key, weight, candidate index) of each member's answer
        errors: dict[str, str] = {}
        answers: dict[str, str | None] = {}
        for (label, _, weight, _), mctx, out in zip(self.members, contexts, outcomes, strict=True):
            ctx.usage.add(mctx.usage)
            for event in mctx.trace.events:
                event.note = f"member {label}" + (f"; {event.note}" if event.note else "")
                ctx.trace.add(event)
            if isinstance(out, BaseException):
                if not isinstance(out, Exception):
                    raise out
                errors[label] = f"{type(out).__name__}: {out}"
                continue
            offset = len(candidates)
            for c in out.candidates:
                c.meta["member"] = label
            candidates.extend(out.candidates)
            weights.extend([weight] * len(out.candidates))
            answers[label] = out.answer
            key = out.candidates[out.winner].key if out.winner is not None else None
            rankings.append((select.rank_keys(out.candidates, first=key), weight))
            if key:
                chosen.append((key, weight, offset + out.winner))  # type: ignore[operator]
        if not answers:
            raise next(o for o in outcomes if isinstance(o, Exception))
        totals, winner = self._combine(candidates, weights, rankings, chosen)
        return Result.choose(problem, candidates, winner=winner, combine=self.options.combine, totals=totals,
                             members=answers, **({"errors": errors} if errors else {}))

    def _combine(self, candidates: list[Candidate], weights: list[float],
                 rankings: list[tuple[list[str], float]],
                 chosen: list[tuple[str, float, int]]) -> tuple[dict[str, float], int | None]:
        how = self.options.combine
        if how == "pool":
            groups = vote.group(candidates)
            totals = vote.vote_counts(groups, weights)
        elif how == "vote":
            totals = {}
            for key, weight, _ in chosen:
                totals[key] = totals.get(key, 0.0) + weight
        else:
            totals = select.rrf([r for r, _ in rankings], self.options.rrf_k, [w for _, w in rankings])
        best = max(totals, key=totals.__getitem__) if totals else None  # max keeps the first of equals
        if best is None:
            return totals, None
        for key, _, index in chosen:  # a member's own pick of the winning answer represents it
            if key == best:
                return totals, index
        return totals, next(i for i, c in enumerate(candidates) if c.key == best)
