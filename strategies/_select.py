"""Selection: the one home of voting, scoring picks and the running tally. Pure functions.

Strategies, stop rules and the study's curves all pick winners here, so a curve cannot disagree
with the strategy it models. Every selector returns the *index* of the chosen candidate (or
``None``: no answer) and follows the same written rules:

- **Who votes.** Only candidates with an answer key vote or compete: a key of ``None`` or ``""``
  is skipped everywhere, in :func:`group` and :class:`Tally`. Answers that are not answers get
  no key where candidates are parsed (:func:`drop_non_answer`): an empty extraction, or the
  instruction's placeholder copied as the answer ("The answer is N." under the instruction
  "End your reply with 'The answer is N.' where N is a number"; :func:`placeholders`).
- **Vote ties.** Among answers with the same vote total (count or weight sum), the answer whose
  first candidate came earliest (lowest index) wins. :func:`group` keeps first-appearance order,
  and every vote walks it keeping the first strict maximum.
- **Score ties.** Among candidates with the same best score, the earliest (lowest index) wins.
  :func:`best_score`, :func:`weighted_vote`'s representative and :func:`top_fraction` follow it.
- :func:`majority`: most candidates per key; the representative is the first candidate of the
  winning key. :func:`weighted_vote`: sum of weights per key; the representative is the winning
  key's highest-weight candidate (earliest among equals), so with equal weights it is
  :func:`majority`. Weights are summed as given: a negative weight counts against its answer.
- :func:`best_score`: the answered candidate with the highest latest score. A candidate *fails*
  when it has no answer, no score (``None`` or NaN) or a score with ``passed=False``. When every
  candidate fails, ``fallback="majority"`` votes over all answered candidates (scores ignored) and
  ``fallback="none"`` gives no answer. :func:`score_vote`: :func:`weighted_vote` with usable scores
  as weights (failed candidates weigh 0), with the same fallback.

Also here: weights from log-probabilities (:func:`softmax_weights`), DeepConf-style confidences
(:func:`confidence`, :func:`top_fraction`), verifier combination (:func:`combine_scores`), rank
fusion (:func:`rank_keys`, :func:`rrf`) and the running vote of adaptive sampling
(:class:`Tally`, :func:`decided`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Literal

from tts.task import Task
from tts.types import Candidate, Completion, Score

__all__ = [
    "ConfidenceKind",
    "Fallback",
    "Tally",
    "best_score",
    "combine_scores",
    "confidence",
    "decided",
    "drop_non_answer",
    "first_max",
    "group",
    "majority",
    "placeholders",
    "plurality",
    "rank_keys",
    "rrf",
    "score_vote",
    "softmax_weights",
    "task_placeholders",
    "top_fraction",
    "usable_score",
    "vote_counts",
    "weighted_vote",
]

Fallback = Literal["majority", "none"]
"""What :func:`best_score` does when every candidate fails: vote over answered candidates, or abstain."""

ConfidenceKind = Literal["mean", "lowest_group"]


_WHERE_RE = re.compile(r"\bwhere\s+([A-Z])\s+(?:is|are|stands)\b")
_STATED_RE = re.compile(r"(?i:\banswer(?:\s+is|\s*:))\s*\(?\$?([A-Z])\$?\)?(?=[.'\"`]|\s*$)")


@functools.lru_cache(maxsize=256)
def placeholders(*texts: str) -> frozenset[str]:
    """The single capital letters that instruction ``texts`` use as the answer's placeholder: the
    ``X`` of "where X is ..." and of a quoted "The answer is X." / "Answer: X" (not "Answer: A, B
    or C", where the letters are the answers)."""
    found: set[str] = set()
    for text in texts:
        found.update(_WHERE_RE.findall(text))
        found.update(_STATED_RE.findall(text))
    return frozenset(found)


def task_placeholders(task: Task, *texts: str) -> frozenset[str]:
    """Placeholders of ``task``'s instruction and prompt templates, and of ``texts`` (a proposer's
    own template)."""
    return placeholders(task.instruction, task.direct_template, task.cot_template, *texts)


def drop_non_answer(candidate: Candidate, marks: frozenset[str]) -> Candidate:
    """``candidate`` without answer and key when its answer is not an answer: empty, or one of the
    placeholder letters ``marks`` (kept in ``meta["not_an_answer"]``). Such a candidate never votes."""
    answer = candidate.answer
    if answer is None:
        return candidate
    bare = answer.strip().strip("()$*.").strip()
    if not bare or bare in marks:
        candidate.meta["not_an_answer"] = answer
        candidate.answer = candidate.key = None
    return candidate


def first_max(values: Sequence[float | None]) -> int | None:
    """Index of the largest value, the earliest among equals (the score tie rule); ``None`` values
    and NaN never win; ``None`` when no value competes."""
    best: int | None = None
    for i, v in enumerate(values):
        if v is None or math.isnan(v):
            continue
        if best is None or v > values[best]:  # type: ignore[operator]
            best = i
    return best


def group(
    candidates: Sequence[Candidate], key: Callable[[Candidate], str | None] | None = None
) -> dict[str, list[int]]:
    """Candidate indices by answer key, in order of first appearance (linear in n); keys ``None``
    and ``""`` are skipped."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        k = key(c) if key is not None else c.key
        if not k:
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


def weighted_vote(candidates: Sequence[Candidate], weights: Sequence[float]) -> int | None:
    """Index of the highest-weight candidate (earliest among equals) of the key with the largest
    weight total."""
    groups = group(candidates)
    winner = plurality(groups, weights)
    if winner is None:
        return None
    members = groups[winner]
    return members[first_max([weights[i] for i in members]) or 0]


def usable_score(c: Candidate) -> float | None:
    """The candidate's latest score when it competes in :func:`best_score`; None when it fails."""
    if not c.key or not c.scores:
        return None
    s = c.scores[-1]
    if s.passed is False or math.isnan(s.value):
        return None
    return s.value


def best_score(candidates: Sequence[Candidate], fallback: Fallback = "majority") -> int | None:
    """Index of the best-scored answered candidate, the earliest among equal scores; see the module
    docstring for failures."""
    pick = first_max([usable_score(c) for c in candidates])
    if pick is None and fallback == "majority":
        return majority(candidates)
    return pick


def score_vote(candidates: Sequence[Candidate], fallback: Fallback = "majority") -> int | None:
    """Weighted vote by score: each key totals its candidates' latest scores (failed candidates, as
    in :func:`best_score`, weigh 0); when every candidate fails, ``fallback`` applies."""
    values = [usable_score(c) for c in candidates]
    if all(v is None for v in values):
        return majority(candidates) if fallback == "majority" else None
    return weighted_vote(candidates, [v if v is not None else 0.0 for v in values])


def combine_scores(
    per_verifier: Sequence[Sequence[Score]], weights: Sequence[float], name: str = "weighted_sum"
) -> list[Score]:
    """One score per candidate: the weighted sum of several verifiers' scores.

    ``per_verifier[j][i]`` is verifier j's score of candidate i. ``passed`` is None when no verifier
    says pass/fail, else whether every verifier that says so passed the candidate.
    """
    if len(per_verifier) != len(weights):
        raise ValueError(f"weights must have one entry per verifier ({len(per_verifier)}), got {len(weights)}.")
    out = []
    for scores in zip(*per_verifier, strict=True):
        verdicts = [s.passed for s in scores if s.passed is not None]
        out.append(
            Score(
                value=sum(w * s.value for w, s in zip(weights, scores, strict=True)),
                passed=all(verdicts) if verdicts else None,
                feedback="\n".join(s.feedback for s in scores if s.feedback),
                verifier=name,
            )
        )
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


def confidence(completion: Completion | None, kind: ConfidenceKind = "mean", group: int = 2048) -> float | None:
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


def rank_keys(
    candidates: Sequence[Candidate], weights: Sequence[float] | None = None, first: str | None = None
) -> list[str]:
    """Answer keys from best to worst: by vote total (counts, or sums of ``weights``), ties by first
    appearance; ``first`` (a strategy's chosen key) is put at the top."""
    totals = vote_counts(group(candidates), weights)
    ranked = sorted(totals, key=lambda k: -totals[k])  # stable: first-appearance order among ties
    if first is not None and first in totals:
        ranked.remove(first)
        ranked.insert(0, first)
    return ranked


def rrf(rankings: Sequence[Sequence[str]], k: float = 60.0, weights: Sequence[float] | None = None) -> dict[str, float]:
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


class Tally:
    """Running vote of adaptive sampling: counts and weight totals per answer key, in order of first
    appearance (so its leader follows the vote tie rule); keys ``None``/``""`` are skipped."""

    __slots__ = ("counts", "total", "weights")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.weights: dict[str, float] = {}
        self.total = 0.0

    def add(self, key: str | None, weight: float = 1.0) -> None:
        if not key:
            return
        self.counts[key] = self.counts.get(key, 0) + 1
        self.weights[key] = self.weights.get(key, 0.0) + weight
        self.total += weight

    def top2(self) -> tuple[int, int]:
        """Counts of the leader and the runner-up (0 when absent)."""
        a = b = 0
        for c in self.counts.values():
            if c > a:
                a, b = c, a
            elif c > b:
                b = c
        return a, b

    def share(self) -> float:
        """The leading answer's share of the weighted vote (0 when nothing voted)."""
        return max(self.weights.values()) / self.total if self.total > 0 else 0.0


def decided(tally: Tally, remaining: int) -> bool:
    """Whether ``remaining`` more samples can no longer change the plurality of counts (ties going to
    the answer seen first), so stopping changes no answer of the fixed-n vote."""
    a, b = tally.top2()
    if a != b + remaining:
        return a > b + remaining
    for count in tally.counts.values():  # first-appearance order: the leader must precede every rival
        if count == a:
            return True
        if count == b:
            return False
    return False
