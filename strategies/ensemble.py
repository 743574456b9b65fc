"""Ensemble: several strategies on the same problem, combined.

Members run concurrently, each in a child of the problem's context (the problem's backend, limits
and seeding; a member's usage is charged to the ensemble's as it happens). A member is a strategy
component ``{name, weight, label, ...options}`` (``weight``: its vote; ``label``: its name in the
result), or, in Python, a strategy object or a :class:`Member`. Every member's trace events are
noted ``member LABEL``.

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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts.config.components import StrategySpec, build_component
from tts.context import Context
from tts.errors import ConfigError, parse_options
from tts.strategies import _select
from tts.strategy import Strategy
from tts.types import Candidate, Problem, Result, Trace

__all__ = ["Ensemble", "EnsembleOptions", "Member", "MemberSpec"]


class MemberSpec(StrategySpec):
    """A member: a strategy component, with its weight and label (not options of the strategy)."""

    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    label: str | None = None
    """The member's name in ``meta`` (default ``INDEX:STRATEGY``)."""


class EnsembleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    members: tuple[MemberSpec, ...] = ()
    """Member strategies ``{name, weight, label, ...options}``. The constructor's ``members`` also
    takes strategy objects and :class:`Member` wrappers (objects first, in order; order breaks ties)."""
    combine: Literal["pool", "vote", "rrf"] = "pool"
    rrf_k: float = Field(default=60.0, gt=0)

    @field_validator("members", mode="before")
    @classmethod
    def _old_shape(cls, value: Any) -> Any:
        for i, m in enumerate(value if isinstance(value, (list, tuple)) else ()):
            if isinstance(m, Mapping) and "strategy" in m:
                raise ValueError(
                    f"members[{i}].strategy is the old shape; write the member as one component: "
                    f"{{name: {m['strategy']}, weight: 1.0, ...options}}"
                )
            if isinstance(m, Mapping) and "backend" in m:
                raise ValueError(
                    f"members[{i}].backend is not supported: members run on the pipeline's "
                    "backend; run one pipeline per backend."
                )
        return value


@dataclass
class Member:
    """A member strategy object, its weight and label."""

    strategy: Strategy
    weight: float = 1.0
    name: str | None = None


class Ensemble:
    """Several members on the same problem; their answers combined by pooled vote, vote or RRF."""

    name: ClassVar[str] = "ensemble"
    Options = EnsembleOptions

    def __init__(
        self,
        options: EnsembleOptions | None = None,
        *,
        members: Sequence[Strategy | Member | MemberSpec | Mapping[str, Any]] | None = None,
        **kw: Any,
    ) -> None:
        where = f"strategy {self.name}"
        objects = [m for m in members or () if not isinstance(m, (Mapping, MemberSpec))]
        specs = [m for m in members or () if isinstance(m, (Mapping, MemberSpec))]
        if specs:
            kw["members"] = [*specs, *kw.get("members", ())]
        self.options = options or parse_options(EnsembleOptions, kw, where=where)
        built = [m if isinstance(m, Member) else Member(m) for m in objects]
        built += [Member(build_component(s, "strategy"), s.weight, s.label) for s in self.options.members]
        if not built:
            raise ConfigError(
                f"{where}: members must name at least one strategy: set members: [{{name: ...}}] "
                "or pass strategy objects to Ensemble(members=[...])."
            )
        self.members: list[tuple[str, Strategy, float]] = [
            (m.name or f"{i}:{getattr(m.strategy, 'name', type(m.strategy).__name__)}", m.strategy, m.weight)
            for i, m in enumerate(built)
        ]

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        contexts = [ctx.child(problem) for _ in self.members]
        for mctx in contexts:
            mctx.trace = Trace()  # the member's own events, noted and copied below
        runs = [m[1].solve(problem, c) for m, c in zip(self.members, contexts, strict=True)]
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        candidates: list[Candidate] = []
        weights: list[float] = []
        rankings: list[tuple[list[str], float]] = []  # each member's ranking of answer keys, its weight
        chosen: list[tuple[str, float, int]] = []  # (key, weight, candidate index) of each member's answer
        errors: dict[str, str] = {}
        answers: dict[str, str | None] = {}
        for (label, _, weight), mctx, out in zip(self.members, contexts, outcomes, strict=True):
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
            rankings.append((_select.rank_keys(out.candidates, first=key), weight))
            if key:
                chosen.append((key, weight, offset + out.winner))  # type: ignore[operator]
        if not answers:
            raise next(o for o in outcomes if isinstance(o, Exception))
        totals, winner = self._combine(candidates, weights, rankings, chosen)
        return Result.choose(
            problem,
            candidates,
            winner=winner,
            combine=self.options.combine,
            totals=totals,
            members=answers,
            **({"errors": errors} if errors else {}),
        )

    def _combine(
        self,
        candidates: list[Candidate],
        weights: list[float],
        rankings: list[tuple[list[str], float]],
        chosen: list[tuple[str, float, int]],
    ) -> tuple[dict[str, float], int | None]:
        how = self.options.combine
        if how == "pool":
            groups = _select.group(candidates)
            totals = _select.vote_counts(groups, weights)
        elif how == "vote":
            totals = {}
            for key, weight, _ in chosen:
                totals[key] = totals.get(key, 0.0) + weight
        else:
            totals = _select.rrf([r for r, _ in rankings], self.options.rrf_k, [w for _, w in rankings])
        best = max(totals, key=totals.__getitem__) if totals else None  # max keeps the first of equals
        if best is None:
            return totals, None
        for key, _, index in chosen:  # a member's own pick of the winning answer represents it
            if key == best:
                return totals, index
        return totals, next(i for i, c in enumerate(candidates) if c.key == best)
