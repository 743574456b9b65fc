"""The CPU demo: what test-time compute buys on a task the model cannot do directly.

The task and sizes are fixed before any result is seen: 30 problems of two-digit addition
(``add2``), which SmolLM2-135M-Instruct does not answer directly. A ladder of strategies runs on
the same problems, each spending more compute:

1. ``greedy``: one argmax answer to the direct prompt;
2. ``self_consistency@8``: 8 samples of the same direct prompt at temperature 0.7, majority vote;
3. ``program_of_thought``: one greedy Python program, run in the sandbox, its output the answer;
4. ``program_of_thought@4``: 4 sampled programs, their executed outputs vote.

Each rung is reported with its accuracy and 95% interval, completion tokens per problem, wall time,
and two paired-bootstrap intervals: against greedy and against the task's best trivial baseline
(:mod:`tts.baselines`: chance, the most frequent answer, always-first). The intervals are reported
whatever they are; where one includes zero, the verdict says "not distinguishable".

:func:`run_demo` runs it (``execute`` lets the CLI add progress bars and an output file);
:func:`summarize` turns reports into a :class:`DemoResult`; :func:`table` and :func:`verdicts`
render it for the CLI (nothing here prints).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tts.baselines import Baseline, baselines
from tts.errors import ConfigError

__all__ = ["DemoPlan", "DemoResult", "Interval", "Rung", "ladder", "run_demo", "summarize", "table", "verdicts"]

DEFAULT_TASK = "add2"
DEFAULT_LIMIT = 30
"""Fixed before any result was seen. The whole ladder took 18 minutes on the shared 2-core CPU
(the voted programs 13 of them); see BENCHMARKS.md."""


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the task, its size and the ladder's settings."""

    task: str = DEFAULT_TASK
    limit: int = DEFAULT_LIMIT
    n: int = 8
    """Self-consistency samples (direct prompt)."""
    program_n: int = 4
    """Programs per problem in the voted program-of-thought rung."""
    seed: int = 0
    max_tokens: int = 24
    """Token limit of the direct answers (greedy and self-consistency)."""
    program_max_tokens: int = 512
    temperature: float = 0.7
    """Sampling temperature of the rungs that sample."""
    backend: str = "hf"
    model: str | None = None

    def __post_init__(self) -> None:
        for name in ("limit", "n", "program_n", "max_tokens", "program_max_tokens"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"demo --{name.replace('_', '-')} must be at least 1, got {value}.")
        if not self.temperature > 0 or math.isinf(self.temperature):
            raise ConfigError(
                f"demo --temperature must be > 0 (the rungs that sample need it), got {self.temperature}."
            )


@dataclass(frozen=True)
class Rung:
    """One strategy of the ladder: its label and its component spec."""

    label: str
    spec: dict[str, Any]


def ladder(plan: DemoPlan) -> list[Rung]:
    """The strategies of the demo, cheapest first (see the module docstring)."""
    direct = {"name": "few_shot", "prompt": "direct"}
    program = {"name": "program_of_thought"}
    return [
        Rung(
            "greedy",
            {"name": "greedy", "proposer": {**direct, "sampling": {"temperature": 0, "max_tokens": plan.max_tokens}}},
        ),
        Rung(
            f"self_consistency@{plan.n}",
            {
                "name": "self_consistency",
                "n": plan.n,
                "proposer": {**direct, "sampling": {"temperature": plan.temperature, "max_tokens": plan.max_tokens}},
            },
        ),
        Rung(
            "program_of_thought",
            {
                "name": "program_of_thought",
                "proposer": {**program, "sampling": {"temperature": 0, "max_tokens": plan.program_max_tokens}},
            },
        ),
        Rung(
            f"program_of_thought@{plan.program_n}",
            {
                "name": "program_of_thought",
                "n": plan.program_n,
                "proposer": {
                    **program,
                    "sampling": {"temperature": plan.temperature, "max_tokens": plan.program_max_tokens},
                },
            },
        ),
    ]


@dataclass(frozen=True)
class Interval:
    """A paired difference (strategy minus the other) and its bootstrap 95% interval."""

    against: str
    difference: float
    low: float
    high: float

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0 <= self.high

    def __str__(self) -> str:
        return f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


@dataclass
class Row:
    """One rung's figures."""

    label: str
    accuracy: float
    ci: tuple[float, float]
    completion_tokens: float
    """Completion tokens per problem."""
    wall_time: float
    failures: int
    vs_greedy: Interval | None
    vs_baseline: Interval | None


@dataclass
class DemoResult:
    """The demo's figures: one row per rung, and the task's trivial baselines."""

    task: str
    problems: int
    rows: list[Row]
    baselines: list[Baseline] = field(default_factory=list)

    @property
    def best_baseline(self) -> Baseline | None:
        return max(self.baselines, key=lambda b: b.accuracy, default=None)


def _correct_by_id(report: Any) -> dict[str, float]:
    return {r.problem.id: float(bool(r.correct)) for r in report.results if r.correct is not None}


