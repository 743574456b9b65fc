"""The study report: PNG plots and one self-contained HTML page (tables, images as base64).

Plots (matplotlib, Agg backend, imported only here):

- ``accuracy_tokens.png``: accuracy against tokens per problem — every configuration as run
  (with its 95% interval), the subsampled majority-vote curves, and the Pareto frontier;
- ``accuracy_n.png``: accuracy against n for each selection method (majority, weighted vote,
  best-of-N, pass@k), one line per configuration, 95% bands;
- ``temperature.png``: accuracy and answer diversity against temperature (studies that sweep a
  ``...temperature`` key);
- ``latency.png``: per-problem latency distributions.

Every number on the page is computed from the SQLite store by :mod:`tts.study.analysis`,
:mod:`tts.study.curves` and :mod:`tts.study.allocation`; table cells
carry ``data-config`` and ``data-metric`` attributes so tools (and the tests) can read them back.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tts.errors import ConfigError
from tts.study.allocation import Allocation, compute_optimal_allocation
from tts.study.analysis import (
    ConfigComparison,
    ConfigMetrics,
    answered_latencies,
    compare_configs,
    compute_metrics,
    metric_warnings,
    pareto_frontier,
    temperature_sweep,
)
from tts.study.curves import Curve, curves
from tts.study.store import Store

if TYPE_CHECKING:
    from tts.backends.base import Pricing

__all__ = ["ReportData", "build_report_data", "write_report"]

log = logging.getLogger(__name__)

PLOT_HINT = "pip install 'tts-scale[plot]'"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            f"tts-scale report draws its plots with matplotlib, which is not installed: {PLOT_HINT}"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class ReportData:
    """What the report shows, computed from the store."""

    name: str
    metrics: list[ConfigMetrics]
    curves: list[Curve]
    comparisons: list[ConfigComparison]
    allocation: Allocation | None
    sweeps: dict[str, list[tuple[float, ConfigMetrics]]]
    latencies: dict[str, list[float]]
    manifest: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Configurations whose accuracy measures a limit (:func:`~tts.study.analysis.metric_warnings`)."""


def build_report_data(
    store: Store, *, pricing: Pricing | None = None, manifest: dict[str, Any] | None = None
) -> ReportData:
    """Metrics, curves, comparisons, allocation and sweeps of a study's store (options from the
    study spec recorded in the store); ``pricing`` re-prices the stored token counts."""
    spec = store.meta("study", {}) or {}
    metrics = compute_metrics(store, pricing)
    curve_opts = spec.get("curves") or {}
    curve_list = curves(store, subsets=int(curve_opts.get("subsets", 200)), seed=int(curve_opts.get("seed", 0)))
    comparisons = [compare_configs(store, c["a"], c["b"]) for c in spec.get("comparisons") or []]
    alloc = None
    alloc_opts = spec.get("allocation", {})
    if alloc_opts is not None:
        try:
            alloc = compute_optimal_allocation(
                store,
                curve_list,
                pilot=alloc_opts.get("pilot"),
                pilot_samples=int(alloc_opts.get("pilot_samples", 4)),
                bins=int(alloc_opts.get("bins", 3)),
                seed=int(alloc_opts.get("seed", 0)),
            )
        except ConfigError:
            raise
        except Exception as exc:  # analysis extras must not sink the report
            log.warning("compute-optimal allocation skipped: %s", exc)
    latencies = {m.label: answered_latencies(store.results(m.config_id)) for m in metrics}
    return ReportData(
        name=str(spec.get("name", store.path.parent.name)),
        metrics=metrics,
        curves=curve_list,
        comparisons=comparisons,
        allocation=alloc,
        sweeps=temperature_sweep(metrics),
        latencies=latencies,
        manifest=manifest or {},
        warnings=metric_warnings(metrics),
    )


