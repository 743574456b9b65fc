"""Scoring candidates with verifiers: which verifiers a strategy uses, and the one way it calls them.

A strategy names verifiers as components, ``verifiers: [{name: math, weight: 0.5, ...options}]``
(``weight`` belongs to the reference, every other key is the verifier's option), or is given
verifier objects in Python (``scorers=[v, (v2, 0.5)]``), or uses the context's verifier.
Several verifiers are combined by a weighted sum (:func:`tts.strategies._select.combine_scores`),
appended to each candidate as one ``weighted_sum`` score after the verifiers' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tts.config.components import VerifierSpec, build_component
from tts.context import Context
from tts.errors import ConfigError
from tts.strategies._select import combine_scores
from tts.types import Candidate, Score

__all__ = ["VerifierSpec", "Weighted", "build_verifiers", "resolve_verifiers", "score_candidates"]

Weighted = tuple[Any, float]
"""A verifier object and its weight in the sum."""


def build_verifiers(specs: Sequence[VerifierSpec]) -> list[Weighted]:
    """(verifier, weight) pairs built from component specs (through the registry)."""
    return [(build_component(s, "verifier"), s.weight) for s in specs]


def resolve_verifiers(
    built: Sequence[Weighted], given: Sequence[Any | Weighted] | None, ctx: Context, who: str
) -> list[Weighted]:
    """The verifiers to use: those built from the options, else ``given`` (objects or pairs), else
    ``ctx.verifier``."""
    if built:
        return list(built)
    if given:
        return [v if isinstance(v, tuple) else (v, 1.0) for v in given]
    if ctx.verifier is not None:
        return [(ctx.verifier, 1.0)]
    raise ConfigError(
        f"{who} needs a verifier: set verifiers: [{{name: math}}], pass scorers=[obj] to the "
        "constructor or give the runner a verifier."
    )


async def score_candidates(candidates: list[Candidate], ctx: Context, verifiers: Sequence[Weighted]) -> None:
    """Append each verifier's score to every candidate (in order, so traces are deterministic), then
    their weighted sum when there are several; ``candidate.score`` is the combined value."""
    per: list[list[Score]] = []
    for verifier, _ in verifiers:
        per.append(await ctx.verify(candidates, verifier))
    if len(verifiers) > 1:
        for c, s in zip(candidates, combine_scores(per, [w for _, w in verifiers]), strict=True):
            c.scores.append(s)
