"""How the transformers backend splits one engine batch into generate calls.

Requests with identical sampling parameters (``n`` aside) share a call; a call holds at most
``max_batch_sequences`` sequences, and a request's samples are split across calls only when its n
alone exceeds that.

Two optional refinements:

- **length grouping** (:func:`by_length`): a group's requests are packed in order of prompt
  length, so the prompts of one call have similar lengths and less of the left-padded prompt
  block is padding (:func:`padding` counts it);
- **dynamic batch size** (:class:`DynamicBatchSize`): the sequences per call grow while the P95
  decode-step time of recent calls stays under a cap and shrink when it does not (a tail-latency
  cap); the fake backend uses the same controller for its decode waves, so it is measured on the
  virtual clock (``bench/dynamic_batch.py``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from tts.sampling import SamplingParams
from tts.types import Request

__all__ = ["DynamicBatchSize", "Unit", "by_length", "group", "pack", "padding"]


@dataclass(frozen=True, slots=True)
class Unit:
    """Some samples of one request inside one generate call (a request's n may span calls)."""

    request: int
    count: int
    offset: int


def group(requests: list[Request], indices: list[int]) -> dict[SamplingParams, list[int]]:
    """``indices`` (of ``requests``) by generate-call key: the sampling parameters, ``n`` aside
    (beam search keeps ``n``: it sets the number of returned beams for the whole call)."""
    groups: dict[SamplingParams, list[int]] = defaultdict(list)
    for i, request in zip(indices, requests, strict=True):
        p = request.params
        groups[p if p.beam_width is not None else p.with_n(1)].append(i)
    return groups


def pack(members: list[int], requests: list[Request], cap: int) -> list[list[Unit]]:
    """Split a group into generate calls of at most ``cap`` sequences; a request's samples
    are split across calls only when its n alone exceeds ``cap`` (a beam request never is)."""
    calls: list[list[Unit]] = []
    current: list[Unit] = []
    used = 0
    for i in members:
        p = requests[i].params
        pieces = (
            [(p.beam_width, 0)]
            if p.beam_width is not None
            else [(min(cap, p.n - start), start) for start in range(0, p.n, cap)]
        )
        for rows, offset in pieces:
            if current and used + rows > cap:
                calls.append(current)
                current, used = [], 0
            current.append(Unit(i, p.n if p.beam_width is not None else rows, offset))
            used += rows
    if current:
        calls.append(current)
    return calls


def by_length(members: list[int], lengths: Sequence[int]) -> list[int]:
    """``members`` in order of prompt length (``lengths[i]``), ties in submission order."""
    return sorted(members, key=lambda i: lengths[i])


def padding(calls: list[list[Unit]], lengths: Sequence[int]) -> int:
    """Pad positions of the left-padded prompt blocks of ``calls`` (one row per unit)."""
    total = 0
    for units in calls:
        widths = [lengths[u.request] for u in units]
        total += max(widths) * len(widths) - sum(widths)
    return total


class DynamicBatchSize:
    """Sequences per decode batch under a P95 step-time cap.

    The size starts at ``start`` (default a quarter of ``largest``). After each batch
    :meth:`observe` gets its step time (seconds per decode step). Over the last ``window``
    observations: while the P95 stays at or under ``cap`` the size grows by an eighth (at least
    one) every ``window // 2`` observations, up to ``largest`` and no further than a straight-line
    fit of step time on size predicts stays under 95% of the cap; when a step or the P95 exceeds
    the cap the size drops to three quarters (at least ``smallest``) and the size that was too
    large becomes a ceiling the growth stays under for ``probe_every`` observations, so the tail
    rarely crosses the cap while the size tracks a load that changes.
    """

    def __init__(
        self, cap: float, largest: int, *, start: int | None = None, smallest: int = 1, window: int = 6
    ) -> None:
        if not cap > 0:
            from tts.errors import ConfigError

            raise ConfigError(f"step_time_cap must be > 0 seconds, got {cap}.")
        self.cap = cap
        self.largest = largest
        self.smallest = max(1, min(smallest, largest))
        self.size = max(self.smallest, min(start or largest // 4, largest))
        self.window = max(2, window)
        self.probe_every = 20 * self.window
        self._recent: deque[float] = deque(maxlen=self.window)
        self._points: deque[tuple[int, float]] = deque(maxlen=8 * self.window)
        self._fit: tuple[float, float] | None = None
        self._ceiling: int | None = None
        self._since_cut = 0
        self._since_change = 0
        self.history: list[int] = []
        """The size after every observation."""

    def p95(self) -> float:
        xs = sorted(self._recent)
        return xs[min(len(xs) - 1, int(0.95 * len(xs)))] if xs else 0.0

    def observe(self, step_time: float) -> int:
        """Record one batch's step time; return the size for the next batch."""
        self._recent.append(step_time)
        self._points.append((self.size, step_time))
        self._since_cut += 1
        self._since_change += 1
        if self._ceiling is not None and self._since_cut >= self.probe_every:
            self._ceiling = None  # probe again: the load may have changed
        if step_time > self.cap or self.p95() > self.cap:
            self._ceiling = self.size
            self.size = max(self.smallest, min(self.size - 1, int(self.size * 0.75)))
            self._recent.clear()
            self._since_cut = self._since_change = 0
        elif self._since_change >= self.window // 2:
            upper = self.largest if self._ceiling is None else self._ceiling - 1
            grown = min(upper, self.size + max(1, self.size // 8), self._predicted())
            if grown > self.size:
                self.size = grown
                self._since_change = 0
        self.history.append(self.size)
        return self.size

    def _predicted(self) -> int:
        """The largest size a straight-line fit of step time on size (over recent batches) puts
        under 95% of the cap; ``largest`` until two sizes have been seen."""
        points = self._points
        if len({x for x, _ in points}) >= 2:  # else the last fit holds (a settled size teaches nothing new)
            n = len(points)
            mx = sum(x for x, _ in points) / n
            my = sum(y for _, y in points) / n
            sxx = sum((x - mx) ** 2 for x, _ in points)
            slope = sum((x - mx) * (y - my) for x, y in points) / sxx
            self._fit = (my - slope * mx, slope) if slope > 0 else None
        if self._fit is None:
            return self.largest
        intercept, slope = self._fit
        return max(self.smallest, int((0.95 * self.cap - intercept) / slope))