# ------------------------------------------------------------------------------------ plots


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_accuracy_tokens(data: ReportData, path: Path) -> Path:
    """One panel per dataset (a frontier across datasets would compare unlike problems)."""
    plt = _pyplot()
    datasets = list(dict.fromkeys(m.dataset for m in data.metrics)) or [""]
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets) ** 0.75 + 0.5, 5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {m.config_id: colors[i % len(colors)] for i, m in enumerate(data.metrics)}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        points: list[tuple[float, float, str]] = []
        ids = set()
        for m in data.metrics:
            if m.dataset != dataset or m.accuracy is None:
                continue
            ids.add(m.config_id)
            yerr = [[m.accuracy - (m.ci_low or m.accuracy)], [(m.ci_high or m.accuracy) - m.accuracy]]
            ax.errorbar(
                [max(m.total_tokens, 1e-9)],
                [m.accuracy],
                yerr=yerr,
                fmt="o",
                color=color_of[m.config_id],
                capsize=3,
                label=m.label,
            )
            points.append((m.total_tokens, m.accuracy, m.label))
        for c in data.curves:
            if c.method != "majority" or len(c.n) < 2 or c.config_id not in ids:
                continue
            ax.plot(c.tokens, c.accuracy, "-", color=color_of[c.config_id], alpha=0.6, linewidth=1.2)
            points += [(t, a, f"{c.label} maj@{n}") for t, a, n in zip(c.tokens, c.accuracy, c.n, strict=True)]
        front = pareto_frontier([p for p in points if p[0] > 0])
        if front:
            ax.step(
                [p[0] for p in front],
                [p[1] for p in front],
                where="post",
                color="black",
                linestyle="--",
                linewidth=1.5,
                label="Pareto frontier",
            )
        if points and all(p[0] > 0 for p in points):
            ax.set_xscale("log")
        ax.set_xlabel("generation tokens per problem (prompt + completion; verifier tokens apart)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{dataset}: accuracy against compute" if dataset else "accuracy against compute", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Points: configurations as run (95% CI); lines: majority vote over n subsampled samples", fontsize=9)
    return _save(fig, path)


def plot_accuracy_n(data: ReportData, path: Path) -> Path | None:
    methods = [
        m
        for m in ("majority", "weighted", "best_of_n", "pass@k")
        if any(c.method == m and len(c.n) > 1 for c in data.curves)
    ]
    if not methods:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        for c in data.curves:
            if c.method != method or len(c.n) < 2:
                continue
            (line,) = ax.plot(c.n, c.accuracy, marker=".", label=c.label)
            ax.fill_between(c.n, c.ci_low, c.ci_high, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (samples)")
        ax.set_title({"best_of_n": "best-of-N", "pass@k": "pass@k (oracle)"}.get(method, method + " vote"))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_temperature(data: ReportData, path: Path) -> Path | None:
    if not data.sweeps:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    for group, pts in data.sweeps.items():
        ts = [t for t, _ in pts]
        scored = [(t, m.accuracy, m.ci_low, m.ci_high) for t, m in pts if m.accuracy is not None]
        ax1.errorbar(
            [t for t, *_ in scored],
            [a for _, a, _, _ in scored],
            yerr=[[a - (lo or a) for _, a, lo, _ in scored], [(hi or a) - a for _, a, _, hi in scored]],
            marker="o",
            capsize=3,
            label=group,
        )
        ax2.plot(ts, [m.diversity for _, m in pts], marker="o", label=group)
    ax1.set_xlabel("temperature")
    ax1.set_ylabel("accuracy")
    ax2.set_xlabel("temperature")
    ax2.set_ylabel("distinct answers per sample")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax1.set_title("Accuracy")
    ax2.set_title("Answer diversity")
    return _save(fig, path)


def plot_latency(data: ReportData, path: Path) -> Path | None:
    """Box plots with every problem's latency drawn over them (jittered), one row per configuration."""
    labels = [k for k, v in data.latencies.items() if v]
    if not labels:
        return None
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.6))
    values = [data.latencies[k] for k in labels]
    ax.boxplot(values, vert=False, showfliers=False, widths=0.6)
    rng = np.random.default_rng(0)
    for i, v in enumerate(values, start=1):
        ax.scatter(v, i + rng.uniform(-0.18, 0.18, len(v)), s=6, alpha=0.5, color="tab:blue")
    ax.set_yticks(range(1, len(labels) + 1))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("latency per problem, queueing included (s; virtual seconds on the fake backend)")
    ax.set_title("Latency distributions")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


