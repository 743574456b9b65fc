"""Analysis of a study's store: metrics per configuration, paired comparisons, temperature sweeps,
the Pareto frontier and the readability and agreement measures recorded per result.

Everything here is a pure function of the SQLite store (:class:`tts.study.store.Store`), so a
report recomputed from the same store shows the same numbers. Curves over n are in
:mod:`tts.study.curves`, the compute-optimal allocation in :mod:`tts.study.allocation`.

**Failures.** A failed or timed-out problem counts as wrong in accuracy (and so in comparisons,
curves and the allocation); ``accuracy_answered`` is the accuracy over the answered problems only,
named apart because it flatters a configuration that fails. ``failure_rate``, ``timeout_rate`` and
``cut_rate`` (answered, cut short by a budget: the answer counts) are always reported, and
``truncated_rate`` (samples that stopped at the token limit): :func:`metric_warnings` flags a
configuration where most did, or where problems failed, since its accuracy then measures the limit.

**Tokens and cost.** Generation tokens (``prompt_tokens``, ``completion_tokens``, ``total_tokens``)
are the strategy's; a verifier's own engine requests (an LLM judge) are counted apart as
``verifier_prompt_tokens`` and ``verifier_completion_tokens``; ``all_tokens`` is both. Each result
row carries the US dollars its problem spent, verifier requests included, charged by the scheduler
from the backend's ``pricing`` (:class:`tts.backends.base.Pricing`; NULL without pricing). A report
may price a study afterwards with a :class:`~tts.backends.base.Pricing` of its own (the same prices
applied to the stored token counts, verifier tokens included).

Latency percentiles and throughput come from :mod:`tts.metrics`, the one place they are computed.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tts.metrics import latency_stats, throughput
from tts.stats import bootstrap_ci, paired_bootstrap
from tts.study.store import FAILED, Store, status_of

if TYPE_CHECKING:
    from tts.backends.base import Pricing

__all__ = [
    "ConfigComparison",
    "ConfigMetrics",
    "agreement",
    "answered_latencies",
    "compare_configs",
    "compute_metrics",
    "config_by_label",
    "correct_of",
    "count_syllables",
    "flesch_reading_ease",
    "metric_warnings",
    "pareto_frontier",
    "per_problem_accuracy",
    "status_of",
    "temperature_sweep",
]


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


@dataclass
class ConfigMetrics:
    """Aggregates of one configuration over its problems and seeds (token counts per problem)."""

    config_id: str
    label: str
    pipeline: str
    dataset: str
    n_value: Any
    """The study's ``n_values`` entry of this configuration (``None``: none applied)."""
    sweep: dict[str, Any]
    rows: int
    problems: int
    scored: int
    accuracy: float | None
    """Correct over every scored problem: failed and timed-out problems count as wrong."""
    ci_low: float | None
    ci_high: float | None
    accuracy_answered: float | None
    """Accuracy over the answered problems only (failed and timed-out left out): not the headline."""
    prompt_tokens: float
    cached_prompt_tokens: float
    completion_tokens: float
    total_tokens: float
    """Generation tokens (prompt + completion) per problem; verifier tokens are apart."""
    calls: float
    verifier_calls: float
    """Candidates judged per problem (one per candidate per verifier)."""
    verifier_prompt_tokens: float
    verifier_completion_tokens: float
    verifier_tokens: float
    """A verifier's own engine tokens per problem (an LLM judge; 0 for rule-based verifiers)."""
    all_tokens: float
    """Generation and verifier tokens per problem."""
    samples: float
    latency_p50: float | None
    latency_p95: float | None
    throughput: float | None
    """Problems per second of wall time (all sessions of the configuration)."""
    failure_rate: float
    timeout_rate: float
    cut_rate: float
    """Problems a budget cut short (answered with the best so far)."""
    truncated_rate: float | None
    """Samples that stopped at the token limit (``finish_reason`` ``length``)."""
    truncated_unanswered: float | None
    """Of those, the share with no answer extracted (cut off before the answer)."""
    empty_rate: float
    """Answered problems whose answer is missing or empty."""
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
    """Per problem: charged from the backend's ``pricing`` (or the report's); ``None`` without pricing."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def answered_latencies(rows: Iterable[dict[str, Any]]) -> list[float]:
    """Per-problem latencies of the answered rows (``ok`` and ``cut``): what P50/P95 are over."""
    return [float(r["latency"]) for r in rows if status_of(r) not in FAILED and r["latency"] is not None]


def _cost(rows: Sequence[dict[str, Any]], pricing: Pricing | None) -> float | None:
    """Mean USD per problem: ``pricing`` applied to the token counts (verifier tokens included),
    else the charged cost."""
    if not rows:
        return None
    if pricing is not None:
        costs = [
            pricing.cost(
                int(r["prompt_tokens"] or 0) + int(r.get("verifier_prompt_tokens") or 0),
                int(r["cached_prompt_tokens"] or 0),
                int(r["completion_tokens"] or 0) + int(r.get("verifier_completion_tokens") or 0),
            )
            for r in rows
        ]
    else:
        charged = [r.get("cost") for r in rows]
        if any(c is None for c in charged):
            return None
        costs = [float(c) for c in charged if c is not None]
    return sum(costs) / len(costs)


def correct_of(row: dict[str, Any]) -> float | None:
    """A row's correctness: a failed or timed-out problem with a reference is wrong (0), whatever
    its ``correct`` column says; ``None`` without a reference."""
    if status_of(row) in FAILED and row.get("reference") is not None:
        return 0.0
    return None if row["correct"] is None else float(row["correct"])


def per_problem_accuracy(rows: Sequence[dict[str, Any]], *, answered: bool = False) -> dict[str, float]:
    """Mean correctness of each problem over its seeds (rows without a reference left out; failed
    ones count as wrong); ``answered``: over the answered rows only."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if answered and status_of(r) in FAILED:
            continue
        c = correct_of(r)
        if c is not None:
            by[r["problem_id"]].append(c)
    return {pid: sum(v) / len(v) for pid, v in by.items()}


