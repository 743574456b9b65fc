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
- ``outcome``: a posterior over the vote's *final* outcome. The answer probabilities get the
  posterior Dirichlet(counts + 1, one "unseen" bucket of weight 1); the samples still in the budget
  follow the Dirichlet-multinomial. Stop when the remaining budget cannot change the winner with
  probability above ``1 - threshold`` (settled: P(the full vote keeps the current leader) >=
  threshold), or when it raises the expected probability of the answer the vote returns (its
  chance of being right, were the model calibrated) by at most ``epsilon`` (hopeless: no answer is
  likely enough to win for more samples to matter; :func:`outcome`). Monte Carlo with a fixed
  seed, cached per state.
- ``auto`` (the documented adaptive setting, :data:`AUTO`): ``outcome`` with the parameters that
  ``bench/adaptive.py`` validates, 3 samples first, then one per request, and look-ahead sized
  from the engine (:func:`auto_lookahead`).

Whatever the rule, :func:`~tts.strategies._select.decided` also stops a plain count vote once the
leader is further ahead than the samples left in the budget: the fixed-n answer can no longer change.

:func:`sample_windows` draws samples in several draws of a proposer and, when a rule says stop,
cancels the draws still queued or in flight. Usage is counted by the scheduler: what
was generated is charged, what was cancelled before generation is not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Any, Literal

from tts.strategies._proposer import Draw, Drawer
from tts.strategies._select import Tally
from tts.types import Candidate

__all__ = [
    "AUTO",
    "Outcome",
    "StopRule",
    "auto_lookahead",
    "beta_confidence",
    "dirichlet_confidence",
    "outcome",
    "outcome_curve",
    "sample_windows",
    "should_stop",
]

StopRule = Literal["none", "esc", "beta", "dirichlet", "consensus", "outcome", "auto"]

AUTO: dict[str, Any] = {"threshold": 0.91, "epsilon": 0.002, "pilot": 3, "window": 1}
"""What ``stop: auto`` means (options given beside it win): the ``outcome`` rule, stop when the
full vote keeps the leader with probability 0.91 or when the rest of the budget raises the chosen
answer's expected probability by at most 0.002; 3 samples first, then one per request; validated
by ``bench/adaptive.py`` (a larger epsilon stops high-entropy votes the majority would get right)."""

OUTCOME_DRAWS = 8192
"""Monte Carlo draws of the ``outcome`` posterior (fixed seed: the rule is deterministic)."""
CURVE_DRAWS = 1024
"""Monte Carlo draws of :func:`outcome_curve` (the allocator's value curves)."""


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


@dataclass(frozen=True)
class Outcome:
    """The posterior over a vote's final outcome (see :func:`outcome`)."""

    same: float
    """P(the vote after the remaining samples has the current leader as winner)."""
    gain: float
    """E[theta of that vote's winner] - E[theta of the current leader]: how much the remaining
    samples raise the chosen answer's probability under the model (its chance of being right,
    were the model calibrated)."""


def _state(counts: Sequence[int]) -> tuple[int, ...]:
    """The vote's state as the posterior sees it: the leader (first of the largest counts, as the
    tie rule has it) first, the rivals after it in decreasing order."""
    values = list(counts)
    if not values:
        return ()
    lead = values.index(max(values))
    return (values[lead], *sorted(values[:lead] + values[lead + 1 :], reverse=True))


def outcome(counts: Sequence[int], remaining: int) -> Outcome:
    """Where ``remaining`` more samples take a vote with ``counts`` (in first-appearance order).

    Answer probabilities theta ~ Dirichlet(counts + 1, 1 for answers not seen yet); the remaining
    samples ~ Multinomial(remaining, theta); the final winner is the first of the largest final
    counts (the leader wins ties). ``same`` and ``gain`` as in :class:`Outcome`.
    """
    return _outcome(_state(counts), max(0, remaining), OUTCOME_DRAWS)


def outcome_curve(counts: Sequence[int], horizon: int) -> list[tuple[float, float]]:
    """For m = 0 .. ``horizon`` more samples: (P(the vote then picks the model's most likely
    answer), P(the vote then keeps the current leader)) under the posterior of :func:`outcome`."""
    return _curve(_state(counts), max(0, horizon), CURVE_DRAWS)


def _posterior(state: tuple[int, ...], draws: int) -> tuple[Any, Any, Any]:
    """A seeded generator, answer probabilities drawn from the posterior, and their modes."""
    import numpy as np

    rng = np.random.default_rng(0)
    alpha = np.asarray([*state, 0], dtype=float) + 1.0
    theta = rng.gamma(alpha, size=(draws, alpha.size))
    theta /= theta.sum(axis=1, keepdims=True)
    return rng, theta, np.argmax(theta, axis=1)


