"""Operations on verifiers: combine them, cascade them, cache their scores, prune and rerank.

- :class:`WeightedSum`: the weighted mean of several verifiers' values (all run concurrently).
- :class:`AllPass`: passes only when every verifier passes; the value is the weakest one.
- :class:`Cascade`: cheap-to-expensive stages; each stage only sees the candidates the previous
  stage kept, so an expensive LLM judge never reads what a cheap rule already rejected.
- :class:`CachedVerifier`: scores each (problem, candidate text) once, keyed by
  :func:`candidate_hash`, across calls and strategies.
- :func:`prune` / :func:`rerank`: pure functions on already-scored candidates;
  :func:`verify_and_prune` / :func:`verify_and_rerank` score through ``ctx.verify`` first.

Combinators are verifiers themselves (``score`` and ``cost``), so they nest and plug in wherever a
verifier does. Their declared cost adds up their parts (a cascade's is an upper bound).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score

from .base import (
    AVerifier,
    VerifierCost,
    VerifierOptions,
    build_verifier,
    cost_of,
    verifier_options,
    verifier_part,
)

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "AllPass",
    "AllPassOptions",
    "CachedOptions",
    "CachedVerifier",
    "Cascade",
    "CascadeOptions",
    "Stage",
    "WeightedSum",
    "WeightedSumOptions",
    "candidate_hash",
    "combined_cost",
    "passes",
    "prune",
    "rerank",
    "verify_and_prune",
    "verify_and_rerank",
]

_KIND_ORDER = ("rule", "symbolic", "program", "model", "llm")


def combined_cost(verifiers: Sequence[object]) -> VerifierCost:
    """The cost of running all ``verifiers`` on a candidate: the most expensive kind, the summed
    engine calls, the summed time limits (``None`` when any part has none)."""
    costs = [cost_of(v) for v in verifiers]
    kind = max((c.kind for c in costs), key=_KIND_ORDER.index)
    seconds = [c.max_seconds for c in costs]
    total = None if any(s is None for s in seconds) else sum(s for s in seconds if s is not None)
    return VerifierCost(kind=kind, calls=sum(c.calls for c in costs), max_seconds=total)


def _name(verifier: object) -> str:
    return str(getattr(verifier, "name", type(verifier).__name__))


def passes(score: Score, threshold: float | None = None) -> bool:
    """Whether a score keeps its candidate: ``value >= threshold`` when a threshold is given, else
    the verifier's own verdict, else ``value >= 0.5``."""
    if threshold is not None:
        return score.value >= threshold
    if score.passed is not None:
        return score.passed
    return score.value >= 0.5


async def _run(verifier: object, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
    if not candidates:
        return []
    scores: list[Score] = await verifier.score(problem, candidates, ctx)  # type: ignore[attr-defined]
    if len(scores) != len(candidates):
        raise ConfigError(
            f"verifier {_name(verifier)!r} returned {len(scores)} scores for {len(candidates)} "
            "candidates; a verifier must return one score per candidate, in order."
        )
    return scores


Verifiers = Annotated[list[AVerifier], Field(min_length=1, strict=False)]


def _first_is_parts(first: Any) -> bool:
    """Whether a combinator's positional argument is its parts rather than its options."""
    return (
        first is not None
        and not isinstance(first, VerifierOptions)
        and not (isinstance(first, Mapping) and all(isinstance(k, str) for k in first))
    )


# --------------------------------------------------------------------------------------------------
# Combinators
# --------------------------------------------------------------------------------------------------


class WeightedSumOptions(VerifierOptions):
    """Options of :class:`WeightedSum`."""

    verifiers: Verifiers
    """The parts: verifiers or verifier specs (``[math, {name: judge, weight: 2}]``); a mapping
    verifier -> weight sets ``weights`` too."""
    weights: Annotated[list[float], Field(strict=False)] | None = None
    """One weight per verifier, >= 0 with a positive sum; None: the specs' ``weight`` (1 for built
    verifiers)."""
    threshold: float | None = None
    """``passed = value >= threshold``; None leaves ``passed`` unset."""

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("verifiers"), Mapping):
            if data.get("weights") is not None:
                raise ValueError("give weights either as a mapping or as weights=, not both")
            parts = data["verifiers"]
            data = {**data, "verifiers": list(parts), "weights": [float(w) for w in parts.values()]}
        return data

    def effective_weights(self) -> list[float]:
        """``weights``, else each part's spec ``weight`` (1 for a built verifier)."""
        if self.weights is not None:
            return list(self.weights)
        return [
            1.0 if callable(getattr(v, "score", None)) else float(getattr(v, "weight", 1.0)) for v in self.verifiers
        ]

    @model_validator(mode="after")
    def _weights(self) -> WeightedSumOptions:
        w = self.effective_weights()
        if len(w) != len(self.verifiers):
            raise ValueError(f"weights must have one entry per verifier ({len(self.verifiers)}), got {len(w)}.")
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {w}.")
        return self


