"""Adaptive sampling for voting strategies: stop drawing samples once the vote is settled.

Stopping rules (pure; :class:`Tally` holds the running vote):

- ``esc`` (Early-Stopping Self-Consistency, Li et al., 2024): samples come in windows of ``w``;
  stop when every sample of the latest window has the same answer.
- ``beta`` (Adaptive-Consistency, Aggarwal et al., 2023): with leader count ``a`` and runner-up
  count ``b``, the posterior of the leader's share between the two is Beta(a+1, b+1); stop when
  P(share > 1/2) exceeds the threshold. Exact: ``P(Binomial(a+b+1, 1/2) <= a)``.
- ``dirichlet`` (same paper): P(leader has the largest probability) under Dirichlet(counts + 1)
  over the seen answers plus one "unseen" bucket, by Monte Carlo with a fixed seed.
- ``consensus`` (DeepConf online, Fu et al., 2025): stop when the leader's share of the (weighted)
  vote reaches the threshold.

Whatever the rule, :func:`decided` also stops a plain count vote once the leader is further ahead
than the samples left in the budget: the fixed-n answer can no longer change.

:func:`sample_windows` draws samples in several requests through ``ctx.submit`` and, when a rule
says stop, cancels the requests still queued or in flight. Usage is counted by the scheduler: what
was generated is charged, what was cancelled before generation is not.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from math import comb
from typing import Literal

from tts.backends.base import Handle
from tts.context import Context
from tts.types import Candidate, Request

__all__ = ["StopRule", "Tally", "beta_confidence", "decided", "dirichlet_confidence", "sample_windows",
           "should_stop"]

StopRule = Literal["none", "esc", "beta", "dirichlet", "consensus"]


class Tally:
    """Running vote: counts and weight totals per answer key, in order of first appearance."""

    __slots__ = ("counts", "total", "weights")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.weights: dict[str, float] = {}
        self.total = 0.0

    def add(self, key: str | None, weight: float = 1.0) -> None:
        if not key:
            return
        self.counts[key] = self.counts.get(key, 0) + 1
        self.weights[key] = self.weights.get(key, 0.0) + weight
        self.total += weight

    def top2(self) -> tuple[int, int]:
        """Counts of the leader and the runner-up (0 when absent)."""
        a = b = 0
        for c in self.counts.values():
            if c > a:
                a, b = c, a
            elif c > b:
                b = c
        return a, b

    def share(self) -> float:
        """The leading answer's share of the weighted vote (0 when nothing voted)."""
        return max(self.weights.values()) / self.total if self.total > 0 else 0.0


@lru_cache(maxsize=4096)
def beta_confidence(a: int, b: int) -> float:
    """P(X > 1/2) for X ~ Beta(a+1, b+1): the leader beats the runner-up, given counts a and b."""
    m = a + b + 1
    return sum(comb(m, j) for j in range(a + 1)) / 2**m


def dirichlet_confidence(counts: list[int], draws: int = 4096, seed: int = 0) -> float:
    """P(the most voted answer has the largest probability) under Dirichlet(counts + 1), with one
    extra bucket (count 0) for answers not seen yet. Monte Carlo, deterministic for a seed."""
    return _dirichlet(tuple(sorted(counts, reverse=True)), draws, seed)


@lru_cache(maxsize=4096)
def _dirichlet(counts: tuple[int, ...], draws: int, seed: int) -> float:
    import numpy as np

    alpha = np.asarray([*counts, 0], dtype=float) + 1.0
    sample = np.random.default_rng(seed).gamma(alpha, size=(draws, alpha.size))
    return float(np.mean(np.argmax(sample, axis=1) == 0))


def decided(tally: Tally, remaining: int) -> bool:
    """Whether ``remaining`` more samples can no longer change the plurality of counts (ties going to
    the answer seen first), so stopping changes no answer of the fixed-n vote."""
    a, b = tally.top2()
    if a != b + remaining:
        return a > b + remaining
    for count in tally.counts.values():  # first-appearance order: the leader must precede every rival
        if count == a:
            return True
        if count == b:
            return False
    return False


def should_stop(rule: StopRule, tally: Tally, window: list[Candidate], threshold: float) -> bool:
    """Whether ``rule`` stops sampling after ``window`` (the latest samples) joined ``tally``."""
    if rule == "none" or not tally.counts:
        return False
    if rule == "esc":
        first = window[0].key if window else None
        return bool(first) and all(c.key == first for c in window)
    if rule == "beta":
        return beta_confidence(*tally.top2()) > threshold
    if rule == "dirichlet":
        return dirichlet_confidence(list(tally.counts.values())) > threshold
    return tally.share() >= threshold


async def sample_windows(ctx: Context, request: Request, n: int, sizes: Callable[[int], int], lookahead: int,
                         stop: Callable[[list[Candidate]], bool]) -> tuple[list[Candidate], bool]:
    """Draw up to ``n`` candidates for ``request`` in several requests, stopping early.

    Request ``i`` asks for ``sizes(i)`` samples (the last is cut to the budget). ``1 + lookahead``
    requests are kept in flight; each is parsed in submission order and ``stop(new_candidates)``
    decides; on stop (or an error) the requests not yet consumed are cancelled. With
    ``lookahead > 0`` request ``i`` gets priority ``request.priority + i`` so the scheduler neither
    merges it with its neighbours nor runs it before them. Returns the candidates and whether
    sampling stopped before the budget.
    """
    pending: deque[Handle] = deque()
    issued = 0
    launched = 0
    candidates: list[Candidate] = []

    def launch() -> None:
        nonlocal issued, launched
        size = min(sizes(launched), n - issued)
        prio = request.priority + launched if lookahead else request.priority
        params = request.params.with_n(size)
        pending.append(ctx.submit(dataclasses.replace(request, params=params, priority=prio)))
        issued += size
        launched += 1

    try:
        while issued < n and len(pending) <= lookahead:
            launch()
        while pending:
            new = [ctx.parse(c) for c in await pending.popleft()]
            candidates.extend(new)
            if stop(new):
                return candidates, issued < n or bool(pending)
            while issued < n and len(pending) <= lookahead:
                launch()
        return candidates, False
    finally:
        for handle in pending:
            handle.cancel()
