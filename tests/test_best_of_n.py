"""Best-of-N: selection rules (best, weighted, majority), ties, all-failed fallbacks and combined
verifiers on scripted replies; agreement with pass@n on the oracle backend; one run on hf."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

from tts import (
    FakeBackend,
    OracleModel,
    OracleSpec,
    Problem,
    SamplingParams,
    SelfConsistency,
    Task,
    load_dataset,
    run,
    solve,
)
from tts.context import Context
from tts.stats import pass_at_k
from tts.strategies import _select
from tts.strategies.best_of_n import BestOfN
from tts.types import Candidate, Result, Score

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def replies(*answers: str) -> list[str]:
    return [f"The answer is {a}." for a in answers]


class Table:
    """A test verifier: a score per answer (None: the answer is absent from the table -> 0)."""

    name = "table"

    def __init__(self, table: dict[str, float], passed: dict[str, bool] | None = None) -> None:
        self.table = table
        self.passed = passed or {}
        self.calls = 0

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        self.calls += 1
        return [
            Score(self.table.get(c.answer or "", 0.0), passed=self.passed.get(c.answer or ""), verifier=self.name)
            for c in candidates
        ]


class Exact:
    """Scores 1 iff the candidate's answer key equals the reference's."""

    name = "exact"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        ref = ctx.canonical(problem.reference)
        return [Score(float(c.key == ref), passed=c.key == ref, verifier=self.name) for c in candidates]


def bon(answers: Sequence[str], **kw: Any) -> tuple[FakeBackend, Result]:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*answers)})
    return backend, asyncio.run(solve(BestOfN(**kw), PROBLEM, backend))


def test_best_picks_the_highest_score_with_one_request_and_one_verifier_pass() -> None:
    table = Table({"7": 0.9, "42": 0.5, "9": 0.95})
    backend, result = bon(["42", "7", "9", "42"], n=4, scorers=[table])
    assert result.answer == "9" and result.winner == 2
    assert backend.requests == 1 and backend.completions_generated == 4
    assert table.calls == 1 and result.usage.verifier_calls == 4 and result.usage.completions == 4  # per candidate
    assert result.meta == {"select": "best", "failed": 0}


def test_best_score_ties_go_to_the_earliest_candidate() -> None:
    """The one score tie rule (strategies._select): equal best scores go to the earliest candidate,
    whatever the vote among the tied (the study's best-of-n curve breaks ties the same way)."""
    table = Table({"7": 1.0, "42": 1.0, "9": 0.2})
    _, result = bon(["9", "42", "7", "7", "9", "9"], n=6, scorers=[table])
    assert result.answer == "42" and result.winner == 1  # 7 x2 among the tied does not matter
    _, result = bon(["9", "7", "42", "42"], n=4, scorers=[Table({"7": 1.0, "42": 1.0})])
    assert result.answer == "7" and result.winner == 1


def test_weighted_sums_scores_per_answer_and_majority_skips_the_verifier() -> None:
    table = Table({"7": 0.9, "42": 0.5})
    _, result = bon(["42", "7", "42", "42"], n=4, scorers=[table], select="best")
    assert result.answer == "7"
    _, result = bon(["42", "7", "42", "42"], n=4, scorers=[table], select="weighted")
    assert result.answer == "42" and result.winner == 0  # 1.5 > 0.9
    table = Table({"7": 0.9, "42": 0.5})
    _, result = bon(["42", "7", "7", "42", "42"], n=5, scorers=[table], select="majority")
    assert result.answer == "42" and table.calls == 0 and result.usage.verifier_calls == 0


def test_all_failed_falls_back_to_majority_or_no_answer() -> None:
    answers = ["7", "9", "9", "8"]
    for how in ("best", "weighted"):
        _, result = bon(answers, n=4, scorers=[Exact()], select=how)
        assert result.answer == "9" and result.meta["failed"] == 4, how
        _, result = bon(answers, n=4, scorers=[Exact()], select=how, fallback="none")
        assert result.answer is None and result.winner is None, how
    # scores that say passed=False fail even with a high value; unanswered candidates never win
    cands = [
        Candidate("?", None, scores=[Score(5.0)]),
        Candidate("a", "1", key="1", scores=[Score(9.0, passed=False)]),
        Candidate("b", "2", key="2", scores=[Score(0.1)]),
        Candidate("c", "3", key="3", scores=[Score(math.nan)]),
    ]
    assert _select.best_score(cands) == 2
    assert (
        _select.best_score([Candidate("a", "1", key="1"), Candidate("b", "2", key="2"), Candidate("c", "2", key="2")])
        == 1
    )  # no scores at all: majority
    assert _select.best_score([Candidate("?", None)], fallback="majority") is None


def test_several_verifiers_are_combined_by_weighted_sum() -> None:
    a, b = Table({"7": 1.0, "42": 0.0}), Table({"7": 0.0, "42": 1.0}, passed={"7": True, "42": True})
    _, result = bon(["7", "42"], n=2, scorers=[(a, 0.3), (b, 0.7)])
    assert result.answer == "42" and result.usage.verifier_calls == 4  # 2 candidates x 2 verifiers
    c = result.candidates[0]
    assert [s.verifier for s in c.scores] == ["table", "table", "weighted_sum"]
    assert c.score == pytest.approx(0.3) and c.scores[-1].passed is True
    _, result = bon(["7", "42"], n=2, scorers=[(a, 0.8), (b, 0.2)])
    assert result.answer == "7"


def test_verifiers_by_registered_name() -> None:
    _, result = bon(["7", "42", "7"], n=3, verifiers=["math"])
    assert result.answer == "42" and [c.score for c in result.candidates] == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="verifier"):
        BestOfN(verifiers=["no-such-verifier"]).options.verifiers[0].build()
    backend = FakeBackend.scripted(default="The answer is 3.")
    assert "needs a verifier" in (run(BestOfN(n=2), [PROBLEM], backend).results[0].error or "")