class WeightedSum:
    """Value = sum_i w_i * value_i / sum_i w_i over the verifiers, run concurrently.

    ``WeightedSum([a, b], [1.0, 3.0])`` or ``WeightedSum({a: 1.0, b: 3.0})``. ``passed`` is
    ``value >= threshold`` with a threshold, else None. Feedback lists each part's value and
    feedback, so ``refine`` sees every reason.
    """

    name: ClassVar[str] = "weighted_sum"
    Options = WeightedSumOptions

    def __init__(
        self,
        options: WeightedSumOptions | Sequence[object] | Mapping[Any, Any] | None = None,
        weights: Sequence[float] | None = None,
        /,
        **kw: Any,
    ) -> None:
        if _first_is_parts(options):
            options, kw = None, {"verifiers": options, **kw}
        if weights is not None:
            kw["weights"] = weights
        self.options = verifier_options(WeightedSumOptions, options, kw, self.name)
        self.verifiers = [build_verifier(v) for v in self.options.verifiers]
        self.weights = self.options.effective_weights()
        self.threshold = self.options.threshold
        self.cost = combined_cost(self.verifiers)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        per_verifier = await asyncio.gather(*(_run(v, problem, candidates, ctx) for v in self.verifiers))
        total = sum(self.weights)
        out = []
        for i in range(len(candidates)):
            parts = [scores[i] for scores in per_verifier]
            value = sum(w * s.value for w, s in zip(self.weights, parts, strict=True)) / total
            feedback = "\n".join(
                f"{_name(v)}={s.value:.3g}" + (f": {s.feedback}" if s.feedback else "")
                for v, s in zip(self.verifiers, parts, strict=True)
            )
            passed = None if self.threshold is None else value >= self.threshold
            out.append(Score(value=value, passed=passed, feedback=feedback, verifier=self.name))
        return out


class AllPassOptions(VerifierOptions):
    """Options of :class:`AllPass`."""

    verifiers: Verifiers


class AllPass:
    """Passes only when every verifier passes (see :func:`passes`); the value is the lowest part
    value (the weakest link: 1/0 rules give 1 only when all pass). All verifiers see all
    candidates; use :class:`Cascade` to spare later verifiers the candidates already rejected."""

    name: ClassVar[str] = "all_pass"
    Options = AllPassOptions

    def __init__(self, options: AllPassOptions | Sequence[object] | None = None, /, **kw: Any) -> None:
        if _first_is_parts(options):
            options, kw = None, {"verifiers": options, **kw}
        self.options = verifier_options(AllPassOptions, options, kw, self.name)
        self.verifiers = [build_verifier(v) for v in self.options.verifiers]
        self.cost = combined_cost(self.verifiers)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        per_verifier = await asyncio.gather(*(_run(v, problem, candidates, ctx) for v in self.verifiers))
        out = []
        for i in range(len(candidates)):
            parts = [scores[i] for scores in per_verifier]
            failed = [(v, s) for v, s in zip(self.verifiers, parts, strict=True) if not passes(s)]
            feedback = "\n".join(f"{_name(v)} failed" + (f": {s.feedback}" if s.feedback else "") for v, s in failed)
            out.append(
                Score(value=min(s.value for s in parts), passed=not failed, feedback=feedback, verifier=self.name)
            )
        return out


