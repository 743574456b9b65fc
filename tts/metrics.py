"""Latency and throughput figures, computed one way for runs, studies and the server.

- A problem's latency runs from its first submitted request to its result (time spent waiting for
  a concurrency slot before it asked anything is not its own); see :mod:`tts.runner`.
- A request's latency runs from submit to completion (the trace's ``generate`` events).
- Throughput is finished problems (or completions) per second of the run's wall time.

Percentiles interpolate linearly between order statistics (numpy's default), in pure Python so
a summary needs no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["LatencyStats", "latency_stats", "percentile", "request_latencies", "throughput"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Percentiles of a set of latencies, in seconds."""

    count: int
    p50: float
    p95: float
    mean: float
    max: float


def latency_stats(values: Iterable[float]) -> LatencyStats:
    xs = list(values)
    if not xs:
        return LatencyStats(0, math.nan, math.nan, math.nan, math.nan)
    return LatencyStats(len(xs), percentile(xs, 50), percentile(xs, 95), sum(xs) / len(xs), max(xs))


def throughput(count: int, wall_time: float) -> float:
    """Items per second; NaN when no time passed."""
    return count / wall_time if wall_time > 0 else math.nan


def request_latencies(traces: Iterable[object]) -> list[float]:
    """Submit-to-completion seconds of every successful engine request in ``traces``."""
    out: list[float] = []
    for trace in traces:
        for event in getattr(trace, "events", ()):
            if event.kind == "generate" and event.completions:
                out.append(event.end - event.start)
    return out
