"""What the command line shows while a run or a study goes, and the table it prints after.

A run's problems often finish together (every sample of every problem is batched), so a bar that
counts only finished problems sits at 0/N and jumps to N/N. The display here also counts the
samples and tokens that have landed (:class:`tts.runner.RunProgress`, sent each time some land),
with the elapsed time and a rate. In a terminal it is a live bar on stderr; when stderr is not a
terminal (a log file, CI) it writes one line every ``interval`` seconds instead, and one at the
end::

    greedy: 12/100 problems, 340 samples, 41 s, 8.3 samples/s, 95 tok/s

This module belongs to the command line (and the Python recipes, :mod:`tts.recipe`): it writes to
a stream. Library code logs instead.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from tts.errors import ConfigError

__all__ = [
    "LINE_INTERVAL",
    "RunDisplay",
    "StudyDisplay",
    "execute",
    "format_progress",
    "plan_table",
    "study_table",
    "summary_table",
]

LINE_INTERVAL = 10.0
"""Seconds between two progress lines when stderr is not a terminal."""


def _rate(count: float, elapsed: float) -> str:
    return f"{count / elapsed:.1f}" if elapsed > 0 else "0.0"


def format_progress(now: Any, label: str | None = None) -> str:
    """One line saying where a run is, from a :class:`~tts.runner.RunProgress`:
    ``"12/100 problems, 340 samples, 41 s, 8.3 samples/s, 95 tok/s"`` (failures when there are)."""
    parts = [
        f"{now.done}/{now.total} problems",
        f"{now.completions} samples",
        f"{now.elapsed:.0f} s",
        f"{_rate(now.completions, now.elapsed)} samples/s",
        f"{_rate(now.completion_tokens, now.elapsed)} tok/s",
    ]
    if now.failed:
        parts.append(f"{now.failed} failed")
    text = ", ".join(parts)
    return f"{label}: {text}" if label else text


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Display:
    """What both displays share: the stream, the clock, and (without a terminal) a line every
    ``interval`` seconds, written when a snapshot arrives and by a heartbeat thread in between, so
    a long silence (a model loading, one big batch) still says how long it has run."""

    def __init__(self, stream: IO[str] | None, interval: float, clock: Callable[[], float], heartbeat: bool) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.live = _is_tty(self.stream)
        self.heartbeat = heartbeat and not self.live
        self._start = 0.0
        self._next_line = 0.0
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _text(self) -> str | None:
        raise NotImplementedError

    def _columns(self) -> list[Any]:
        raise NotImplementedError

    def _open(self) -> None:
        self._start = self.clock()
        self._next_line = self._start + self.interval
        if self.live:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(*self._columns(), console=Console(file=self.stream), get_time=self.clock)
            self._bar.__enter__()
        elif self.heartbeat:
            self._thread = threading.Thread(target=self._beat, name="tts-progress", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            self._maybe_line()

    def _maybe_line(self, force: bool = False) -> None:
        with self._lock:
            if not force and self.clock() < self._next_line:
                return
            self._next_line = self.clock() + self.interval
            text = self._text()
            if text is not None:
                self.stream.write(text + "\n")
                self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.__exit__(*exc)
        else:
            self._maybe_line(force=True)


class RunDisplay(_Display):
    """The progress of one run: a context manager whose instance is the ``progress`` callback of
    :func:`tts.runner.arun`. A live bar when ``stream`` (default stderr) is a terminal, else a line
    every ``interval`` seconds (``heartbeat``: also while no snapshot arrives) and a last one on
    exit."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
    ) -> None:
        super().__init__(stream, interval, clock, heartbeat)
        self.label = label
        self.total = total
        self.last: Any = None
        self._task: Any = None
        self._beating = False

    def _columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        return [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[samples]}"),
            TimeElapsedColumn(),
        ]

    def __enter__(self) -> RunDisplay:
        self._open()
        if self._bar is not None:
            self._task = self._bar.add_task(self.label, total=self.total, samples="")
        return self

    def __call__(self, now: Any) -> None:
        self.last = now
        if self._bar is not None:
            samples = f"{now.completions} samples, {_rate(now.completion_tokens, now.elapsed)} tok/s"
            self._bar.update(self._task, completed=now.done, samples=samples)
        else:
            self._maybe_line()

    def _text(self) -> str | None:
        now, beat = self.last, threading.current_thread() is self._thread
        elapsed = self.clock() - self._start
        if now is None:
            return f"{self.label}: 0/{self.total} problems, no samples yet, {elapsed:.0f} s" if beat else None
        if beat:  # between snapshots: the time goes on
            now = dataclasses.replace(now, elapsed=max(now.elapsed, elapsed))
        return format_progress(now, self.label)


