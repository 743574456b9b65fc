"""Majority voting on the oracle backend matches its closed form.

Model: each sample is correct with probability p and otherwise one of 4 wrong answers (probabilities
q_1..q_4, summing to 1 - p). Self-consistency picks the answer with the most votes; ties go to the
answer sampled first (``tts.strategies._select``).

Exact accuracy with n samples. Let c be the correct answer's count and d_1..d_4 the wrong ones'.
The correct answer wins when c > max(d_i). When it ties with j wrong answers at the top (j >= 1),
the winner is the tied answer whose first sample came earliest; given the counts every order of the
samples is equally likely, and the earliest of the (j+1)*c samples of the tied answers belongs to
each of them with probability 1/(j+1). So

    P(win) = sum_c Binom(n, c) p^c (1-p)^(n-c) * sum_j P(all d_i <= c, exactly j equal c | c) / (j+1)

where the wrong counts follow Multinomial(n - c; q_i / (1 - p)). The inner sum is computed exactly
by multiplying, per wrong answer, the exponential generating polynomial sum_{d<=c} q_i^d/d! x^d (with
a marker for d == c) and reading the x^(n-c) coefficient times (n-c)!. With this tie rule n=2 always
equals n=1 (a 1-1 tie goes to the first sample).

Cases (N = 2000 problems each; simulated accuracy within the 99% binomial band of the exact value,
2.576 * sqrt(p(1-p)/N) plus a continuity correction of 0.5/N (it matters only near 0 or 1), at
every n of the grid 1, 2, 3, 4, 5, 8, 16, 32, 64, all prefixes of one n=64 pass):

- Voting HELPS with wrong answers spread uniformly: p = 0.3, 0.5, 0.7 and 0.9 (even p=0.3 beats
  each wrong answer's 0.175, so the correct answer is the plurality in expectation and accuracy
  climbs towards 1).
- Voting HURTS when one wrong answer is more likely than the correct one: p = 0.3 with wrong
  probabilities (0.4, 0.1, 0.1, 0.1). The 0.4 answer is the plurality, so accuracy falls towards 0
  (0.30 at n=1, 0.17 at n=64). For small n it first rises slightly (to 0.33 at n=8): the correct
  answer still wins samples where the wrong votes are split; from n=8 on it falls.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest

from tts import FakeBackend, OracleModel, OracleSpec, Problem, SelfConsistency, Task, run, solve
from tts.strategies import _select
from tts.types import Candidate

GRID = (1, 2, 3, 4, 5, 8, 16, 32, 64)
N_PROBLEMS = 2000
Z99 = 2.576
TASK = Task(answer_format="text")  # "The answer is 42." -> "42", cheaper to parse than the math format


def exact_majority(p: float, wrong: tuple[float, ...], n: int) -> float:
    """P(the correct answer wins the vote of n samples), ties to the first sampled (module docstring)."""
    total = 0.0
    for c in range(n + 1):
        m = n - c
        poly = np.zeros((len(wrong) + 1, m + 1))  # [number of wrong answers tied at c][x degree]
        poly[0, 0] = 1.0
        for q in wrong:
            below = np.zeros(m + 1)
            tied = np.zeros(m + 1)
            for d in range(min(c, m) + 1):
                (tied if d == c else below)[d] = q**d / math.factorial(d)
            new = np.zeros_like(poly)
            for j in range(len(wrong)):
                new[j] += np.convolve(poly[j], below)[: m + 1]
                new[j + 1] += np.convolve(poly[j], tied)[: m + 1]
            new[len(wrong)] += np.convolve(poly[len(wrong)], below)[: m + 1]
            poly = new
        inner = sum(poly[j, m] / (j + 1) for j in range(len(wrong) + 1)) * math.factorial(m)
        total += math.comb(n, c) * p**c * inner
    return total


def test_exact_formula_on_small_cases() -> None:
    # two answers, n=3: correct wins with 2 or 3 votes
    assert exact_majority(0.6, (0.4,), 3) == pytest.approx(0.6**3 + 3 * 0.6**2 * 0.4)
    # with the first-sampled tie rule, n=2 equals n=1
    assert exact_majority(0.3, (0.175,) * 4, 2) == pytest.approx(0.3)
    # n=3 over 5 answers by brute force over all 5**3 sample sequences
    probs = (0.3, 0.4, 0.1, 0.1, 0.1)
    brute = 0.0
    for seq in np.ndindex(5, 5, 5):
        cands = [Candidate("", str(a), key=str(a)) for a in seq]
        winner = _select.majority(cands)
        assert winner is not None
        if cands[winner].key == "0":
            brute += math.prod(probs[a] for a in seq)
    assert exact_majority(0.3, probs[1:], 3) == pytest.approx(brute)


def _problems(p: float, wrong: tuple[float, ...], count: int) -> tuple[OracleModel, list[Problem]]:
    model = OracleModel()
    weights = None if len(set(wrong)) == 1 else wrong
    spec = OracleSpec(p_correct=p, wrong_weights=weights, length=(8, 8))
    return model, [model.add(f"q{i}", spec) for i in range(count)]


def simulate(p: float, wrong: tuple[float, ...], seed: int) -> dict[int, float]:
    """Accuracy of majority voting at every n of GRID, from one n=64 self-consistency pass."""
    model, problems = _problems(p, wrong, N_PROBLEMS)
    backend = FakeBackend(model, seed=seed)
    report = run(SelfConsistency(n=max(GRID)), problems, backend, task=TASK, concurrency=N_PROBLEMS)
    assert backend.completions_generated == N_PROBLEMS * max(GRID)
    wins = dict.fromkeys(GRID, 0)
    for result in report.results:
        cands = result.candidates
        assert len(cands) == max(GRID)
        for n in GRID:
            winner = _select.majority(cands[:n])
            wins[n] += winner is not None and cands[winner].key == "42"
    return {n: wins[n] / N_PROBLEMS for n in GRID}


HELPS = [(0.3, (0.175,) * 4), (0.5, (0.125,) * 4), (0.7, (0.075,) * 4), (0.9, (0.025,) * 4)]
HURTS = (0.3, (0.4, 0.1, 0.1, 0.1))


@pytest.mark.parametrize(("p", "wrong"), [*HELPS, HURTS], ids=["p0.3", "p0.5", "p0.7", "p0.9", "p0.3-hurts"])
def test_simulated_majority_matches_closed_form(p: float, wrong: tuple[float, ...]) -> None:
    assert sum(wrong) + p == pytest.approx(1.0)
    exact = {n: exact_majority(p, wrong, n) for n in GRID}
    sim = simulate(p, wrong, seed=int(p * 100) + len(set(wrong)))
    for n in GRID:
        band = Z99 * math.sqrt(max(exact[n] * (1 - exact[n]), 0.0) / N_PROBLEMS) + 0.5 / N_PROBLEMS
        assert abs(sim[n] - exact[n]) <= band, f"n={n}: simulated {sim[n]:.4f}, exact {exact[n]:.4f}"
    if (p, wrong) == HURTS:
        tail = [exact[n] for n in GRID if n >= 8]
        assert all(a > b for a, b in itertools.pairwise(tail)), "voting must hurt from n=8 on"
        se = math.sqrt(0.3 * 0.7 / N_PROBLEMS)
        assert sim[64] < sim[1] - 8 * se, "64 votes must be clearly worse than one sample"
    else:
        assert all(exact[a] <= exact[b] + 1e-12 for a, b in itertools.pairwise(GRID))
        assert sim[64] > sim[1] + 8 * math.sqrt(p * (1 - p) / N_PROBLEMS)


def test_every_n_from_1_to_64_votes_its_prefix() -> None:
    """SelfConsistency(n) for every n in 1..64 answers what a vote over the first n samples of an
    n=64 pass answers (the fake backend's sample streams are prefix-consistent across backends)."""
    model, problems = _problems(0.35, (0.2, 0.15, 0.15, 0.15), 8)
    full = run(SelfConsistency(n=64), problems, FakeBackend(model), task=TASK).results

    async def all_n() -> None:
        for n in range(1, 65):
            backend = FakeBackend(model)
            results = await asyncio.gather(*(solve(SelfConsistency(n=n), p, backend, task=TASK) for p in problems))
            assert backend.completions_generated == n * len(problems)
            for r, f in zip(results, full, strict=True):
                assert len(r.candidates) == n and r.usage.completions == n
                winner = _select.majority(f.candidates[:n])
                assert r.answer == (f.candidates[winner].answer if winner is not None else None), n

    asyncio.run(all_n())