# ------------------------------------------------------------------------------------ HTML


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _cell(value: Any, config: str = "", metric: str = "", digits: int = 4) -> str:
    attrs = (f' data-config="{html.escape(config)}"' if config else "") + (
        f' data-metric="{html.escape(metric)}"' if metric else ""
    )
    return f"<td{attrs}>{_fmt(value, digits)}</td>"


_METRIC_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("accuracy", "accuracy", 4),
    ("ci_low", "CI low", 4),
    ("ci_high", "CI high", 4),
    ("accuracy_answered", "accuracy over answered", 4),
    ("problems", "problems", 0),
    ("rows", "rows", 0),
    ("prompt_tokens", "prompt tok.", 1),
    ("cached_prompt_tokens", "cached tok.", 1),
    ("completion_tokens", "completion tok.", 1),
    ("total_tokens", "generation tok.", 1),
    ("verifier_tokens", "verifier tok.", 1),
    ("all_tokens", "all tok.", 1),
    ("calls", "calls", 2),
    ("verifier_calls", "verifier calls", 2),
    ("samples", "samples", 2),
    ("latency_p50", "P50 latency", 4),
    ("latency_p95", "P95 latency", 4),
    ("throughput", "problems/s", 3),
    ("failure_rate", "failures", 4),
    ("timeout_rate", "timeouts", 4),
    ("cut_rate", "cut by budget", 4),
    ("truncated_rate", "hit token limit", 4),
    ("empty_rate", "empty answers", 4),
    ("peak_rss_mb", "peak RSS MB", 1),
    ("kv_cache", "KV cache", 3),
    ("consistency", "consistency", 4),
    ("diversity", "diversity", 4),
    ("readability", "readability", 2),
    ("cost_usd", "USD/problem", 6),
)


def _metrics_table(metrics: Sequence[ConfigMetrics]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in _METRIC_COLUMNS)
    rows = []
    for m in metrics:
        d = m.to_dict()
        cells = "".join(_cell(d[k], m.config_id, k, digits) for k, _, digits in _METRIC_COLUMNS)
        rows.append(f'<tr><th class="label" data-config="{m.config_id}">{html.escape(m.label)}</th>{cells}</tr>')
    return f"<table><tr><th>configuration</th>{head}</tr>{''.join(rows)}</table>"


def _curve_points(n: Sequence[int]) -> list[int]:
    top = max(n)
    pts = [k for k in n if k & (k - 1) == 0] + [top]
    return sorted(set(pts))


def _curves_table(curve_list: Sequence[Curve]) -> str:
    by: dict[str, dict[str, Curve]] = {}
    for c in curve_list:
        if len(c.n) > 1:
            by.setdefault(c.config_id, {})[c.method] = c
    parts = []
    for cid, methods in by.items():
        first = next(iter(methods.values()))
        names = list(methods)
        head = "".join(f"<th>{html.escape(m)}</th>" for m in names)
        rows = []
        for n in _curve_points(first.n):
            j = first.n.index(n)
            cells = "".join(_cell(methods[m].accuracy[j], cid, f"curve:{m}:{n}") for m in names)
            rows.append(f"<tr><td>{n}</td>{_cell(first.tokens[j], cid, f'curve:tokens:{n}', 1)}{cells}</tr>")
        parts.append(
            f"<h3>{html.escape(first.label)}</h3><table><tr><th>n</th><th>tokens/problem</th>{head}</tr>"
            f"{''.join(rows)}</table>"
        )
    return "".join(parts) or "<p>No configuration recorded more than one sample per problem.</p>"


