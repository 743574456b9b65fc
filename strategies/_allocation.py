"""Online, difficulty-aware allocation of a run's samples across its problems.

Fixed n spends the same samples on every problem; a problem whose vote is settled after a few
samples gains nothing from more, while a contested one does. With a run budget of ``budget``
samples per problem on average, every problem draws a pilot of a few samples and then waits at the
allocator; when every problem in flight waits, the allocator plans the pooled budget where the
posterior says extra samples change the most answers and grants one window to each problem the
plan funds; the others stop. Problems draw their grants, come back, and the allocator plans again.

Value of m more samples for one problem: P(the vote after them picks the model's most likely
answer) under the vote's Dirichlet-multinomial posterior
(:func:`tts.strategies._stop.outcome_curve`). The plan is greedy on each problem's best gain per
sample over the next few samples (the upper concave envelope of its curve), which is optimal for
concave curves. The pool is what the problems started so far brought (``budget`` each) minus what
they drew, so a run never spends more than ``budget`` times its problems.
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tts.strategies._stop import outcome_curve

__all__ = ["MIN_RATE", "Allocator", "allocator_for", "plan"]

MIN_RATE = 0.001
"""Least expected accuracy per sample worth a sample: a settled vote keeps its budget in the pool
for problems that come later (with fewer problems in flight than in the run)."""


def plan(curves: Sequence[Sequence[float]], budget: int, min_rate: float = 0.0) -> list[int]:
    """Extra samples per problem: ``curves[i][m]`` is problem i's expected accuracy after m more
    samples; at most ``budget`` in all, each step to the problem with the best gain per sample
    over its best next stretch that the budget left can pay; stretches that gain at most
    ``min_rate`` per sample are not funded."""
    given = [0] * len(curves)
    heap: list[tuple[float, int, int]] = []
    left = budget

    def push(i: int) -> None:
        curve, m = curves[i], given[i]
        best, step = min_rate, 0
        for j in range(1, min(len(curve) - m, left + 1)):
            rate = (curve[m + j] - curve[m]) / j
            if rate > best + 1e-12:
                best, step = rate, j
        if step:
            heapq.heappush(heap, (-best, i, step))

    for i in range(len(curves)):
        push(i)
    while heap and left > 0:
        _, i, step = heapq.heappop(heap)
        if step > left:  # priced when more was left: price it again
            push(i)
            continue
        given[i] += step
        left -= step
        push(i)
    return given


@dataclass
class _Waiter:
    counts: list[int]
    room: int
    grant: asyncio.Future[int]


class Allocator:
    """The run's pool of samples and the problems waiting on it (see module docstring)."""

    def __init__(self, budget: float, window: int, min_rate: float = MIN_RATE) -> None:
        self.budget = budget
        self.window = window
        self.min_rate = min_rate
        self.pool = 0.0
        self.active = 0
        self.rounds = 0
        self._waiting: list[_Waiter] = []

    def join(self) -> None:
        """A problem starts: it brings ``budget`` samples to the pool."""
        self.active += 1
        self.pool += self.budget

    def spend(self, samples: int) -> None:
        self.pool -= samples

    def leave(self) -> None:
        """A problem is done (or failed): the others no longer wait for it."""
        self.active -= 1
        self._maybe_plan()

    async def ask(self, counts: list[int], room: int) -> int:
        """Samples granted to a problem whose vote has ``counts`` and that may draw ``room`` more
        (0: stop). Waits until every problem in flight asks or leaves."""
        waiter = _Waiter(counts, room, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._maybe_plan()
        return await waiter.grant

    def _maybe_plan(self) -> None:
        if not self._waiting or len(self._waiting) < self.active:
            return
        waiting, self._waiting = self._waiting, []
        self.rounds += 1
        left = max(0, int(self.pool))
        curves = [[acc for acc, _ in outcome_curve(w.counts, min(w.room, left))] for w in waiting]
        for w, planned in zip(waiting, plan(curves, left, self.min_rate), strict=True):
            grant = min(planned, self.window)
            self.spend(grant)
            if not w.grant.done():
                w.grant.set_result(grant)


_ALLOCATORS: weakref.WeakKeyDictionary[Any, dict[int, Allocator]] = weakref.WeakKeyDictionary()


def allocator_for(scheduler: Any, owner: object, budget: float, window: int) -> Allocator:
    """The allocator of ``owner`` (a strategy) in the run of ``scheduler``: one per run, shared by
    the run's problems."""
    mine = _ALLOCATORS.setdefault(scheduler, {})
    key = id(owner)
    if key not in mine:
        mine[key] = Allocator(budget, window)
    return mine[key]