@dataclass(frozen=True)
class Stage:
    """One cascade stage: a verifier (or a verifier spec, built by the cascade) and which
    candidates it lets through to the next stage: those with ``value >= threshold`` (or, without a
    threshold, those that pass per :func:`passes`), at most the ``top_k`` best of them when
    ``top_k`` is set."""

    verifier: Any
    threshold: float | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"Stage top_k must be >= 1 or None, got {self.top_k}.")
        object.__setattr__(self, "verifier", verifier_part(self.verifier))

    def keep(self, scores: Sequence[Score]) -> list[int]:
        """Indices (into ``scores``) of the candidates this stage lets through, in input order."""
        kept = [i for i, s in enumerate(scores) if passes(s, self.threshold)]
        if self.top_k is not None and len(kept) > self.top_k:
            best = sorted(kept, key=lambda i: -scores[i].value)[: self.top_k]  # stable: earlier first on ties
            kept = sorted(best)
        return kept


def _stage(s: Any) -> Stage:
    if isinstance(s, Stage):
        return s
    if isinstance(s, Mapping) and "verifier" in s:
        return Stage(**s)
    return Stage(s)


class CascadeOptions(VerifierOptions):
    """Options of :class:`Cascade`."""

    stages: Annotated[list[Annotated[Any, AfterValidator(_stage)]], Field(min_length=1, strict=False)]
    """:class:`Stage` objects, ``{verifier, threshold, top_k}`` mappings, or verifiers (built, or
    specs such as ``math`` / ``{name: judge}``) that keep what passes."""
    rejected_value: float = 0.0
    """The value of a candidate a stage rejected."""


class Cascade:
    """Cheap-to-expensive verification: each stage scores only what the previous stage kept.

    A candidate that survives every stage gets the last stage's score; one rejected at stage k
    gets ``passed=False``, value ``rejected_value`` (default 0.0, below any survivor's
    calibrated score) and feedback naming the stage and why. Declared cost is the sum of the
    stages' (an upper bound: later stages usually see fewer candidates).
    """

    name: ClassVar[str] = "cascade"
    Options = CascadeOptions

    def __init__(self, options: CascadeOptions | Sequence[Stage | object] | None = None, /, **kw: Any) -> None:
        if _first_is_parts(options):
            options, kw = None, {"stages": options, **kw}
        self.options = verifier_options(CascadeOptions, options, kw, self.name)
        self.stages = [replace(s, verifier=build_verifier(s.verifier)) for s in self.options.stages]
        self.rejected_value = self.options.rejected_value
        self.cost = combined_cost([s.verifier for s in self.stages])

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        result: list[Score | None] = [None] * len(candidates)
        alive = list(range(len(candidates)))
        last = len(self.stages) - 1
        for k, stage in enumerate(self.stages):
            scores = await _run(stage.verifier, problem, [candidates[i] for i in alive], ctx)
            if k == last:
                for i, s in zip(alive, scores, strict=True):
                    result[i] = s
                break
            kept = set(stage.keep(scores))
            for j, (i, s) in enumerate(zip(alive, scores, strict=True)):
                if j not in kept:
                    why = s.feedback or f"value {s.value:.3g}"
                    result[i] = Score(
                        value=self.rejected_value,
                        passed=False,
                        verifier=self.name,
                        feedback=f"rejected by stage {k + 1} ({_name(stage.verifier)}): {why}",
                    )
            alive = [i for j, i in enumerate(alive) if j in kept]
            if not alive:
                break
        return [s for s in result if s is not None]