def _paired(base: dict[str, float], other: dict[str, float], against: str, seed: int) -> Interval | None:
    from tts.stats import paired_bootstrap

    ids = [i for i in other if i in base]
    if not ids:
        return None
    diff, lo, hi = paired_bootstrap([base[i] for i in ids], [other[i] for i in ids], seed=seed)
    return Interval(against, diff, lo, hi)


def summarize(dataset: Any, reports: Sequence[tuple[str, Any]], *, seed: int = 0) -> DemoResult:
    """Figures of each ``(label, report)`` run on ``dataset``; the first report is the one every
    other is compared with (greedy), and each is compared with the best trivial baseline."""
    found = baselines(dataset.problems, dataset.task)
    best = max(found, key=lambda b: b.accuracy, default=None)
    reference = _correct_by_id(reports[0][1]) if reports else {}
    rows = []
    for i, (label, report) in enumerate(reports):
        s = report.summary()
        correct = _correct_by_id(report)
        rows.append(
            Row(
                label=label,
                accuracy=s.accuracy if s.accuracy is not None else math.nan,
                ci=s.accuracy_ci or (math.nan, math.nan),
                completion_tokens=s.completion_tokens_per_problem,
                wall_time=s.wall_time,
                failures=s.failures,
                vs_greedy=_paired(reference, correct, reports[0][0], seed) if i else None,
                vs_baseline=_paired(best.by_id(), correct, best.name, seed) if best else None,
            )
        )
    return DemoResult(dataset.name, len(dataset.problems), rows, found)


Execute = Callable[[Any, Any, Any, str], Any]
"""``(scheduler, dataset, strategy, label) -> Report``: one run of one rung."""


def _execute(scheduler: Any, dataset: Any, strategy: Any, label: str, *, seed: int) -> Any:
    from tts.runner import arun, run_sync

    return run_sync(
        lambda: arun(strategy, dataset.problems, scheduler, task=dataset.task, concurrency=len(dataset), seed=seed)
    )


def run_demo(plan: DemoPlan, *, backend: Any = None, execute: Execute | None = None) -> DemoResult:
    """Run the ladder of ``plan`` on its problems (``backend``: an engine already built, else
    ``plan.backend``) and summarize it."""
    from tts.config import build_strategy, make_backend
    from tts.datasets import load_dataset
    from tts.runner import as_scheduler

    dataset = load_dataset(plan.task, limit=plan.limit, seed=plan.seed)
    if backend is None:
        backend = make_backend(plan.backend, **({"model": plan.model} if plan.model else {}))
    scheduler = as_scheduler(backend)
    strategies = [(rung.label, build_strategy(rung.spec)) for rung in ladder(plan)]  # refuse bad specs first
    run = execute or (lambda sch, ds, st, label: _execute(sch, ds, st, label, seed=plan.seed))
    reports = [(label, run(scheduler, dataset, strategy, label)) for label, strategy in strategies]
    return summarize(dataset, reports, seed=plan.seed)


def table(result: DemoResult) -> Any:
    """A rich table: one row per rung, then one per trivial baseline."""
    from rich.table import Table

    best = result.best_baseline
    t = Table(title=f"tts-scale demo: {result.task}, {result.problems} problems")
    t.add_column("strategy")
    t.add_column("accuracy [95% CI]", justify="right")
    t.add_column("completion tokens / problem", justify="right")
    t.add_column("time (s)", justify="right")
    t.add_column("vs greedy [95% CI]", justify="right")
    t.add_column(f"vs {best.name if best else 'baseline'} [95% CI]", justify="right")
    for row in result.rows:
        t.add_row(
            row.label,
            f"{row.accuracy:.3f} [{row.ci[0]:.3f}, {row.ci[1]:.3f}]",
            f"{row.completion_tokens:.1f}",
            f"{row.wall_time:.1f}",
            str(row.vs_greedy) if row.vs_greedy else "-",
            str(row.vs_baseline) if row.vs_baseline else "-",
        )
    for b in result.baselines:
        t.add_row(f"baseline: {b.name}", f"{b.accuracy:.3f}", "0", "-", "-", "-")
    return t


def _verdict(label: str, interval: Interval, what: str) -> str:
    if interval.includes_zero:
        return f"{label}: not distinguishable from {what} ({interval}; the interval includes zero)."
    word = "above" if interval.low > 0 else "below"
    return f"{label}: {word} {what} ({interval})."


def verdicts(result: DemoResult) -> list[str]:
    """One sentence per comparison, saying in words when an interval includes zero."""
    lines = []
    if result.baselines:
        parts = ", ".join(f"{b.name} {b.accuracy:.3f}" for b in result.baselines)
        lines.append(f"trivial baselines on these {result.problems} problems: {parts}.")
    for row in result.rows:
        if row.vs_greedy is not None:
            lines.append(_verdict(row.label, row.vs_greedy, "greedy"))
        if row.vs_baseline is not None:
            lines.append(_verdict(row.label, row.vs_baseline, f"the best trivial baseline ({row.vs_baseline.against})"))
    return lines
