"""Engine-side facts: what the engine itself reports about a run (KV-cache use, prefix-cache hits).

:func:`read` takes one reading of a backend: ``kv_cache_usage`` (fraction of KV-cache blocks in
use) and the prefix cache's cumulative ``queries`` and ``hits`` (prompt tokens looked up and
found). A study records per run (``runs`` table) the largest KV-cache use read while the run went
on (a reading after each result) and the prefix-cache hit rate over the run (hits over queries
between its first and last reading).

Sources: a backend attribute or method ``kv_cache_usage`` (fakes, plugins), else, for the ``vllm``
backend, vLLM's own metrics (``vllm:kv_cache_usage_perc``, ``vllm:prefix_cache_queries``,
``vllm:prefix_cache_hits``), which vLLM keeps when stats logging is on: always in async mode; in
offline mode pass ``engine_kwargs: {disable_log_stats: false}`` (``vllm.LLM`` turns it off by
default). Other backends report nothing (``None``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["EngineFacts", "RunFacts", "read"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFacts:
    """One reading of an engine's own counters (``None``: not reported)."""

    kv_cache_usage: float | None = None
    prefix_cache_queries: int | None = None
    prefix_cache_hits: int | None = None


def read(backend: Any) -> EngineFacts:
    """The engine facts ``backend`` reports now."""
    own = getattr(backend, "kv_cache_usage", None)
    if own is not None:
        try:
            value = own() if callable(own) else own
            return EngineFacts(kv_cache_usage=float(value) if value is not None else None)
        except Exception as exc:  # a backend's own reading must not sink a run
            log.debug("kv_cache_usage of %s failed: %s", getattr(backend, "name", backend), exc)
            return EngineFacts()
    if getattr(backend, "name", None) == "vllm":
        return _vllm()
    return EngineFacts()


def _vllm() -> EngineFacts:
    try:
        from vllm.v1.metrics.reader import Counter, Gauge, get_metrics_snapshot

        metrics = get_metrics_snapshot()
    except Exception as exc:  # vLLM without the v1 metrics reader, or stats off
        log.debug("vLLM metrics unavailable: %s", exc)
        return EngineFacts()
    kv = [m.value for m in metrics if isinstance(m, Gauge) and m.name == "vllm:kv_cache_usage_perc"]
    queries = [m.value for m in metrics if isinstance(m, Counter) and m.name == "vllm:prefix_cache_queries"]
    hits = [m.value for m in metrics if isinstance(m, Counter) and m.name == "vllm:prefix_cache_hits"]
    return EngineFacts(
        kv_cache_usage=max(kv) if kv else None,
        prefix_cache_queries=int(sum(queries)) if queries else None,
        prefix_cache_hits=int(sum(hits)) if hits else None,
    )


class RunFacts:
    """Readings over one run: the peak KV-cache use and the prefix-cache hit rate since the first."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.first = read(backend)
        self.peak: float | None = self.first.kv_cache_usage
        self.last = self.first

    def update(self) -> None:
        self.last = facts = read(self.backend)
        if facts.kv_cache_usage is not None:
            self.peak = facts.kv_cache_usage if self.peak is None else max(self.peak, facts.kv_cache_usage)

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        a, b = self.first, self.last
        if a.prefix_cache_queries is None or b.prefix_cache_queries is None:
            return None
        queries = b.prefix_cache_queries - a.prefix_cache_queries
        if queries <= 0:
            return None
        return ((b.prefix_cache_hits or 0) - (a.prefix_cache_hits or 0)) / queries