def _comparisons_table(comps: Sequence[ConfigComparison], warned: Sequence[str] = ()) -> str:
    if not comps:
        return "<p>No comparisons configured (add <code>comparisons: [{a: LABEL, b: LABEL}]</code>).</p>"
    rows = []
    for c in comps:
        key = f"{c.a}|{c.b}"
        flag = "<b>significant drop</b>" if c.significant_drop else ("significant" if c.significant else "—")
        caveat = [label for label in (c.a, c.b) if label in warned]
        if caveat:
            flag += f" (see warnings: {html.escape(', '.join(caveat))})"
        rows.append(
            f"<tr><td>{html.escape(c.a)}</td><td>{html.escape(c.b)}</td>"
            f"{_cell(c.accuracy_a, key, 'accuracy_a')}{_cell(c.accuracy_b, key, 'accuracy_b')}"
            f"{_cell(c.difference, key, 'difference')}{_cell(c.ci_low, key, 'ci_low')}"
            f"{_cell(c.ci_high, key, 'ci_high')}{_cell(c.pairs, key, 'pairs')}<td>{flag}</td></tr>"
        )
    return (
        "<table><tr><th>a</th><th>b</th><th>accuracy a</th><th>accuracy b</th><th>b − a</th><th>CI low</th>"
        f"<th>CI high</th><th>pairs</th><th>flag</th></tr>{''.join(rows)}</table>"
    )


