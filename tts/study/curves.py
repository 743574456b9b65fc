"""Scaling curves from one generation pass: accuracy at every n up to the samples drawn.

A configuration that sampled N candidates per problem gives the accuracy of every n <= N by
subsampling: for each problem, ``subsets`` random orders of its N samples are drawn, and the first n
of each order, taken in the order they were sampled, form a uniform random subset of size n.

Each method is a selection rule of :mod:`tts.strategies._select`, the module the strategies pick
with, applied to the subset as the strategy would apply it to n fresh samples:

- ``majority``: :func:`~tts.strategies._select.majority` (self-consistency);
- ``weighted``: :func:`~tts.strategies._select.weighted_vote` with each sample's score as its weight
  (self-consistency with ``weight: score``, or ``weight: mean_logprob`` when nothing was scored);
- ``best_of_n``: :func:`~tts.strategies._select.best_score` with ``fallback="majority"`` (best-of-N);
- ``pass@k``: the unbiased estimator ``1 - C(N-c, k) / C(N, k)`` (Chen et al., 2021), exact.

A sample's score is its verifier's latest score (with its pass/fail), or, in a configuration that
scored nothing, ``exp`` of its mean token logprob. :func:`select_winners` computes every rule for
all subsets at once with numpy, and follows the module's written rules exactly, ties included
(vote totals are summed in sample order, as the strategy sums them); a property test holds it to
the module's own functions on random inputs.

Tokens per problem at n are the prompt tokens plus n times the mean completion tokens, so curves
read against tokens as well as against n. A failed or timed-out problem is wrong at every n (its
tokens spent), as it is in the configuration's accuracy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tts.stats import bootstrap_ci, pass_at_k
from tts.strategies import _select
from tts.study.analysis import correct_of
from tts.study.store import FAILED, Store, status_of
from tts.types import Candidate, Score

__all__ = ["METHODS", "Curve", "candidates_of", "curves", "select_winners", "subsample_problem"]

METHODS: tuple[str, ...] = ("majority", "weighted", "best_of_n", "pass@k")
VOTES: tuple[str, ...] = ("majority", "weighted", "best_of_n")
"""The methods that select (pass@k needs the labels)."""


@dataclass
class Curve:
    """Accuracy against n (and tokens) of one selection method over one configuration's samples."""

    config_id: str
    label: str
    method: str
    n: list[int]
    accuracy: list[float]
    ci_low: list[float]
    ci_high: list[float]
    tokens: list[float]
    problem_ids: list[str] = field(default_factory=list, repr=False)
    per_problem: Any = field(default=None, repr=False)
    """problems x n array of expected accuracy (mean over subsets and seeds)."""
    per_problem_tokens: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("per_problem", "per_problem_tokens", "problem_ids")}


# ------------------------------------------------------------------------------------ inputs


def candidates_of(samples: Sequence[dict[str, Any]], scores: str | None) -> list[Candidate]:
    """One problem's stored samples (in sample order) as the candidates a strategy would have held.

    ``scores``: ``"score"`` (the stored verifier score and pass/fail), ``"logprob"`` (``exp`` of the
    mean token logprob as the score) or ``None`` (no scores).
    """
    out = []
    for s in samples:
        value: float | None = None
        passed = None
        if scores == "score" and s["score"] is not None:
            value = float(s["score"])
            passed = None if s.get("passed") is None else bool(s["passed"])
        elif scores == "logprob" and s["logprob"] is not None:
            value = math.exp(float(s["logprob"]))
        out.append(
            Candidate(
                text="", answer=s["answer"], key=s["key"], scores=[Score(value, passed)] if value is not None else []
            )
        )
    return out


def vote_weight(c: Candidate) -> float:
    """A candidate's weight in the ``weighted`` vote: its score (0 without one, or a NaN score)."""
    value = c.score
    return 0.0 if value is None or math.isnan(value) else value


