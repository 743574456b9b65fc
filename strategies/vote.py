"""Voting and aggregation: pure functions over candidates.

Tie rule (documented and tested): among answers with the same vote total, the one whose first
candidate came earliest (lowest index) wins. Candidates without an answer (``key is None``) never
vote; when no candidate has an answer there is no winner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tts.types import Candidate

__all__ = ["group", "majority", "plurality", "vote_counts"]


def group(candidates: Sequence[Candidate],
          key: Callable[[Candidate], str | None] | None = None) -> dict[str, list[int]]:
    """Candidate indices by answer key, in order of first appearance (linear in n)."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        k = key(c) if key is not None else c.key
        if k is None or k == "":
            continue
        bucket = out.get(k)
        if bucket is None:
            out[k] = [i]
        else:
            bucket.append(i)
    return out


def vote_counts(groups: dict[str, list[int]], weights: Sequence[float] | None = None) -> dict[str, float]:
    """Vote total per key: counts, or sums of ``weights`` (one per candidate)."""
    if weights is None:
        return {k: float(len(v)) for k, v in groups.items()}
    return {k: float(sum(weights[i] for i in v)) for k, v in groups.items()}


def plurality(groups: dict[str, list[int]], weights: Sequence[float] | None = None) -> str | None:
    """The winning key (ties: earliest first appearance, since ``groups`` keeps that order)."""
    best: str | None = None
    best_total = float("-inf")
    for k, total in vote_counts(groups, weights).items():
        if total > best_total:
            best, best_total = k, total
    return best


def majority(candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> int | None:
    """Index of the representative (first) candidate of the plurality answer, or None."""
    groups = group(candidates)
    winner = plurality(groups, weights)
    return groups[winner][0] if winner is not None else None
