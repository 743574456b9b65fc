"""Compute-optimal allocation: a configuration per difficulty bin under a total token budget.

Difficulty is estimated without labels, from the agreement among a pilot configuration's first
samples (a problem the pilot failed has none: it goes to the hardest bin); a failed problem counts
as wrong for every option, as it does in accuracy. The choice is fitted on one half of the problems
and evaluated on the other (see :func:`compute_optimal_allocation`). Options are every
configuration as run plus every point of its subsampled curves (:mod:`tts.study.curves`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tts.stats import paired_bootstrap
from tts.study.analysis import agreement, config_by_label, pareto_frontier, per_problem_accuracy
from tts.study.curves import Curve, curves
from tts.study.store import Store

__all__ = ["Allocation", "AllocationRow", "compute_optimal_allocation"]


# ------------------------------------------------------------------------------------ allocation


@dataclass
class AllocationRow:
    """One total budget: the per-bin choice fitted on one half, evaluated on the other."""

    budget_tokens: float
    choice: list[str]
    fit_accuracy: float
    eval_accuracy: float
    eval_tokens: float
    single: str
    single_eval_accuracy: float
    single_eval_tokens: float
    gain: float
    gain_ci: tuple[float, float]


@dataclass
class Allocation:
    """Compute-optimal allocation by estimated difficulty (see :func:`compute_optimal_allocation`)."""

    pilot: str
    pilot_samples: int
    bin_edges: list[float]
    fit_problems: int
    eval_problems: int
    rows: list[AllocationRow]

    @property
    def best_gain(self) -> AllocationRow | None:
        return max(self.rows, key=lambda r: r.gain) if self.rows else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Option:
    label: str
    config_id: str
    n: int | None
    acc: dict[str, float]
    tokens: dict[str, float]


def _options(store: Store, curve_list: Sequence[Curve]) -> list[_Option]:
    opts: list[_Option] = []
    for cfg in store.configs():
        rows = store.results(cfg["config_id"])
        acc = per_problem_accuracy(rows)
        tk: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            tk[r["problem_id"]].append(float((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)))
        opts.append(_Option(cfg["label"], cfg["config_id"], None, acc, {k: sum(v) / len(v) for k, v in tk.items()}))
    for c in curve_list:
        if c.method == "pass@k":
            continue  # needs the labels: not a selection rule
        for j, n in enumerate(c.n):
            opts.append(
                _Option(
                    f"{c.label} {c.method}@{n}",
                    c.config_id,
                    n,
                    {p: float(c.per_problem[i, j]) for i, p in enumerate(c.problem_ids)},
                    {p: float(c.per_problem_tokens[i, j]) for i, p in enumerate(c.problem_ids)},
                )
            )
    return opts


def _combine_frontiers(per_bin: list[list[tuple[float, float, int]]]) -> list[tuple[float, float, tuple[int, ...]]]:
    """Pareto frontier of (cost, value, choices) over one option per bin (costs and values add)."""
    states: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for options in per_bin:
        merged = [(c + oc, v + ov, (*ch, oi)) for c, v, ch in states for oc, ov, oi in options]
        merged.sort(key=lambda s: (s[0], -s[1]))
        states = []
        best = -math.inf
        for s in merged:
            if s[1] > best + 1e-12:
                states.append(s)
                best = s[1]
    return states


def compute_optimal_allocation(
    store: Store,
    curve_list: Sequence[Curve] | None = None,
    *,
    pilot: str | None = None,
    pilot_samples: int = 4,
    bins: int = 3,
    seed: int = 0,
    resamples: int = 2000,
) -> Allocation | None:
    """Choose a configuration per difficulty bin under a total token budget; report the gain over
    the best single configuration.

    Difficulty is estimated without labels: the agreement among the first ``pilot_samples``
    samples of the ``pilot`` configuration (default: among the configurations with that many
    samples per problem, the most accurate on the fitting half).
    Problems are split in two halves (seeded); on the first, bins are cut at agreement quantiles
    and, for every budget level (the token costs of the Pareto-optimal single configurations),
    the per-bin choice that maximises accuracy within the budget is found exactly (Pareto
    frontiers of cost and accuracy combined bin by bin). Both that allocation and the best single
    configuration within the same budget are then evaluated on the second half. The pilot's
    tokens are charged to the allocation, except where the chosen option is the pilot
    configuration itself with n >= pilot_samples (its samples are reused).

    Options are every configuration as run plus every point of its subsampled curves. Returns
    ``None`` when no configuration has enough samples for a pilot.
    """
    curve_list = list(curve_list) if curve_list is not None else curves(store, resamples=200)
    cfgs = store.configs()
    sample_rows = {c["config_id"]: store.samples(c["config_id"]) for c in cfgs}
    counts = {cid: Counter((s["seed"], s["problem_id"]) for s in rows) for cid, rows in sample_rows.items()}

    def enough(c: dict[str, Any]) -> bool:
        found = counts[c["config_id"]]
        return bool(found) and min(found.values()) >= pilot_samples

    pilot_cfg: dict[str, Any] | None
    if pilot is not None:
        pilot_cfg = config_by_label(store, pilot)
    else:  # the most accurate configuration on the fitting half among those with enough samples

        def fit_accuracy(c: dict[str, Any]) -> float:
            acc = per_problem_accuracy(store.results(c["config_id"]))
            ids = sorted(acc)
            fit_ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[: len(ids) // 2]]
            return float(np.mean([acc[p] for p in fit_ids])) if fit_ids else 0.0

        candidates = [c for c in cfgs if enough(c)]
        pilot_cfg = max(candidates, key=fit_accuracy) if candidates else None
    if pilot_cfg is None or not enough(pilot_cfg):
        return None
    pid_cfg = pilot_cfg["config_id"]
    first_seed = min(s for s, _ in counts[pid_cfg])
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sample_rows[pid_cfg]:
        if s["seed"] == first_seed:
            by_problem[s["problem_id"]].append(s)
    pilot_rows = {r["problem_id"]: r for r in store.results(pid_cfg) if r["seed"] == first_seed}
    difficulty, pilot_cost = {}, {}
    for p, row in pilot_rows.items():  # a pilot that failed a problem: no agreement, the hardest bin
        head = sorted(by_problem.get(p, []), key=lambda s: s["idx"])[:pilot_samples]
        difficulty[p] = agreement([s["key"] for s in head])[0] or 0.0
        spent = sum(float(s["tokens"] or 0) for s in head) if head else float(row["completion_tokens"] or 0)
        pilot_cost[p] = float(row["prompt_tokens"] or 0) + spent

    # options that ran every pilot problem (configurations on other datasets drop out)
    options = [o for o in _options(store, curve_list) if all(p in o.acc and p in o.tokens for p in difficulty)]
    problems = sorted(difficulty)
    if len(problems) < 4 or not options:
        return None
    order = np.random.default_rng(seed).permutation(len(problems))
    half = len(problems) // 2
    fit = [problems[i] for i in order[:half]]
    held = [problems[i] for i in order[half:]]
    qs: list[float] = (
        np.quantile([difficulty[p] for p in fit], np.linspace(0, 1, bins + 1)[1:-1]).tolist() if bins > 1 else []
    )
    edges = sorted(set(qs))

    def bin_of(p: str) -> int:
        return int(np.searchsorted(edges, difficulty[p], side="right"))

    n_bins = len(edges) + 1

    def cost(o: _Option, p: str) -> float:
        reuse = o.config_id == pid_cfg and o.n is not None and o.n >= pilot_samples
        return o.tokens[p] if reuse else pilot_cost[p] + o.tokens[p]

    fit_bins: list[list[str]] = [[p for p in fit if bin_of(p) == b] for b in range(n_bins)]
    per_bin = []
    for members in fit_bins:
        w = len(members) / len(fit)
        if not members:
            per_bin.append([(0.0, 0.0, 0)])
            continue
        cand = [
            (w * float(np.mean([cost(o, p) for p in members])), w * float(np.mean([o.acc[p] for p in members])), i)
            for i, o in enumerate(options)
        ]
        per_bin.append([(c, v, int(i)) for c, v, i in pareto_frontier(cand)])
    frontier = _combine_frontiers(per_bin)
    singles = pareto_frontier(
        [
            (float(np.mean([o.tokens[p] for p in fit])), float(np.mean([o.acc[p] for p in fit])), i)
            for i, o in enumerate(options)
        ]
    )
    rows = []
    for budget, _, single_i in singles:
        feasible = [s for s in frontier if s[0] <= budget + 1e-9]
        if not feasible:
            continue
        _, fit_value, choice = max(feasible, key=lambda s: s[1])
        chosen = [options[choice[bin_of(p)]] for p in held]
        alloc = [o.acc[p] for o, p in zip(chosen, held, strict=True)]
        single = options[single_i]
        base = [single.acc[p] for p in held]
        gain, lo, hi = paired_bootstrap(base, alloc, seed=seed, resamples=resamples)
        rows.append(
            AllocationRow(
                budget_tokens=budget,
                choice=[options[i].label for i in choice],
                fit_accuracy=fit_value,
                eval_accuracy=float(np.mean(alloc)),
                eval_tokens=float(np.mean([cost(o, p) for o, p in zip(chosen, held, strict=True)])),
                single=single.label,
                single_eval_accuracy=float(np.mean(base)),
                single_eval_tokens=float(np.mean([single.tokens[p] for p in held])),
                gain=gain,
                gain_ci=(lo, hi),
            )
        )
    return Allocation(
        pilot=pilot_cfg["label"],
        pilot_samples=pilot_samples,
        bin_edges=edges,
        fit_problems=len(fit),
        eval_problems=len(held),
        rows=rows,
    )