def _encode(candidates: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Answer codes (-1: no answer; codes in order of first appearance), usable scores (NaN: the
    candidate fails in best_score) and the keys by code."""
    groups = _select.group(candidates)
    codes = {k: i for i, k in enumerate(groups)}
    keys = np.array([codes.get(c.key, -1) if c.key else -1 for c in candidates], dtype=np.int64)
    usable = [_select.usable_score(c) for c in candidates]
    scores = np.array([np.nan if v is None else v for v in usable], dtype=float)
    return keys, scores, list(groups)


# ------------------------------------------------------------------------------------ selection


def select_winners(
    keys: np.ndarray,
    perms: np.ndarray,
    n_max: int,
    *,
    weights: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The answer code each rule picks from every subset: ``out[method][s, j]`` for the first
    ``j + 1`` samples of ``perms[s]`` (taken in sample order); -1 is no answer.

    ``keys``: answer codes, numbered in order of first appearance, -1 for no answer; ``weights``
    (finite) give the ``weighted`` rule; ``scores`` (NaN: fails) give ``best_of_n``.
    """
    subsets, total = perms.shape
    n_max = min(n_max, total)
    n_keys = max(int(keys.max(initial=-1)) + 1, 1)
    rows = np.arange(subsets)
    counts = np.zeros((subsets, n_keys), dtype=np.int64)
    first = np.full((subsets, n_keys), total, dtype=np.int64)  # earliest sample of each answer in the subset
    best_val = np.full(subsets, -np.inf)
    best_idx = np.full(subsets, total, dtype=np.int64)
    out = {"majority": np.empty((subsets, n_max), dtype=np.int64)}
    if weights is not None:
        out["weighted"] = np.empty((subsets, n_max), dtype=np.int64)
    if scores is not None:
        out["best_of_n"] = np.empty((subsets, n_max), dtype=np.int64)
    for j in range(n_max):
        idx = perms[:, j]
        k = keys[idx]
        valid = k >= 0
        r, kk, ii = rows[valid], k[valid], idx[valid]
        counts[r, kk] += 1
        first[r, kk] = np.minimum(first[r, kk], ii)
        seen = counts > 0
        has = seen.any(axis=1)
        # vote ties: the answer whose first sample came earliest
        major = np.argmax(np.where(seen, counts * (total + 1) - first, -1), axis=1)
        major = np.where(has, major, -1)
        out["majority"][:, j] = major
        if weights is not None:
            # totals summed in sample order, as the strategy sums them (float sums depend on order)
            sub = np.sort(perms[:, : j + 1], axis=1)
            ks = keys[sub]
            ok = ks >= 0
            flat = (rows[:, None] * n_keys + ks)[ok]
            wsum = np.bincount(flat, weights=weights[sub][ok], minlength=subsets * n_keys).reshape(subsets, n_keys)
            top = np.where(seen, wsum, -np.inf).max(axis=1)
            tied = seen & (wsum == top[:, None])
            out["weighted"][:, j] = np.where(has, np.argmin(np.where(tied, first, total + 1), axis=1), -1)
        if scores is not None:
            # score ties: the earliest sample; no usable score in the subset: the majority
            s = scores[idx]
            better = ~np.isnan(s) & ((s > best_val) | ((s == best_val) & (idx < best_idx)))
            best_val = np.where(better, s, best_val)
            best_idx = np.where(better, idx, best_idx)
            found = best_idx < total
            out["best_of_n"][:, j] = np.where(found, keys[np.minimum(best_idx, total - 1)], major)
    return out


def subsample_problem(
    candidates: Sequence[Candidate],
    key_correct: Sequence[bool],
    n_max: int,
    subsets: int,
    rng: np.random.Generator,
    *,
    weighted: bool = True,
) -> dict[str, np.ndarray]:
    """Expected accuracy at n = 1..n_max of each selection rule over random subsets of one problem's
    candidates (in sample order); ``key_correct[code]`` says whether the answer with that code (in
    order of first appearance) is right. ``weighted=False`` computes ``majority`` only."""
    keys, scores, _ = _encode(candidates)
    total = len(candidates)
    perms = rng.permuted(np.tile(np.arange(total), (subsets, 1)), axis=1)
    weights = np.array([vote_weight(c) for c in candidates], dtype=float) if weighted else None
    winners = select_winners(keys, perms, n_max, weights=weights, scores=scores if weighted else None)
    right = np.append(np.asarray(key_correct, dtype=bool), False)  # code -1: no answer, wrong
    return {m: right[w].mean(axis=0) for m, w in winners.items()}


# ------------------------------------------------------------------------------------ curves


def _score_kind(samples: Sequence[dict[str, Any]]) -> str | None:
    """What a configuration's samples are scored by: ``score``, ``logprob`` or nothing (``None``)."""
    if any(s["score"] is not None for s in samples):
        return "score"
    if any(s["logprob"] is not None for s in samples):
        return "logprob"
    return None


def curves(
    store: Store,
    *,
    subsets: int = 200,
    seed: int = 0,
    resamples: int = 1000,
    methods: Sequence[str] = METHODS,
    configs: Sequence[str] | None = None,
) -> list[Curve]:
    """Subsampled curves (see module docstring) of every configuration with samples."""
    out: list[Curve] = []
    for cfg in store.configs():
        cid = cfg["config_id"]
        if configs is not None and cid not in configs and cfg["label"] not in configs:
            continue
        rows = {(r["seed"], r["problem_id"]): r for r in store.results(cid) if correct_of(r) is not None}
        all_samples = store.samples(cid)
        groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for s in all_samples:
            if (s["seed"], s["problem_id"]) in rows:
                groups[(s["seed"], s["problem_id"])].append(s)
        sizes = [len(groups.get(key, [])) for key in rows]
        if not rows or not any(sizes):
            continue
        n_max = min(x for x in sizes if x > 0)
        kind = _score_kind(all_samples)
        rng = np.random.default_rng(seed)
        per: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
        tok: dict[str, list[np.ndarray]] = defaultdict(list)
        ns = np.arange(1, n_max + 1)
        for key in sorted(rows):
            row, samples = rows[key], groups.get(key, [])
            pid = key[1]
            if not samples or status_of(row) in FAILED:  # a failed problem: wrong at every n, its tokens spent
                zero = np.zeros(n_max)
                for m in methods:
                    per[m][pid].append(zero)
                tok[pid].append(np.full(n_max, float((row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0))))
                continue
            candidates = candidates_of(samples, kind)
            key_right = {s["key"]: bool(s["correct"]) for s in samples}
            key_correct = [key_right[k] for k in _select.group(candidates)]
            sub = subsample_problem(candidates, key_correct, n_max, subsets, rng, weighted=kind is not None)
            c = sum(1 for s in samples if s["correct"])
            for m in methods:
                if m == "pass@k":
                    per[m][pid].append(np.array([pass_at_k(len(samples), c, int(k)) for k in ns]))
                elif m in sub:
                    per[m][pid].append(sub[m])
            mean_tokens = sum(float(s["tokens"] or 0) for s in samples) / len(samples)
            tok[pid].append(float(row["prompt_tokens"] or 0) + ns * mean_tokens)
        pids = sorted(tok)
        tokens = np.array([np.mean(tok[p], axis=0) for p in pids])
        for m in methods:
            if not per[m] or len(per[m]) != len(pids):
                continue
            mat = np.array([np.mean(per[m][p], axis=0) for p in pids])
            cis = [bootstrap_ci(mat[:, j].tolist(), resamples=resamples, seed=seed) for j in range(n_max)]
            out.append(
                Curve(
                    config_id=cid,
                    label=cfg["label"],
                    method=m,
                    n=[int(x) for x in ns],
                    accuracy=[float(x) for x in mat.mean(axis=0)],
                    ci_low=[c[1] for c in cis],
                    ci_high=[c[2] for c in cis],
                    tokens=[float(x) for x in tokens.mean(axis=0)],
                    problem_ids=pids,
                    per_problem=mat,
                    per_problem_tokens=tokens,
                )
            )
    return out