def metric_warnings(metrics: Sequence[ConfigMetrics], *, truncated: float = 0.5) -> list[str]:
    """One line per configuration whose accuracy measures a limit rather than the strategy: more
    than ``truncated`` of its samples stopped at the token limit, or problems failed or timed out."""
    out = []
    for m in metrics:
        if m.truncated_rate is not None and m.truncated_rate > truncated:
            out.append(
                f"{m.label}: {m.truncated_rate:.0%} of samples stopped at the token limit (finish_reason "
                f"'length'), {m.truncated_unanswered or 0:.0%} of those before any answer; its accuracy may "
                "measure max_tokens: raise it before comparing."
            )
        failed = m.failure_rate + m.timeout_rate
        if failed > 0:
            out.append(
                f"{m.label}: {failed:.0%} of problems failed or timed out (counted as wrong; accuracy over "
                f"answered {_pct(m.accuracy_answered)}); rerun the study to retry them."
            )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def compute_metrics(store: Store, pricing: Pricing | None = None, *, resamples: int = 2000) -> list[ConfigMetrics]:
    """One :class:`ConfigMetrics` per configuration, in study order; ``pricing`` re-prices the stored
    token counts (default: the cost charged while the study ran)."""
    out = []
    for cfg in store.configs():
        rows = store.results(cfg["config_id"])
        runs = store.runs(cfg["config_id"])
        n = max(len(rows), 1)
        per_problem = per_problem_accuracy(rows)
        acc = lo = hi = None
        if per_problem:
            values = [per_problem[k] for k in sorted(per_problem)]
            acc, lo, hi = bootstrap_ci(values, resamples=resamples)
        answered = per_problem_accuracy(rows, answered=True)
        length, cut_blank, drawn = store.truncation(cfg["config_id"])

        def mean_of(col: str, rows: list[dict[str, Any]] = rows) -> float:
            return sum(float(r.get(col) or 0) for r in rows) / max(len(rows), 1)

        statuses = Counter(status_of(r) for r in rows)
        latency = latency_stats(answered_latencies(rows))
        wall = sum(float(r["wall"] or 0) for r in runs)
        finished = sum(int(r["problems"] or 0) for r in runs)
        rss = [r["peak_rss_kb"] for r in runs if r["peak_rss_kb"]]
        kv = [r["kv_cache"] for r in runs if r["kv_cache"] is not None]
        prompt, cached, completion = (
            mean_of("prompt_tokens"),
            mean_of("cached_prompt_tokens"),
            mean_of("completion_tokens"),
        )
        v_prompt, v_completion = mean_of("verifier_prompt_tokens"), mean_of("verifier_completion_tokens")
        answered_rows = [r for r in rows if status_of(r) not in FAILED]
        out.append(
            ConfigMetrics(
                config_id=cfg["config_id"],
                label=cfg["label"],
                pipeline=cfg["pipeline"],
                dataset=str((cfg["spec"].get("dataset") or {}).get("name", "")),
                n_value=cfg["n_value"],
                sweep=cfg["sweep"],
                rows=len(rows),
                problems=len({r["problem_id"] for r in rows}),
                scored=sum(1 for r in rows if r["correct"] is not None),
                accuracy=acc,
                ci_low=lo,
                ci_high=hi,
                accuracy_answered=_mean(answered.values()),
                prompt_tokens=prompt,
                cached_prompt_tokens=cached,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                calls=mean_of("calls"),
                verifier_calls=mean_of("verifier_calls"),
                verifier_prompt_tokens=v_prompt,
                verifier_completion_tokens=v_completion,
                verifier_tokens=v_prompt + v_completion,
                all_tokens=prompt + completion + v_prompt + v_completion,
                samples=mean_of("n_samples"),
                latency_p50=_finite(latency.p50),
                latency_p95=_finite(latency.p95),
                throughput=_finite(throughput(finished, wall)) if finished else None,
                failure_rate=statuses["failed"] / n,
                timeout_rate=statuses["timeout"] / n,
                cut_rate=statuses["cut"] / n,
                truncated_rate=length / drawn if drawn else None,
                truncated_unanswered=cut_blank / length if length else None,
                empty_rate=sum(1 for r in answered_rows if not (r["answer"] or "").strip()) / n,
                peak_rss_mb=max(rss) / 1024 if rss else None,
                kv_cache=max(kv) if kv else None,
                consistency=_mean(r["agreement"] for r in rows),
                diversity=_mean(
                    (r["distinct_answers"] / r["n_samples"])
                    if r["n_samples"] and r["distinct_answers"] is not None
                    else None
                    for r in rows
                ),
                readability=_mean(r["readability"] for r in rows),
                cost_usd=_cost(rows, pricing),
            )
        )
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
    """Accuracy of ``b`` minus ``a`` over the (problem, seed) pairs both scored (failed = wrong)."""

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


