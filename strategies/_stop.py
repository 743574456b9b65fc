"""Stop rules of adaptive sampling: stop drawing samples once the vote is settled.

Stopping rules (pure; :class:`~tts.strategies._select.Tally` holds the running vote):

- ``esc`` (Early-Stopping Self-Consistency, Li et al., 2024): samples come in windows of ``w``;
  stop when every sample of the latest window has the same answer.
- ``beta`` (Adaptive-Consistency, Aggarwal et al., 2023): with leader count ``a`` and runner-up
  count ``b``, the posterior of the leader's share between the two is Beta(a+1, b+1); stop when
  P(share > 1/2) exceeds the threshold. Exact: ``P(Binomial(a+b+1, 1/2) <= a)``.
- ``dirichlet`` (same paper): P(leader has the largest probability) under Dirichlet(counts + 1)
  over the seen answers plus one "unseen" bucket, by Monte Carlo with a fixed seed.
- ``consensus`` (DeepConf online, Fu et al., 2025): stop when the leader's share of the (weighted)
  vote reaches the threshold.

Whatever the rule, :func:`~tts.strategies._select.decided` also stops a plain count vote once the
leader is further ahead than the samples left in the budget: the fixed-n answer can no longer change.

:func:`sample_windows` draws samples in several draws of a proposer and, when a rule says stop,
cancels the draws still queued or in flight. Usage is counted by the scheduler: what
was generated is charged, what was cancelled before generation is not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import lru_cache
from math import comb
from typing import Literal

from tts.strategies._proposer import Draw, Drawer
from tts.strategies._select import Tally
from tts.types import Candidate

__all__ = ["StopRule", "beta_confidence", "dirichlet_confidence", "sample_windows", "should_stop"]

StopRule = Literal["none", "esc", "beta", "dirichlet", "consensus"]


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


async def sample_windows(
    draw: Drawer, n: int, sizes: Callable[[int], int], lookahead: int, stop: Callable[[list[Candidate]], bool]
) -> tuple[list[Candidate], bool]:
    """Draw up to ``n`` candidates in several draws of a proposer (:mod:`tts.strategies._proposer`),
    stopping early.

    Draw ``i`` asks for ``sizes(i)`` samples (the last is cut to the budget). ``1 + lookahead``
    draws are kept in flight; each is consumed in order and ``stop(new_candidates)`` decides; on
    stop (or an error) the draws not yet consumed are cancelled. With ``lookahead > 0`` draw ``i``
    gets priority offset ``i`` so the scheduler neither merges it with its neighbours nor runs it
    before them. Returns the candidates and whether sampling stopped before the budget.
    """
    pending: deque[Draw] = deque()
    issued = 0
    launched = 0
    candidates: list[Candidate] = []

    def launch() -> None:
        nonlocal issued, launched
        size = min(sizes(launched), n - issued)
        pending.append(draw(size, launched if lookahead else 0))
        issued += size
        launched += 1

    try:
        while issued < n and len(pending) <= lookahead:
            launch()
        while pending:
            new = await pending.popleft().result()
            candidates.extend(new)
            if stop(new):
                return candidates, issued < n or bool(pending)
            while issued < n and len(pending) <= lookahead:
                launch()
        return candidates, False
    finally:
        for pending_draw in pending:
            pending_draw.cancel()