def test_best_of_n_with_an_exact_verifier_matches_unbiased_pass_at_n() -> None:
    """BoN with an exact verifier is correct iff one of its n samples is: its accuracy must match the
    unbiased pass@n estimate (Chen et al.) from 16 independent samples per problem, and the exact
    mean of 1 - (1 - p)^n, within 99% bands."""
    rng = random.Random(7)
    model = OracleModel()
    ps = [rng.uniform(0.02, 0.6) for _ in range(1500)]
    problems = [model.add(f"b{i}", OracleSpec(p_correct=p, length=(6, 6))) for i, p in enumerate(ps)]
    task = Task(answer_format="text")
    n, draws = 4, 16
    backend = FakeBackend(model, seed=1)
    report = run(BestOfN(n=n, scorers=[Exact()]), problems, backend, task=task, concurrency=len(problems))
    assert backend.completions_generated == n * len(problems) and report.usage.verifier_calls == n * len(problems)
    accuracy = report.accuracy
    assert accuracy is not None
    sampled = run(
        SelfConsistency(n=draws), problems, FakeBackend(model, seed=2), task=task, concurrency=len(problems)
    ).results
    estimate = sum(pass_at_k(draws, sum(c.key == "42" for c in r.candidates), n) for r in sampled) / len(problems)
    exact = sum(1 - (1 - p) ** n for p in ps) / len(problems)
    N = len(problems)
    assert abs(accuracy - exact) <= 2.576 * math.sqrt(exact * (1 - exact) / N)
    assert abs(accuracy - estimate) <= 2.576 * math.sqrt(2 * estimate * (1 - estimate) / N)
    assert abs(estimate - exact) <= 2.576 * math.sqrt(exact * (1 - exact) / N)


@pytest.fixture(scope="module")
def hf_backend() -> Any:
    from tts.backends.hf import HFBackend

    return HFBackend()


@pytest.mark.hf
def test_best_of_n_on_hf(hf_backend: Any) -> None:
    data = load_dataset("add1:2")
    strategy = BestOfN(
        n=3,
        verifiers=["math"],
        proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0.8, max_tokens=24)},
    )
    report = run(strategy, data.problems, hf_backend, task=data.task)
    assert len(report.results) == 2
    for r in report.results:
        assert r.error is None and len(r.candidates) == 3
        assert all(c.score is not None for c in r.candidates)
        assert r.usage.completions == 3 and r.usage.verifier_calls == 3 and r.usage.completion_tokens > 0
    assert report.usage.completions == 6
