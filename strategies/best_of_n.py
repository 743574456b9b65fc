"""Best-of-N: sample n chains, score them with one or several verifiers, keep the best.

Selection (``select``; rules in :mod:`tts.strategies.select`):

- ``best``: the highest score; ties on the best score go to the majority answer among the tied,
  then to the earliest candidate.
- ``weighted``: each answer totals its candidates' scores; the highest total wins.
- ``majority``: plain vote (no verifier is called).

A candidate *fails* when it has no answer, no score or a score with ``passed=False``. When every
candidate fails (all wrong by an exact verifier, say), ``fallback="majority"`` votes over the
answered candidates and ``fallback="none"`` answers nothing.

Several verifiers are combined by a weighted sum of their scores (appended to each candidate as one
``weighted_sum`` score after the verifiers' own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.context import Context
from tts.errors import ConfigError
from tts.sampling import SamplingParams
from tts.strategies import select
from tts.strategies.propose import PromptProposer, ProposerOptions
from tts.strategies.select import Fallback
from tts.types import Candidate, Problem, Result, Score

__all__ = ["BestOfN", "BestOfNOptions", "VerifierRef", "score_candidates"]

Weighted = tuple[Any, float]


class VerifierRef(BaseModel):
    """A registered verifier by name, its constructor options and its weight in the sum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def build(self) -> Any:
        from tts.registry import REGISTRY

        return REGISTRY.get("verifier", self.name)(**self.options)


class BestOfNOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=8, ge=1)
    """Number of sampled chains."""
    prompt: str = "cot"
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=256)
    chat: bool = True
    select: Literal["best", "weighted", "majority"] = "best"
    verifiers: tuple[VerifierRef, ...] = ()
    """Registered verifiers (names or ``{name, weight, options}``); empty: the verifier objects given
    to the constructor (``scorers=[v, (v2, 0.5)]``), else the context's verifier."""
    fallback: Fallback = "majority"
    """When every candidate fails: ``majority`` vote over answered candidates, or ``none`` (no answer)."""


def resolve_verifiers(refs: Sequence[VerifierRef], given: Sequence[Any | Weighted] | None, ctx: Context,
                      who: str) -> list[Weighted]:
    """(verifier, weight) pairs: from ``refs`` (built by name), else ``given`` (objects or pairs), else
    ``ctx.verifier``."""
    if refs:
        return [(r.build(), r.weight) for r in refs]
    if given:
        return [v if isinstance(v, tuple) else (v, 1.0) for v in given]
    if ctx.verifier is not None:
        return [(ctx.verifier, 1.0)]
    raise ConfigError(f"{who} needs a verifier: set verifiers=['math'], pass scorers=[obj] to the "
                      "constructor or give the runner a verifier.")


async def score_candidates(candidates: list[Candidate], ctx: Context, verifiers: Sequence[Weighted]) -> None:
    """Append each verifier's score to every candidate (in order, so traces are deterministic), then
    their weighted sum when there are several; ``candidate.score`` is the combined value."""
    per: list[list[Score]] = []
    for verifier, _ in verifiers:
        per.append(await ctx.verify(candidates, verifier))
    if len(verifiers) > 1:
        for c, s in zip(candidates, select.combine_scores(per, [w for _, w in verifiers]), strict=True):
            c.scores.append(s)


class BestOfN:
    """n sampled chains, scored by verifiers; the best one (or the best-scored answer) wins."""

    name: ClassVar[str] = "best_of_n"
    Options = BestOfNOptions

    def __init__(self, options: BestOfNOptions | None = None, *,
                 scorers: Sequence[Any | Weighted] | None = None, **kw: object) -> None:
        self.options = options or BestOfNOptions(**kw)  # type: ignore[arg-type]
        self.scorers = list(scorers or [])
        o = self.options
        self.proposer = PromptProposer(ProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat))

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        candidates = await self.proposer.propose(problem, ctx, n=o.n)
        if o.select == "majority":
            winner = select.majority(candidates)
        else:
            found = resolve_verifiers(o.verifiers, self.scorers, ctx, "best_of_n")
            await score_candidates(candidates, ctx, found)
            pick = select.best_score if o.select == "best" else select.score_vote
            winner = pick(candidates, o.fallback)
            failed = sum(1 for c in candidates if select.usable_score(c) is None)
            return Result.choose(problem, candidates, winner=winner, select=o.select, failed=failed)
        return Result.choose(problem, candidates, winner=winner, select=o.select)
