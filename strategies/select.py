"""Selectors: pure functions that pick the winning candidate, and the weights they vote with.

Every selector returns the *index* of the chosen candidate (or ``None``: no answer) and follows
the same rules, so strategies that share a selector agree:

- Only candidates with an answer key (``Candidate.key`` not ``None``/empty) vote or compete.
- :func:`majority`: most candidates per key; ties go to the key sampled first; the representative
  is the first candidate of the winning key (as :func:`tts.strategies.vote.majority`).
- :func:`weighted_vote`: sum of weights per key; ties go to the key sampled first; the
  representative is the winning key's highest-weight candidate (the first among equals), so with
  equal weights it is :func:`majority`. Weights are summed as given: use non-negative weights
  (probabilities, pass rates); a negative weight counts against its answer.
- :func:`best_score`: the answered candidate with the highest latest score (``Candidate.score``).
  A candidate *fails* when it has no answer, no score (``None`` or NaN) or a score with
  ``passed=False``. Ties on the best score are broken by majority vote among the tied candidates,
  then by the earliest. When every candidate fails, ``fallback="majority"`` votes over all answered
  candidates (scores ignored) and ``fallback="none"`` gives no answer.
- :func:`score_vote`: :func:`weighted_vote` with the candidates' usable scores as weights (failed
  candidates weigh 0), with :func:`best_score`'s fallback when every candidate fails.

Also here: weights from log-probabilities (:func:`softmax_weights`), DeepConf-style confidences
(:func:`confidence`, :func:`top_fraction`), verifier combination (:func:`combine_scores`) and
rank fusion (:func:`rank_keys`, :func:`rrf`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from tts.strategies import vote
from tts.types import Candidate, Completion, Score

__all__ = [
    "Fallback",
    "best_score",
    "combine_scores",
    "confidence",
    "majority",
    "rank_keys",
    "rrf",
    "score_vote",
    "softmax_weights",
    "top_fraction",
    "usable_score",
    "weighted_vote",
]

Fallback = Literal["majority", "none"]
"""What :func:`best_score` does when every candidate fails: vote over answered candidates, or abstain."""


def majority(candidates: Sequence[Candidate]) -> int | None:
    """Index of the first candidate of the most frequent answer key (ties: sampled first)."""
    return vote.majority(candidates)


def weighted_vote(candidates: Sequence[Candidate], weights: Sequence[float]) -> int | None:
    """Index of the highest-weight candidate of the key with the largest weight total."""
    groups = vote.group(candidates)
    winner = vote.plurality(groups, weights)
    if winner is None:
        return None
    members = groups[winner]
    best = members[0]
    for i in members[1:]:
        if weights[i] > weights[best]:
            best = i
    return best


def usable_score(c: Candidate) -> float | None:
    """The candidate's latest score when it competes in :func:`best_score`; None when it fails."""
    if not c.key or not c.scores:
        return None
    s = c.scores[-1]
    if s.passed is False or math.isnan(s.value):
        return None
    return s.value


def best_score(candidates: Sequence[Candidate], fallback: Fallback = "majority") -> int | None:
    """Index of the best-scored answered candidate (see the module docstring for ties and failures)."""
    values = [usable_score(c) for c in candidates]
    scored = [v for v in values if v is not None]
    if not scored:
        return vote.majority(candidates) if fallback == "majority" else None
    top = max(scored)
    tied = [i for i, v in enumerate(values) if v == top]
    if len(tied) == 1:
        return tied[0]
    pick = vote.majority([candidates[i] for i in tied])
    return tied[pick if pick is not None else 0]


def combine_scores(per_verifier: Sequence[Sequence[Score]], weights: Sequence[float],
                   name: str = "weighted_sum") -> list[Score]:
    """One score per candidate: the weighted sum of several verifiers' scores.

    ``per_verifier[j][i]`` is verifier j's score of candidate i. ``passed`` is None when no verifier
    says pass/fail, else whether every verifier that says so passed the candidate.
    """
    if len(per_verifier) != len(weights):
        raise ValueError(f"weights must have one entry per verifier ({len(per_verifier)}), "
                         f"got {len(weights)}.")
    out = []
    for scores in zip(*per_verifier, strict=True):
        verdicts = [s.passed for s in scores if s.passed is not None]
        out.append(Score(value=sum(w * s.value for w, s in zip(weights, scores, strict=True)),
                         passed=all(verdicts) if verdicts else None,
                         feedback="\n".join(s.feedback for s in scores if s.feedback), verifier=name))
    return out


