"""The server's counters, rendered in the Prometheus text format (``GET /metrics``).

Per pipeline (label ``model``; names no pipeline serves count under ``_unknown``, so a client
cannot grow the label set): requests by HTTP status, failures, a latency histogram, tokens
(prompt, completion, cached prompt: the prefix-cache and merged-prompt hits), completions and
engine calls; server-wide: requests in flight and client disconnects. Counters are plain integers
updated on the event loop (no locks, no client library).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence

from tts.scheduler import Scheduler
from tts.types import Usage

__all__ = ["BUCKETS", "ServerMetrics"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the latency histogram's buckets."""

_TOKENS = {
    "prompt_tokens": "Prompt tokens of every engine request, verifiers' included.",
    "completion_tokens": "Completion tokens of every engine request, verifiers' included.",
    "cached_prompt_tokens": "Prompt tokens the engine did not compute (prefix cache hits, prompts merged).",
    "completions": "Completions generated.",
    "calls": "Engine requests (a request for n samples is one).",
    "cache_hits": "Requests answered from the request cache, with no engine call.",
}


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class ServerMetrics:
    """Counters of one server."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = frozenset(models)
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.failures: defaultdict[str, int] = defaultdict(int)
        self.latency: defaultdict[str, _Histogram] = defaultdict(_Histogram)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.in_flight = 0
        self.disconnects = 0

    def label(self, model: str | None) -> str:
        return model if model in self.models else "_unknown"

    def finished(self, model: str | None, status: int, seconds: float, usage: Usage | None = None) -> None:
        """Count one answered request (any status; 499: the client went away first)."""
        label = self.label(model)
        self.requests[(label, status)] += 1
        if status >= 500:
            self.failures[label] += 1
        if status == 499:
            self.disconnects += 1
        if status == 200:
            self.latency[label].observe(seconds)
        if usage is not None:
            for name in _TOKENS:
                self.tokens[(label, name)] += getattr(usage, name, 0)
            self.tokens[(label, "prompt_tokens")] += usage.verifier_prompt_tokens
            self.tokens[(label, "completion_tokens")] += usage.verifier_completion_tokens

    def render(self, schedulers: Sequence[Scheduler] = ()) -> str:
        """The Prometheus text exposition (version 0.0.4); ``schedulers``: the shared schedulers,
        whose totals count everything the engines did (cancelled and failed requests included)."""
        out = [
            "# HELP tts_requests_total Chat completion requests by pipeline and HTTP status.",
            "# TYPE tts_requests_total counter",
            *(f'tts_requests_total{{model="{m}",code="{c}"}} {v}' for (m, c), v in sorted(self.requests.items())),
            "# HELP tts_request_failures_total Requests that failed on the server's side (5xx).",
            "# TYPE tts_request_failures_total counter",
            *(f'tts_request_failures_total{{model="{m}"}} {v}' for m, v in sorted(self.failures.items())),
            "# HELP tts_request_duration_seconds Latency of answered requests, from arrival to the last byte.",
            "# TYPE tts_request_duration_seconds histogram",
        ]
        for model, hist in sorted(self.latency.items()):
            running = 0
            for bound, count in zip((*BUCKETS, "+Inf"), hist.counts, strict=True):
                running += count
                out.append(f'tts_request_duration_seconds_bucket{{model="{model}",le="{bound}"}} {running}')
            out.append(f'tts_request_duration_seconds_sum{{model="{model}"}} {hist.total:.6f}')
            out.append(f'tts_request_duration_seconds_count{{model="{model}"}} {hist.count}')
        for name, meaning in _TOKENS.items():
            metric = f"tts_{name}_total"
            out.append(f"# HELP {metric} {meaning}")
            out.append(f"# TYPE {metric} counter")
            out += [f'{metric}{{model="{m}"}} {v}' for (m, n), v in sorted(self.tokens.items()) if n == name]
        out += [
            "# HELP tts_requests_in_flight Chat completion requests being answered now.",
            "# TYPE tts_requests_in_flight gauge",
            f"tts_requests_in_flight {self.in_flight}",
            "# HELP tts_client_disconnects_total Requests whose client went away; their samples were cancelled.",
            "# TYPE tts_client_disconnects_total counter",
            f"tts_client_disconnects_total {self.disconnects}",
            "# HELP tts_engine_usage_total What each shared scheduler charged, by backend and kind.",
            "# TYPE tts_engine_usage_total counter",
        ]
        for i, s in enumerate(schedulers):
            u = s.usage
            counts = {
                "prompt_tokens": u.prompt_tokens + u.verifier_prompt_tokens,
                "completion_tokens": u.completion_tokens + u.verifier_completion_tokens,
                "cached_prompt_tokens": u.cached_prompt_tokens,
                "completions": u.completions,
                "calls": u.calls,
                "cancelled": u.cancelled,
                "failures": u.failures,
                "merged_requests": s.stats.merged_requests,
                "cache_hits": getattr(u, "cache_hits", 0),
            }
            out += [
                f'tts_engine_usage_total{{scheduler="{i}",backend="{s.name}",kind="{k}"}} {v}'
                for k, v in counts.items()
            ]
        return "\n".join(out) + "\n"
