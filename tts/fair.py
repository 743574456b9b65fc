"""Weighted fair share: several tenants (pipelines, models, users) on one scheduler and one engine.

Without it the scheduler hands every request to the engine at once and the engine serves them in
priority order, so a tenant that submits more gets more. With a :class:`FairShare`
(``Scheduler(backend, fair=FairShare({"a": 1, "b": 3}, capacity=64))``) the scheduler keeps at
most ``capacity`` sequences in the engine and releases the next request from the backlogged
tenant whose decode tokens served so far, divided by its weight, are the fewest (start-time fair
queuing). A request in flight counts with an estimate (its n times the tenant's mean tokens per
sample so far, ``max_tokens`` before the first one lands), replaced by what it generated when it
returns. A tenant that comes back after being idle starts at the least-served active tenant's
normalised level, so it gets its share from then on and no burst for the time it was away.

Tenants are named per run (``tts.arun(..., tenant="a")``); unnamed requests belong to tenant
``""``; a tenant missing from ``weights`` weighs ``default_weight``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Generic, TypeVar

from tts.errors import ConfigError

__all__ = ["FairShare"]

T = TypeVar("T")


class FairShare(Generic[T]):
    """Per-tenant queues released by weighted decode-token share (see module docstring)."""

    def __init__(self, weights: Mapping[str, float], capacity: int, *, default_weight: float = 1.0) -> None:
        for name, w in {**weights, "default_weight": default_weight}.items():
            if not w > 0:
                raise ConfigError(f"fair share weight of {name!r} must be > 0, got {w}.")
        if capacity < 1:
            raise ConfigError(f"fair share capacity must be >= 1 sequences, got {capacity}.")
        self.weights = dict(weights)
        self.default_weight = default_weight
        self.capacity = capacity
        self.served: dict[str, float] = {}
        """Decode tokens per tenant: returned ones plus the estimates of those in flight."""
        self.tokens: dict[str, int] = {}
        """Decode tokens actually generated per tenant."""
        self._samples: dict[str, int] = {}
        self._queues: dict[str, deque[tuple[T, int, int]]] = {}
        self.inflight = 0
        """Sequences in the engine now."""

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, self.default_weight)

    def _level(self, tenant: str) -> float:
        return self.served.get(tenant, 0.0) / self.weight(tenant)

    def estimate(self, tenant: str, sequences: int, max_tokens: int) -> float:
        """Decode tokens a request of ``sequences`` samples is expected to cost."""
        samples = self._samples.get(tenant, 0)
        per = self.tokens.get(tenant, 0) / samples if samples else float(max_tokens)
        return sequences * per

    def push(self, tenant: str, item: T, sequences: int, max_tokens: int) -> None:
        """Queue ``item`` (``sequences`` samples of at most ``max_tokens``) for ``tenant``."""
        queue = self._queues.setdefault(tenant, deque())
        if not queue:  # back from idle: no credit for the time away
            active = [self._level(t) for t, q in self._queues.items() if q and t != tenant]
            if active:
                self.served[tenant] = max(self.served.get(tenant, 0.0), min(active) * self.weight(tenant))
        queue.append((item, sequences, max_tokens))

    def pop(self) -> list[tuple[str, T, int, float]]:
        """Items to send now, as (tenant, item, sequences, estimate): while the engine has room
        (one item always goes when none is in flight), the least-served backlogged tenant's next."""
        out: list[tuple[str, T, int, float]] = []
        while True:
            backlogged = [t for t, q in self._queues.items() if q]
            if not backlogged:
                return out
            tenant = min(backlogged, key=self._level)
            item, sequences, max_tokens = self._queues[tenant][0]
            if self.inflight and self.inflight + sequences > self.capacity:
                return out
            self._queues[tenant].popleft()
            est = self.estimate(tenant, sequences, max_tokens)
            self.served[tenant] = self.served.get(tenant, 0.0) + est
            self.inflight += sequences
            out.append((tenant, item, sequences, est))

    def done(self, tenant: str, sequences: int, estimate: float, tokens: int, samples: int) -> None:
        """A released item returned: ``tokens`` decode tokens over ``samples`` samples."""
        self.inflight -= sequences
        self.served[tenant] = self.served.get(tenant, 0.0) - estimate + tokens
        self.tokens[tenant] = self.tokens.get(tenant, 0) + tokens
        self._samples[tenant] = self._samples.get(tenant, 0) + samples

    def items(self) -> list[T]:
        """Every queued item (the scheduler looks for cancelled requests among them)."""
        return [e[0] for q in self._queues.values() for e in q]

    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())