@lru_cache(maxsize=65536)
def _outcome(state: tuple[int, ...], remaining: int, draws: int) -> Outcome:
    import numpy as np

    rng, theta, _ = _posterior(state, draws)
    final = rng.multinomial(remaining, theta) + np.asarray([*state, 0])
    winner = np.argmax(final, axis=1)  # the first of the largest: the tie rule
    rows = np.arange(draws)
    return Outcome(float(np.mean(winner == 0)), float(np.mean(theta[rows, winner] - theta[:, 0])))


@lru_cache(maxsize=65536)
def _curve(state: tuple[int, ...], horizon: int, draws: int) -> list[tuple[float, float]]:
    import numpy as np

    rng, theta, mode = _posterior(state, draws)
    cdf = np.cumsum(theta, axis=1)
    cdf[:, -1] = 1.0
    picks = (rng.random((draws, horizon))[:, :, None] > cdf[:, None, :]).sum(axis=2)
    answers = theta.shape[1]
    added = np.cumsum(picks[:, :, None] == np.arange(answers), axis=1, dtype=np.int32)  # (draws, horizon, answers)
    final = np.concatenate([np.zeros((draws, 1, answers), dtype=np.int32), added], axis=1)
    winner = np.argmax(final + np.asarray([*state, 0]), axis=2)  # first of the largest: the tie rule
    right = np.mean(winner == mode[:, None], axis=0)
    kept = np.mean(winner == 0, axis=0)
    return [(float(a), float(b)) for a, b in zip(right, kept, strict=True)]


def should_stop(
    rule: StopRule,
    tally: Tally,
    window: list[Candidate],
    threshold: float,
    *,
    remaining: int = 0,
    epsilon: float = 0.0,
) -> bool:
    """Whether ``rule`` stops sampling after ``window`` (the latest samples) joined ``tally``;
    ``remaining``: samples left in the budget (the ``outcome`` rule's horizon)."""
    if rule == "none" or not tally.counts:
        return False
    if rule in ("outcome", "auto"):
        if remaining <= 0:
            return True
        o = outcome(list(tally.counts.values()), remaining)
        return o.same >= threshold or o.gain <= epsilon
    if rule == "esc":
        first = window[0].key if window else None
        return bool(first) and all(c.key == first for c in window)
    if rule == "beta":
        return beta_confidence(*tally.top2()) > threshold
    if rule == "dirichlet":
        return dirichlet_confidence(list(tally.counts.values())) > threshold
    return tally.share() >= threshold


def auto_lookahead(ctx: Any, window: int, n: int) -> int:
    """Extra requests to keep in flight: one more window while the engine has a free sequence slot
    for it and samples are left in the budget (``n``), none while the samples already queued or
    running fill the engine's slots (other problems keep it busy; a speculative window would only
    cost tokens). At most one window is generated and not voted per problem. The slots are the
    backend's ``max_concurrency`` (the OpenAI backend's connections, the fake engine's decode
    width) or vLLM's ``max_num_seqs``."""
    scheduler = ctx.scheduler
    free = _engine_slots(scheduler.backend) - scheduler.samples_in_flight
    return 1 if free >= window and n > window else 0


def _engine_slots(backend: Any) -> int:
    options = getattr(backend, "options", None)
    for owner, name in (
        (options, "max_concurrency"),
        (options, "max_num_seqs"),
        (getattr(options, "cost", None), "max_concurrency"),
    ):
        value = getattr(owner, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 256  # vLLM's default max_num_seqs


async def sample_windows(
    draw: Drawer,
    n: int,
    sizes: Callable[[int], int],
    lookahead: int | Callable[[], int],
    stop: Callable[[list[Candidate]], bool],
    *,
    priorities: bool = True,
) -> tuple[list[Candidate], bool]:
    """Draw up to ``n`` candidates in several draws of a proposer (:mod:`tts.strategies._proposer`),
    stopping early.

    Draw ``i`` asks for ``sizes(i)`` samples (the last is cut to the budget). ``1 + lookahead``
    draws are kept in flight; each is consumed in order and ``stop(new_candidates)`` decides; on
    stop (or an error) the draws not yet consumed are cancelled. ``lookahead`` may be a function,
    asked before every launch (:func:`auto_lookahead`). Where the backend has ``priorities``, draw
    ``i`` gets priority offset ``i`` so the scheduler neither merges it with its neighbours nor
    runs it before them (elsewhere a look-ahead draw may merge with the one before it: generated
    together, charged alike). Returns the candidates and whether sampling stopped before the budget.
    """
    pending: deque[Draw] = deque()
    issued = 0
    launched = 0
    candidates: list[Candidate] = []
    ahead = lookahead if callable(lookahead) else (lambda: lookahead)

    def fill() -> None:
        nonlocal issued, launched
        while issued < n and (not pending or len(pending) <= ahead()):
            size = min(sizes(launched), n - issued)
            pending.append(draw(size, launched if priorities else 0))
            issued += size
            launched += 1

    try:
        fill()
        while pending:
            new = await pending.popleft().result()
            candidates.extend(new)
            if stop(new):
                return candidates, issued < n or bool(pending)
            fill()
        return candidates, False
    finally:
        for pending_draw in pending:
            pending_draw.cancel()