def candidate_hash(problem: Problem, candidate: Candidate, salt: str = "") -> str:
    """A stable key for scoring ``candidate`` on ``problem``: problem id and question, the
    candidate's text and answer, and ``salt`` (e.g. the verifier's configuration)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (salt, problem.id, problem.question, candidate.text, candidate.answer or ""):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


class CachedOptions(VerifierOptions):
    """Options of :class:`CachedVerifier`."""

    verifier: AVerifier
    cache: Any = None
    """A mutable mapping from :func:`candidate_hash` to :class:`Score`; None: a new dict."""
    salt: str | None = None
    """Part of every key (the verifier's name when None)."""


class CachedVerifier:
    """Scores each (problem, candidate) once: repeats (the same text sampled twice, a candidate
    rescored by a later strategy step) come from ``cache``, a dict by default or any mutable
    mapping (shelve, a dict shared between verifiers with distinct ``salt``).

    Only verifiers that judge a candidate on its own may be cached; :class:`ConsistencyVerifier`
    scores depend on the other candidates. ``hits`` and ``misses`` count lookups.
    """

    name: ClassVar[str] = "cached"
    Options = CachedOptions

    def __init__(
        self, options: CachedOptions | object = None, cache: MutableMapping[str, Score] | None = None, /, **kw: Any
    ) -> None:
        if _first_is_parts(options):
            options, kw = None, {"verifier": options, **kw}
        if cache is not None:
            kw["cache"] = cache
        self.options = o = verifier_options(CachedOptions, options, kw, self.name)
        self.verifier = build_verifier(o.verifier)
        self.cache: MutableMapping[str, Score] = {} if o.cache is None else o.cache
        self.salt = _name(self.verifier) if o.salt is None else o.salt
        self.cost = cost_of(self.verifier)
        self.hits = 0
        self.misses = 0

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        keys = [candidate_hash(problem, c, self.salt) for c in candidates]
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache and key not in todo:
                todo[key] = i
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            fresh = await _run(self.verifier, problem, [candidates[i] for i in todo.values()], ctx)
            for key, s in zip(todo, fresh, strict=True):
                self.cache[key] = s
        return [self.cache[k] for k in keys]


# --------------------------------------------------------------------------------------------------
# Prune and rerank
# --------------------------------------------------------------------------------------------------


def prune(candidates: Sequence[Candidate], threshold: float | None = 0.5, *, keep_at_least: int = 0) -> list[Candidate]:
    """The candidates whose latest score passes (see :func:`passes`), in their order. With
    ``keep_at_least=k`` the k best-scored are kept even when fewer pass (so a strategy never
    ends with nothing to choose from). Unscored candidates are dropped."""
    if keep_at_least < 0:
        raise ConfigError(f"keep_at_least must be >= 0, got {keep_at_least}.")
    kept = [i for i, c in enumerate(candidates) if c.scores and passes(c.scores[-1], threshold)]
    if len(kept) < keep_at_least:
        best = [i for i in _ranked(candidates) if candidates[i].scores][:keep_at_least]
        kept = sorted(set(kept) | set(best))
    return [candidates[i] for i in kept]


def _ranked(candidates: Sequence[Candidate]) -> list[int]:
    return sorted(range(len(candidates)), key=lambda i: (candidates[i].score is None, -(candidates[i].score or 0.0), i))


def rerank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates sorted by their latest score, best first; ties keep their order, unscored last."""
    return [candidates[i] for i in _ranked(candidates)]


async def verify_and_prune(
    ctx: Context,
    candidates: list[Candidate],
    verifier: object = None,
    threshold: float | None = 0.5,
    *,
    keep_at_least: int = 0,
) -> list[Candidate]:
    """Score through ``ctx.verify`` (counted in usage, scores appended), then :func:`prune`."""
    if candidates:
        await ctx.verify(candidates, verifier)
    return prune(candidates, threshold, keep_at_least=keep_at_least)


async def verify_and_rerank(ctx: Context, candidates: list[Candidate], verifier: object = None) -> list[Candidate]:
    """Score through ``ctx.verify`` (counted in usage, scores appended), then :func:`rerank`."""
    if candidates:
        await ctx.verify(candidates, verifier)
    return rerank(candidates)