def _allocation_table(alloc: Allocation | None) -> str:
    if alloc is None or not alloc.rows:
        return (
            "<p>No allocation: it needs a configuration with at least <code>pilot_samples</code> samples per "
            "problem and several problems.</p>"
        )
    rows = []
    for r in alloc.rows:
        rows.append(
            f"<tr>{_cell(r.budget_tokens, digits=1)}<td>{'<br>'.join(html.escape(c) for c in r.choice)}</td>"
            f"{_cell(r.eval_accuracy)}{_cell(r.eval_tokens, digits=1)}<td>{html.escape(r.single)}</td>"
            f"{_cell(r.single_eval_accuracy)}{_cell(r.single_eval_tokens, digits=1)}{_cell(r.gain)}"
            f"<td>[{_fmt(r.gain_ci[0])}, {_fmt(r.gain_ci[1])}]</td></tr>"
        )
    edges = ", ".join(f"{e:.2f}" for e in alloc.bin_edges) or "none"
    return (
        f"<p>Difficulty: agreement among the first {alloc.pilot_samples} samples of "
        f"<b>{html.escape(alloc.pilot)}</b>; bin edges {edges}; fitted on {alloc.fit_problems} problems, "
        f"evaluated on {alloc.eval_problems}. Choices are per bin, hardest (lowest agreement) first.</p>"
        "<table><tr><th>budget tok.</th><th>choice per bin</th><th>accuracy</th><th>tokens</th>"
        "<th>best single</th><th>accuracy</th><th>tokens</th><th>gain</th><th>gain 95% CI</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _sweep_table(sweeps: dict[str, list[tuple[float, ConfigMetrics]]]) -> str:
    rows = []
    for group, pts in sweeps.items():
        for t, m in pts:
            rows.append(
                f"<tr><td>{html.escape(group)}</td><td>{t:g}</td>{_cell(m.accuracy, m.config_id, 'accuracy')}"
                f"{_cell(m.diversity, m.config_id, 'diversity')}"
                f"{_cell(m.consistency, m.config_id, 'consistency')}</tr>"
            )
    return (
        "<table><tr><th>pipeline</th><th>temperature</th><th>accuracy</th><th>diversity</th>"
        f"<th>consistency</th></tr>{''.join(rows)}</table>"
    )


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>'
        f"{html.escape(alt)}</figcaption></figure>"
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:right}th.label,td:first-child{text-align:left}th{background:#f3f3f3}figure{margin:1em 0}
img{max-width:100%}code{background:#f3f3f3;padding:0 3px}.meta{font-size:12px;color:#555}
.warnings{border-left:4px solid #c60;padding:0 1em;background:#fff6ec}"""


def render_html(data: ReportData, images: dict[str, Path | None]) -> str:
    man = data.manifest
    meta = ""
    if man:
        pk = ", ".join(f"{k} {v}" for k, v in (man.get("packages") or {}).items())
        git = man.get("git") or {}
        models = "; ".join(
            f"{m.get('backend')}: {m.get('model')}" + (f" (sha256 {m['sha256'][:12]})" if m.get("sha256") else "")
            for m in man.get("models") or []
        )
        commit = html.escape(str(git.get("commit", "n/a"))[:12]) + (" (dirty)" if git.get("dirty") else "")
        meta = (
            f"<p class='meta'>seeds {html.escape(json.dumps(man.get('seeds')))}; git {commit}; "
            f"models: {html.escape(models or 'n/a')}<br>packages: {html.escape(pk)}</p>"
        )
    warned = [m.label for m in data.metrics if any(w.startswith(f"{m.label}: ") for w in data.warnings)]
    warnings = (
        "<div class='warnings'><h2>Warnings</h2><ul>"
        + "".join(f"<li data-warning>{html.escape(w)}</li>" for w in data.warnings)
        + "</ul></div>"
        if data.warnings
        else ""
    )
    sweep_img = _img(images.get("temperature"), "accuracy and diversity against temperature")
    sweep = f"<h2>Temperature sweep</h2>{sweep_img}{_sweep_table(data.sweeps)}" if data.sweeps else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tts-scale study: {html.escape(data.name)}</title>
<style>{_CSS}</style></head><body>
<h1>Study: {html.escape(data.name)}</h1>{meta}{warnings}
<h2>Configurations</h2>
<p>Accuracy with 95% bootstrap intervals over problems (seeds averaged per problem; a failed or timed-out problem
counts as wrong; "accuracy over answered" leaves those out); generation tokens, verifier tokens (a judge's own
requests), calls and samples per problem; latency in seconds (answered problems, from their first request);
throughput in problems per second of wall time; failure, timeout, cut and token-limit rates.</p>
{_metrics_table(data.metrics)}
<h2>Accuracy against compute</h2>{_img(images.get("accuracy_tokens"), "accuracy against tokens, Pareto frontier")}
<h2>Scaling curves (subsampled from one generation pass)</h2>{_img(images.get("accuracy_n"), "accuracy against n")}
{_curves_table(data.curves)}
<h2>Comparisons (paired bootstrap)</h2>{_comparisons_table(data.comparisons, warned)}
<h2>Compute-optimal allocation</h2>{_allocation_table(data.allocation)}
{sweep}
<h2>Latency</h2>{_img(images.get("latency"), "latency distributions")}
</body></html>
"""


@dataclass
class ReportFiles:
    html: Path
    images: dict[str, Path] = field(default_factory=dict)


def write_report(
    out: str | Path, *, html_path: str | Path | None = None, pricing: Pricing | None = None
) -> ReportFiles:
    """Plots into ``OUT/plots/`` and ``OUT/report.html`` from a study folder (or its SQLite file)."""
    plt = _pyplot()  # fail early, before any work, when matplotlib is missing
    del plt
    path = Path(out)
    db = path / "results.sqlite" if path.is_dir() else path
    folder = db.parent
    manifest: dict[str, Any] = {}
    if (folder / "manifest.json").is_file():
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    with Store(db, readonly=True) as store:
        data = build_report_data(store, pricing=pricing, manifest=manifest)
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    images: dict[str, Path | None] = {
        "accuracy_tokens": plot_accuracy_tokens(data, plots / "accuracy_tokens.png"),
        "accuracy_n": plot_accuracy_n(data, plots / "accuracy_n.png"),
        "temperature": plot_temperature(data, plots / "temperature.png"),
        "latency": plot_latency(data, plots / "latency.png"),
    }
    target = Path(html_path) if html_path is not None else folder / "report.html"
    target.write_text(render_html(data, images), encoding="utf-8")
    return ReportFiles(html=target, images={k: v for k, v in images.items() if v is not None})
