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

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tts.errors import ConfigError

__all__ = ["LINE_INTERVAL", "RunDisplay", "StudyDisplay", "execute", "format_progress", "summary_table"]

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


class RunDisplay:
    """The progress of one run: a context manager whose instance is the ``progress`` callback of
    :func:`tts.runner.arun`. A live bar when ``stream`` (default stderr) is a terminal, else a line
    every ``interval`` seconds and a last one on exit."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.live = _is_tty(self.stream)
        self.last: Any = None
        self._next_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> RunDisplay:
        self._next_line = self.clock() + self.interval
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[samples]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, samples="")
        return self

    def __call__(self, now: Any) -> None:
        self.last = now
        if self._bar is not None:
            samples = f"{now.completions} samples, {_rate(now.completion_tokens, now.elapsed)} tok/s"
            self._bar.update(self._task, completed=now.done, samples=samples)
        elif self.clock() >= self._next_line:
            self._next_line = self.clock() + self.interval
            self._line(now)

    def _line(self, now: Any) -> None:
        self.stream.write(format_progress(now, self.label) + "\n")
        self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.last is not None:
            self._line(self.last)


class StudyDisplay:
    """The progress of a study: the ``progress(label, done, total)`` callback of
    :class:`tts.study.StudyRunner`, one bar per configuration in a terminal (each with the real time
    since the study started), else a line every ``interval`` seconds naming where each
    configuration is."""

    def __init__(
        self,
        *,
        stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.live = _is_tty(self.stream)
        self.where: dict[str, tuple[int, int]] = {}
        self._start = 0.0
        self._next_line = 0.0
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> StudyDisplay:
        self._start = self.clock()
        self._next_line = self._start + self.interval
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._bar.__enter__()
        return self

    def __call__(self, label: str, done: int, total: int) -> None:
        self.where[label] = (done, total)
        if self._bar is not None:
            if label not in self._tasks:  # started now: its elapsed time runs from here
                self._tasks[label] = self._bar.add_task(label, total=total)
            self._bar.update(self._tasks[label], completed=done)
        elif self.clock() >= self._next_line:
            self._next_line = self.clock() + self.interval
            self._line()

    def _line(self) -> None:
        done = sum(d for d, _ in self.where.values())
        total = sum(t for _, t in self.where.values())
        current = next(reversed(self.where))
        d, t = self.where[current]
        self.stream.write(
            f"study: {done}/{total} problems in {len(self.where)} configurations, "
            f"{self.clock() - self._start:.0f} s; {current}: {d}/{t}\n"
        )
        self.stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.where:
            self._line()


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
    total_limits, ...) with a :class:`RunDisplay` (``task``: default the dataset's), every result written to ``out`` as a JSON line as
    it finishes. An empty dataset is a :class:`~tts.errors.ConfigError` (a run of nothing has no
    accuracy)."""
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

    def acc(s: Any) -> str:
        if s.accuracy is None:
            return "n/a"
        return f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}]"

    rows: list[tuple[str, Callable[[Any], str]]] = [
        ("accuracy [95% CI]", acc),
        ("problems", lambda s: str(s.problems)),
        ("prompt tokens / problem", lambda s: f"{s.prompt_tokens_per_problem:.1f}"),
        ("cached prompt tokens / problem", lambda s: f"{s.cached_prompt_tokens_per_problem:.1f}"),
        ("completion tokens / problem", lambda s: f"{s.completion_tokens_per_problem:.1f}"),
        ("calls / problem", lambda s: f"{s.calls_per_problem:.2f}"),
        ("latency P50 / P95 (s)", lambda s: f"{s.latency_p50:.3f} / {s.latency_p95:.3f}"),
        ("wall time (s)", lambda s: f"{s.wall_time:.2f}"),
        ("failures", lambda s: str(s.failures)),
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(s) for s in summaries))
    return table
