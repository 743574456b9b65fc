"""Analysis of a study's store: metrics per configuration, subsampled scaling curves, the Pareto
frontier, compute-optimal allocation, paired comparisons and temperature sweeps.

Everything here is a pure function of the SQLite store (:class:`tts.store.Store`) and a seed, so a
report recomputed from the same store shows the same numbers.

**Curves from one generation pass.** A configuration that sampled N candidates per problem gives
the accuracy of every n <= N by subsampling: for each problem, ``subsets`` random orders of its N
samples are drawn and the first n of each order form a uniform random subset of size n. Methods:

- ``majority``: plurality vote over canonical answer keys (ties: the earliest sample's answer);
- ``weighted``: vote weighted by the verifier score (else ``exp`` of the mean token logprob);
- ``best_of_n``: the single highest-weighted sample (naive best-of-N);
- ``pass@k``: the unbiased estimator ``1 - C(N-c, k) / C(N, k)`` (Chen et al., 2021), exact.

Tokens per problem at n are the prompt tokens plus n times the mean completion tokens, so curves
read against tokens as well as against n.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tts.stats import bootstrap_ci, paired_bootstrap, pass_at_k, percentile
from tts.store import Store

__all__ = [
    "METHODS",
    "Allocation",
    "AllocationRow",
    "ConfigComparison",
    "ConfigMetrics",
    "Curve",
    "Price",
    "agreement",
    "compare_configs",
    "compute_metrics",
    "compute_optimal_allocation",
    "count_syllables",
    "curves",
    "flesch_reading_ease",
    "pareto_frontier",
    "subsample_problem",
    "temperature_sweep",
]

METHODS: tuple[str, ...] = ("majority", "weighted", "best_of_n", "pass@k")


# ------------------------------------------------------------------------------------ readability

_VOWELS = re.compile(r"[aeiouy]+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n\s*\n")


def count_syllables(word: str) -> int:
    """Syllables of an English word by a deterministic heuristic: vowel groups, minus a silent
    final ``e`` (but not ``-le``), plus the ``-ia``/``-io`` hiatus; at least one. Numbers count one."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 1
    groups = len(_VOWELS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and groups > 1:
        groups -= 1
    if w.endswith("es") and not w.endswith(("ses", "zes", "ces", "ges", "xes")) and groups > 1:
        groups -= 1
    groups += len(re.findall(r"[^aeiou]i[ao]", w))
    return max(1, groups)


def flesch_reading_ease(text: str | None) -> float | None:
    """Flesch reading ease ``206.835 - 1.015 words/sentences - 84.6 syllables/words`` (higher is
    easier; plain English scores 60-70); ``None`` for text without words."""
    if not text:
        return None
    words = _WORD.findall(text)
    if not words:
        return None
    sentences = max(1, len([s for s in _SENTENCE_END.split(text) if _WORD.search(s)]))
    syllables = sum(count_syllables(w) for w in words)
    return 206.835 - 1.015 * len(words) / sentences - 84.6 * syllables / len(words)


def agreement(keys: Sequence[str | None]) -> tuple[float | None, int]:
    """(Fraction of samples that give the most common answer, number of distinct answers); samples
    without an answer never agree. ``None`` for fewer than two samples."""
    present = [k for k in keys if k is not None and k != ""]
    distinct = len(set(present))
    if len(keys) < 2:
        return None, distinct
    top = Counter(present).most_common(1)
    return (top[0][1] / len(keys) if top else 0.0), distinct


# ------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    prompt: float = 0.0
    completion: float = 0.0
    cached: float | None = None
    """Cached prompt tokens (``None``: the prompt price)."""

    def cost(self, prompt: float, cached: float, completion: float) -> float:
        cached_price = self.prompt if self.cached is None else self.cached
        return ((prompt - cached) * self.prompt + cached * cached_price + completion * self.completion) / 1e6


@dataclass
class ConfigMetrics:
    """Aggregates of one configuration over its problems and seeds (token counts per problem)."""

    config_id: str
    label: str
    pipeline: str
    dataset: str
    budget: Any
    sweep: dict[str, Any]
    rows: int
    problems: int
    scored: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    prompt_tokens: float
    cached_prompt_tokens: float
    completion_tokens: float
    total_tokens: float
    calls: float
    verifier_calls: float
    samples: float
    latency_p50: float | None
    latency_p95: float | None
    throughput: float | None
    """Problems per second of wall time (all sessions of the configuration)."""
    failure_rate: float
    timeout_rate: float
    peak_rss_mb: float | None
    """Process peak resident memory (a high-water mark: it includes earlier configurations)."""
    kv_cache: float | None
    """Peak KV-cache use (fraction) where the engine reports it."""
    consistency: float | None
    """Mean agreement among a problem's samples."""
    diversity: float | None
    """Mean distinct answers per sample."""
    readability: float | None
    """Mean Flesch reading ease of the final answers' text."""
    cost_usd: float | None
    """Per problem, from the study's price per million tokens."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def _per_problem_accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean correctness of each problem over its seeds (rows without a reference left out)."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["correct"] is not None:
            by[r["problem_id"]].append(float(r["correct"]))
    return {pid: sum(v) / len(v) for pid, v in by.items()}


def compute_metrics(store: Store, price: Price | None = None, *, resamples: int = 2000) -> list[ConfigMetrics]:
    """One :class:`ConfigMetrics` per configuration, in study order."""
    out = []
    for cfg in store.configs():
        rows = store.results(cfg["config_id"])
        runs = store.runs(cfg["config_id"])
        n = max(len(rows), 1)
        per_problem = _per_problem_accuracy(rows)
        acc = lo = hi = None
        if per_problem:
            values = [per_problem[k] for k in sorted(per_problem)]
            acc, lo, hi = bootstrap_ci(values, resamples=resamples)

        def mean_of(col: str, rows: list[dict[str, Any]] = rows) -> float:
            return sum(float(r[col] or 0) for r in rows) / max(len(rows), 1)

        ok_latencies = [float(r["latency"]) for r in rows if r["error"] is None and r["latency"] is not None]
        wall = sum(float(r["wall"] or 0) for r in runs)
        finished = sum(int(r["problems"] or 0) for r in runs)
        rss = [r["peak_rss_kb"] for r in runs if r["peak_rss_kb"]]
        kv = [r["kv_cache"] for r in runs if r["kv_cache"] is not None]
        prompt, cached, completion = mean_of("prompt_tokens"), mean_of("cached_prompt_tokens"), \
            mean_of("completion_tokens")
        out.append(ConfigMetrics(
            config_id=cfg["config_id"], label=cfg["label"], pipeline=cfg["pipeline"],
            dataset=str((cfg["spec"].get("dataset") or {}).get("name", "")), budget=cfg["budget"],
            sweep=cfg["sweep"], rows=len(rows), problems=len({r["problem_id"] for r in rows}),
            scored=sum(1 for r in rows if r["correct"] is not None), accuracy=acc, ci_low=lo, ci_high=hi,
            prompt_tokens=prompt, cached_prompt_tokens=cached, completion_tokens=completion,
            total_tokens=prompt + completion, calls=mean_of("calls"), verifier_calls=mean_of("verifier_calls"),
            samples=mean_of("n_samples"),
            latency_p50=_finite(percentile(ok_latencies, 50)), latency_p95=_finite(percentile(ok_latencies, 95)),
            throughput=finished / wall if wall > 0 and finished else None,
            failure_rate=sum(1 for r in rows if r["error"] is not None and not r["timed_out"]) / n,
            timeout_rate=sum(1 for r in rows if r["timed_out"]) / n,
            peak_rss_mb=max(rss) / 1024 if rss else None, kv_cache=max(kv) if kv else None,
            consistency=_mean(r["agreement"] for r in rows),
            diversity=_mean((r["distinct_answers"] / r["n_samples"]) if r["n_samples"] else None for r in rows),
            readability=_mean(r["readability"] for r in rows),
            cost_usd=price.cost(prompt, cached, completion) if price is not None else None,
        ))
    return out


# ------------------------------------------------------------------------------------ curves


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
        return {k: v for k, v in asdict(self).items() if k not in ("per_problem", "per_problem_tokens",
                                                                       "problem_ids")}


def subsample_problem(keys: Sequence[int], key_correct: Sequence[bool], weights: Sequence[float] | None, n_max: int,
                      subsets: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Expected accuracy at n = 1..n_max of majority, weighted and best-of-n selection over random
    subsets of one problem's samples.

    ``keys``: each sample's answer code (-1: no answer); ``key_correct[k]``: whether answer code
    k is right; ``weights``: per-sample weights (None: only ``majority``). Ties go to the earliest
    sample (lowest index), as in :mod:`tts.strategies.vote`.
    """
    k_arr = np.asarray(keys, dtype=np.int64)
    n_total = k_arr.size
    n_max = min(n_max, n_total)
    correct = np.append(np.asarray(key_correct, dtype=bool), False)  # index -1 -> no answer -> wrong
    n_keys = max(len(key_correct), 1)
    perm = rng.permuted(np.tile(np.arange(n_total), (subsets, 1)), axis=1)
    rows = np.arange(subsets)
    counts = np.zeros((subsets, n_keys))
    first = np.full((subsets, n_keys), float(n_total))
    w = np.asarray(weights, dtype=float) if weights is not None else None
    wsum = np.zeros((subsets, n_keys))
    best_w = np.full(subsets, -np.inf)
    best_idx = np.full(subsets, n_total)
    out = {m: np.zeros(n_max) for m in (("majority", "weighted", "best_of_n") if w is not None else ("majority",))}
    for j in range(n_max):
        idx = perm[:, j]
        k = k_arr[idx]
        valid = k >= 0
        r, kk, ii = rows[valid], k[valid], idx[valid]
        counts[r, kk] += 1
        first[r, kk] = np.minimum(first[r, kk], ii)
        seen = counts > 0
        has = seen.any(axis=1)
        major = np.argmax(np.where(seen, counts * (n_total + 1) - first, -np.inf), axis=1)
        out["majority"][j] = np.mean(has & correct[major])
        if w is not None:
            wsum[r, kk] += w[ii]
            weighted = np.argmax(np.where(seen, wsum - 1e-9 * first, -np.inf), axis=1)
            out["weighted"][j] = np.mean(has & correct[weighted])
            wi = np.where(valid, w[idx], -np.inf)
            better = valid & ((wi > best_w) | ((wi == best_w) & (idx < best_idx)))
            best_w = np.where(better, wi, best_w)
            best_idx = np.where(better, idx, best_idx)
            best_key = np.where(best_idx < n_total, k_arr[np.minimum(best_idx, n_total - 1)], -1)
            out["best_of_n"][j] = np.mean(correct[best_key])
    return out


def _weights(samples: Sequence[dict[str, Any]]) -> list[float] | None:
    if any(s["score"] is not None for s in samples):
        return [float(s["score"]) if s["score"] is not None else -1e9 for s in samples]
    if any(s["logprob"] is not None for s in samples):
        return [math.exp(float(s["logprob"])) if s["logprob"] is not None else 0.0 for s in samples]
    return None


def curves(store: Store, *, subsets: int = 200, seed: int = 0, resamples: int = 1000,
           methods: Sequence[str] = METHODS, configs: Sequence[str] | None = None) -> list[Curve]:
    """Subsampled curves (see module docstring) of every configuration with samples."""
    out: list[Curve] = []
    for cfg in store.configs():
        cid = cfg["config_id"]
        if configs is not None and cid not in configs and cfg["label"] not in configs:
            continue
        rows = {(r["seed"], r["problem_id"]): r for r in store.results(cid) if r["correct"] is not None}
        groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for s in store.samples(cid):
            if (s["seed"], s["problem_id"]) in rows:
                groups[(s["seed"], s["problem_id"])].append(s)
        sizes = [len(groups.get(key, [])) for key in rows]
        if not rows or not any(sizes):
            continue
        n_max = min(x for x in sizes if x > 0)
        any_weights = any(_weights(g) is not None for g in groups.values())
        rng = np.random.default_rng(seed)
        per: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
        tok: dict[str, list[np.ndarray]] = defaultdict(list)
        ns = np.arange(1, n_max + 1)
        for key in sorted(rows):
            row, samples = rows[key], groups.get(key, [])
            pid = key[1]
            if not samples:  # a failed problem: wrong at every n, its tokens spent
                zero = np.zeros(n_max)
                for m in methods:
                    per[m][pid].append(zero)
                tok[pid].append(np.full(n_max, float((row["prompt_tokens"] or 0) + (row["completion_tokens"] or 0))))
                continue
            codes: dict[str, int] = {}
            keys, key_correct = [], []
            for s in samples:
                if s["key"] is None or s["key"] == "":
                    keys.append(-1)
                    continue
                if s["key"] not in codes:
                    codes[s["key"]] = len(codes)
                    key_correct.append(bool(s["correct"]))
                keys.append(codes[s["key"]])
            weights = _weights(samples)
            sub = subsample_problem(keys, key_correct, weights, n_max, subsets, rng)
            c = sum(1 for s in samples if s["correct"])
            for m in methods:
                if m == "pass@k":
                    per[m][pid].append(np.array([pass_at_k(len(samples), c, int(k)) for k in ns]))
                elif m in sub:
                    per[m][pid].append(sub[m])
                elif any_weights:
                    per[m][pid].append(sub["majority"])  # no weights on this problem: weights all equal
            mean_tokens = sum(float(s["tokens"] or 0) for s in samples) / len(samples)
            tok[pid].append(float(row["prompt_tokens"] or 0) + ns * mean_tokens)
        pids = sorted(tok)
        tokens = np.array([np.mean(tok[p], axis=0) for p in pids])
        for m in methods:
            if not per[m] or len(per[m]) != len(pids):
                continue
            mat = np.array([np.mean(per[m][p], axis=0) for p in pids])
            cis = [bootstrap_ci(mat[:, j].tolist(), resamples=resamples, seed=seed) for j in range(n_max)]
            out.append(Curve(config_id=cid, label=cfg["label"], method=m, n=[int(x) for x in ns],
                             accuracy=[float(x) for x in mat.mean(axis=0)], ci_low=[c[1] for c in cis],
                             ci_high=[c[2] for c in cis], tokens=[float(x) for x in tokens.mean(axis=0)],
                             problem_ids=pids, per_problem=mat, per_problem_tokens=tokens))
    return out


# ------------------------------------------------------------------------------------ Pareto


def pareto_frontier(points: Sequence[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points not dominated by another (fewer or equal tokens with higher accuracy), by tokens."""
    best = -math.inf
    out = []
    for x, y, tag in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            out.append((x, y, tag))
            best = y
    return out


# ------------------------------------------------------------------------------------ comparisons


@dataclass
class ConfigComparison:
    """Accuracy of ``b`` minus ``a`` over the (problem, seed) pairs both scored."""

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    pairs: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def significant_drop(self) -> bool:
        """``b`` is worse than ``a`` beyond the interval (the quantization check's flag)."""
        return self.ci_high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant, "significant_drop": self.significant_drop}


def _config_by_label(store: Store, label: str) -> dict[str, Any]:
    from tts.errors import ConfigError

    cfgs = store.configs()
    for c in cfgs:
        if label in (c["label"], c["config_id"]):
            return c
    raise ConfigError(f"comparison names {label!r}, which is not a configuration of this study "
                      f"({', '.join(c['label'] for c in cfgs)}); fix the label.")


def compare_configs(store: Store, a: str, b: str, *, seed: int = 0, resamples: int = 2000) -> ConfigComparison:
    """Paired comparison of two configurations (labels or ids) with a paired-bootstrap 95% interval."""
    ca, cb = _config_by_label(store, a), _config_by_label(store, b)
    ra = {(r["seed"], r["problem_id"]): r["correct"] for r in store.results(ca["config_id"])}
    rb = {(r["seed"], r["problem_id"]): r["correct"] for r in store.results(cb["config_id"])}
    keys = sorted(k for k in ra if k in rb and ra[k] is not None and rb[k] is not None)
    xa = [float(ra[k]) for k in keys]
    xb = [float(rb[k]) for k in keys]
    if not keys:
        nan = float("nan")
        return ConfigComparison(ca["label"], cb["label"], nan, nan, nan, nan, nan, 0)
    diff, lo, hi = paired_bootstrap(xa, xb, seed=seed, resamples=resamples)
    return ConfigComparison(ca["label"], cb["label"], sum(xa) / len(xa), sum(xb) / len(xb), diff, lo, hi, len(keys))


# ------------------------------------------------------------------------------------ sweeps


def temperature_sweep(metrics: Sequence[ConfigMetrics]) -> dict[str, list[tuple[float, ConfigMetrics]]]:
    """Configurations of a temperature sweep, by pipeline (and budget): (temperature, metrics) pairs
    sorted by temperature. Empty when the study swept no ``...temperature`` key."""
    out: dict[str, list[tuple[float, ConfigMetrics]]] = defaultdict(list)
    for m in metrics:
        temps = [v for k, v in m.sweep.items() if k.endswith("temperature")]
        if temps:
            others = {k: v for k, v in m.sweep.items() if not k.endswith("temperature")}
            group = m.pipeline + (f" n={m.budget}" if m.budget is not None else "") + \
                "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(others.items()))
            out[group].append((float(temps[0]), m))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items() if len(v) > 1}


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
        acc = _per_problem_accuracy(rows)
        tk: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            tk[r["problem_id"]].append(float((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)))
        opts.append(_Option(cfg["label"], cfg["config_id"], None, acc, {k: sum(v) / len(v) for k, v in tk.items()}))
    for c in curve_list:
        if c.method == "pass@k":
            continue  # needs the labels: not a selection rule
        for j, n in enumerate(c.n):
            opts.append(_Option(f"{c.label} {c.method}@{n}", c.config_id, n,
                                {p: float(c.per_problem[i, j]) for i, p in enumerate(c.problem_ids)},
                                {p: float(c.per_problem_tokens[i, j]) for i, p in enumerate(c.problem_ids)}))
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


def compute_optimal_allocation(store: Store, curve_list: Sequence[Curve] | None = None, *,
                               pilot: str | None = None, pilot_samples: int = 4, bins: int = 3,
                               seed: int = 0, resamples: int = 2000) -> Allocation | None:
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
        pilot_cfg = _config_by_label(store, pilot)
    else:  # the most accurate configuration on the fitting half among those with enough samples
        def fit_accuracy(c: dict[str, Any]) -> float:
            acc = _per_problem_accuracy(store.results(c["config_id"]))
            ids = sorted(acc)
            fit_ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[:len(ids) // 2]]
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
    for p, ss in by_problem.items():
        head = sorted(ss, key=lambda s: s["idx"])[:pilot_samples]
        difficulty[p] = agreement([s["key"] for s in head])[0] or 0.0
        pilot_cost[p] = float(pilot_rows[p]["prompt_tokens"] or 0) + sum(float(s["tokens"] or 0) for s in head)

    # options that ran every pilot problem (configurations on other datasets drop out)
    options = [o for o in _options(store, curve_list) if all(p in o.acc and p in o.tokens for p in difficulty)]
    problems = sorted(difficulty)
    if len(problems) < 4 or not options:
        return None
    order = np.random.default_rng(seed).permutation(len(problems))
    half = len(problems) // 2
    fit = [problems[i] for i in order[:half]]
    held = [problems[i] for i in order[half:]]
    qs: list[float] = np.quantile([difficulty[p] for p in fit], np.linspace(0, 1, bins + 1)[1:-1]).tolist() \
        if bins > 1 else []
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
        cand = [(w * float(np.mean([cost(o, p) for p in members])), w * float(np.mean([o.acc[p] for p in members])),
                 i) for i, o in enumerate(options)]
        per_bin.append([(c, v, int(i)) for c, v, i in pareto_frontier(cand)])
    frontier = _combine_frontiers(per_bin)
    singles = pareto_frontier([(float(np.mean([o.tokens[p] for p in fit])), float(np.mean([o.acc[p] for p in fit])), i)
                               for i, o in enumerate(options)])
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
        rows.append(AllocationRow(
            budget_tokens=budget, choice=[options[i].label for i in choice], fit_accuracy=fit_value,
            eval_accuracy=float(np.mean(alloc)),
            eval_tokens=float(np.mean([cost(o, p) for o, p in zip(chosen, held, strict=True)])),
            single=single.label, single_eval_accuracy=float(np.mean(base)),
            single_eval_tokens=float(np.mean([single.tokens[p] for p in held])), gain=gain, gain_ci=(lo, hi)))
    return Allocation(pilot=pilot_cfg["label"], pilot_samples=pilot_samples, bin_edges=edges, fit_problems=len(fit),
                      eval_problems=len(held), rows=rows)