def softmax_weights(values: Sequence[float | None], temperature: float = 1.0) -> list[float]:
    """``exp((v - max) / temperature)`` per value: softmax numerators, safe from underflow.

    Voting sums them per answer, so dividing by the softmax denominator would change no winner;
    ``None`` (no log-probability) weighs 0.
    """
    present = [v for v in values if v is not None]
    if not present:
        return [0.0] * len(values)
    top = max(present)
    return [math.exp((v - top) / temperature) if v is not None else 0.0 for v in values]


ConfidenceKind = Literal["mean", "lowest_group"]


def confidence(completion: Completion | None, kind: ConfidenceKind = "mean",
               group: int = 2048) -> float | None:
    """How sure the model was of a completion, from its chosen tokens' log-probabilities.

    ``mean``: mean token logprob. ``lowest_group``: the lowest mean over sliding windows of
    ``group`` consecutive tokens (DeepConf's lowest group confidence, computed on chosen-token
    logprobs, which every backend with ``logprobs=0`` returns); completions shorter than ``group``
    give their mean. ``None`` when the completion carries no log-probabilities.
    """
    if completion is None:
        return None
    lps = completion.logprobs
    if kind == "mean" or not lps or len(lps) <= group:
        return completion.mean_logprob
    window = sum(lps[:group])
    lowest = window
    for i in range(group, len(lps)):
        window += lps[i] - lps[i - group]
        if window < lowest:
            lowest = window
    return lowest / group


def top_fraction(values: Sequence[float | None], fraction: float) -> list[int]:
    """Indices (ascending) of the ``ceil(fraction * m)`` highest values among the m present ones;
    among equal values the earlier index is kept (DeepConf's filter keeps the top η% by confidence)."""
    present = [i for i, v in enumerate(values) if v is not None]
    if not present:
        return []
    keep = max(1, math.ceil(fraction * len(present) - 1e-9))
    ranked = sorted(present, key=lambda i: -values[i])  # type: ignore[operator]  # stable: earlier first
    return sorted(ranked[:keep])


def rank_keys(candidates: Sequence[Candidate], weights: Sequence[float] | None = None,
              first: str | None = None) -> list[str]:
    """Answer keys from best to worst: by vote total (counts, or sums of ``weights``), ties by first
    appearance; ``first`` (a strategy's chosen key) is put at the top."""
    totals = vote.vote_counts(vote.group(candidates), weights)
    order = list(totals)  # first-appearance order
    ranked = sorted(order, key=lambda k: -totals[k])  # stable
    if first is not None and first in totals:
        ranked.remove(first)
        ranked.insert(0, first)
    return ranked


def rrf(rankings: Sequence[Sequence[str]], k: float = 60.0,
        weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal-rank fusion: ``sum_m w_m / (k + rank_m(key))`` with ranks from 1 (Cormack et al., 2009).

    Keys come back in order of first appearance (ranking by ranking, best first), so the first key
    with the highest fused score wins ties under the usual rule.
    """
    fused: dict[str, float] = {}
    for m, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[m]
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + w / (k + rank)
    return fused


def score_vote(candidates: Sequence[Candidate], fallback: Fallback = "majority") -> int | None:
    """Weighted vote by score: each key totals its candidates' latest scores (failed candidates, as
    in :func:`best_score`, weigh 0); when every candidate fails, ``fallback`` applies."""
    values = [usable_score(c) for c in candidates]
    if all(v is None for v in values):
        return vote.majority(candidates) if fallback == "majority" else None
    return weighted_vote(candidates, [v if v is not None else 0.0 for v in values])