def config_by_label(store: Store, label: str) -> dict[str, Any]:
    """The configuration with this label (or id); a :class:`~tts.errors.ConfigError` naming the labels."""
    from tts.errors import ConfigError

    cfgs = store.configs()
    for c in cfgs:
        if label in (c["label"], c["config_id"]):
            return c
    raise ConfigError(
        f"comparison names {label!r}, which is not a configuration of this study "
        f"({', '.join(c['label'] for c in cfgs)}); fix the label."
    )


def compare_configs(store: Store, a: str, b: str, *, seed: int = 0, resamples: int = 2000) -> ConfigComparison:
    """Paired comparison of two configurations (labels or ids) with a paired-bootstrap 95% interval."""
    ca, cb = config_by_label(store, a), config_by_label(store, b)
    ra = {(r["seed"], r["problem_id"]): correct_of(r) for r in store.results(ca["config_id"])}
    rb = {(r["seed"], r["problem_id"]): correct_of(r) for r in store.results(cb["config_id"])}
    keys = sorted(k for k in ra if k in rb and ra[k] is not None and rb[k] is not None)
    xa = [float(ra[k] or 0.0) for k in keys]
    xb = [float(rb[k] or 0.0) for k in keys]
    if not keys:
        nan = float("nan")
        return ConfigComparison(ca["label"], cb["label"], nan, nan, nan, nan, nan, 0)
    diff, lo, hi = paired_bootstrap(xa, xb, seed=seed, resamples=resamples)
    return ConfigComparison(ca["label"], cb["label"], sum(xa) / len(xa), sum(xb) / len(xb), diff, lo, hi, len(keys))


# ------------------------------------------------------------------------------------ sweeps


def temperature_sweep(metrics: Sequence[ConfigMetrics]) -> dict[str, list[tuple[float, ConfigMetrics]]]:
    """Configurations of a temperature sweep, by pipeline (and n value): (temperature, metrics) pairs
    sorted by temperature. Empty when the study swept no ``...temperature`` key."""
    out: dict[str, list[tuple[float, ConfigMetrics]]] = defaultdict(list)
    for m in metrics:
        temps = [v for k, v in m.sweep.items() if k.endswith("temperature")]
        if temps:
            others = {k: v for k, v in m.sweep.items() if not k.endswith("temperature")}
            group = (
                m.pipeline
                + (f" n={m.n_value}" if m.n_value is not None else "")
                + "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(others.items()))
            )
            out[group].append((float(temps[0]), m))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items() if len(v) > 1}