class StudyDisplay(_Display):
    """The progress of a study: the ``progress(label, done, total)`` callback of
    :class:`tts.study.StudyRunner`, one bar per configuration in a terminal, else a line every
    ``interval`` seconds naming where each configuration is.

    A configuration's first call may come when all its problems finish together; its bar's clock
    starts at the previous call (the end of the configuration before it, or the study's start),
    so it shows the real time the configuration took, not 0:00:00."""

    def __init__(
        self,
        *,
        stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
    ) -> None:
        super().__init__(stream, interval, clock, heartbeat)
        self.where: dict[str, tuple[int, int]] = {}
        self._last = 0.0
        self._tasks: dict[str, Any] = {}

    def _columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]

    def __enter__(self) -> StudyDisplay:
        self._open()
        self._last = self._start
        return self

    def __call__(self, label: str, done: int, total: int) -> None:
        self.where[label] = (done, total)
        if self._bar is not None:
            if label not in self._tasks:
                self._tasks[label] = task = self._bar.add_task(label, total=total, start=False)
                next(t for t in self._bar.tasks if t.id == task).start_time = self._last
            self._bar.update(self._tasks[label], completed=done)
        else:
            self._maybe_line()
        self._last = self.clock()

    def _text(self) -> str | None:
        elapsed = self.clock() - self._start
        if not self.where:
            return f"study: no samples yet, {elapsed:.0f} s" if threading.current_thread() is self._thread else None
        done = sum(d for d, _ in self.where.values())
        total = sum(t for _, t in self.where.values())
        current = next(reversed(self.where))
        d, t = self.where[current]
        n = len(self.where)
        return (
            f"study: {done}/{total} problems in {n} configuration{'s' * (n != 1)}, {elapsed:.0f} s; {current}: {d}/{t}"
        )


def execute(
    backend: Any,
    dataset: Any,
    strategy: Any,
    *,
    out: IO[str] | None = None,
    label: str,
    task: Any = None,
    stream: IO[str] | None = None,
    **run: Any,
) -> Any:
    """One run through :func:`tts.runner.arun` (``run``: its options: concurrency, seed, limits,
    total_limits, ...) with a :class:`RunDisplay` (``task``: default the dataset's), every result
    written to ``out`` as a JSON line as it finishes. An empty dataset is a
    :class:`~tts.errors.ConfigError` (a run of nothing has no accuracy)."""
    from tts.runner import arun, as_scheduler, run_sync

    if len(dataset) == 0:
        raise ConfigError(f"dataset {getattr(dataset, 'name', '')!r} has no problems; check the file or --limit.")
    scheduler = as_scheduler(backend)

    def on_result(result: Any) -> None:
        if out is not None:
            out.write(json.dumps(result.to_dict(), default=str) + "\n")
            out.flush()

    with RunDisplay(label, len(dataset), stream=stream) as display:
        return run_sync(
            lambda: arun(
                strategy,
                dataset.problems,
                scheduler,
                task=task if task is not None else dataset.task,
                on_result=on_result,
                progress=display,
                **run,
            )
        )


def summary_table(reports: list[Any], title: str = "tts-scale run") -> Any:
    """A rich table of run summaries: metrics as rows, one column per run (fits a narrow terminal)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    summaries = [r.summary() for r in reports]
    for s in summaries:
        table.add_column(s.strategy, justify="right")

    for i, (label, _) in enumerate(summaries[0].rows() if summaries else []):
        table.add_row(label, *(s.rows()[i][1] if i < len(s.rows()) else "" for s in summaries))
    return table


def plan_table(rows: list[Any]) -> Any:
    """The table of ``tts-scale study --dry-run``: one row per configuration."""
    from rich.table import Table

    table = Table(title="tts-scale study --dry-run")
    for col in (
        "configuration",
        "problems",
        "seeds",
        "to run",
        "generations",
        "prompt tokens (est.)",
        "completion tokens (at most)",
        "estimate",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        table.add_row(
            r.label,
            str(r.problems),
            str(r.seeds),
            str(r.remaining),
            f"{r.generations:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            r.method,
        )
    return table


def study_table(metrics: list[Any]) -> Any:
    """The table of ``tts-scale study``: one row per configuration."""
    from rich.table import Table

    table = Table(title="tts-scale study")
    for col in ("configuration", "accuracy [95% CI]", "tokens/problem", "samples", "calls", "P50 latency", "failures"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for m in metrics:
        acc = "n/a" if m.accuracy is None else f"{m.accuracy:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        p50 = "n/a" if m.latency_p50 is None else f"{m.latency_p50:.3f}"
        table.add_row(
            m.label,
            acc,
            f"{m.total_tokens:.1f}",
            f"{m.samples:.1f}",
            f"{m.calls:.2f}",
            p50,
            f"{m.failure_rate + m.timeout_rate:.3f}",
        )
    return table
