"""Self-consistency: majority (unchanged default), weighted votes, DeepConf filtering and early
stopping (ESC, Beta, Dirichlet, consensus) on scripted replies, with the backend's counters and the
scheduler's Usage pinned; the adaptive benchmark's claim; one run on the real hf backend."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tts import FakeBackend, Problem, Request, SamplingParams, SelfConsistency, load_dataset, run, solve
from tts.strategies import _select, _stop
from tts.types import Candidate, Completion, Score

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def replies(*answers: str) -> list[str]:
    return [f"The answer is {a}." for a in answers]


class Confident:
    """A reply model with scripted answers and mean token logprobs, consumed in order."""

    def __init__(self, items: Sequence[tuple[str, float]], tokens: int = 4) -> None:
        self.items = list(items)
        self.tokens = tokens

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        answer, lp = self.items.pop(0)
        return f"The answer is {answer}.", self.tokens, lp


# ---------------------------------------------------------------- default: one request, majority


def test_default_draws_one_n_request_and_votes_the_majority() -> None:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies("7", "42", "42", "9", "7", "42")})
    result = asyncio.run(solve(SelfConsistency(n=6), PROBLEM, backend))
    assert result.answer == "42" and result.winner == 1
    assert result.meta == {"votes": {"7": 2, "42": 3, "9": 1}}
    assert backend.requests == 1 and backend.completions_generated == 6
    assert result.usage.completions == 6 and result.usage.calls == 1
    assert result.usage.completion_tokens == backend.completion_tokens


# ---------------------------------------------------------------- weighted votes


def test_seq_logprob_weights_favour_the_likelier_sequence() -> None:
    long = "Let me think about this for a long while, step after step after step. The answer is 42."
    backend = FakeBackend.scripted(by_prompt={"6 times 7": [long, "The answer is 7.", long]})
    plain = asyncio.run(solve(SelfConsistency(n=3), PROBLEM, backend))
    assert plain.answer == "42"
    backend = FakeBackend.scripted(by_prompt={"6 times 7": [long, "The answer is 7.", long]})
    result = asyncio.run(solve(SelfConsistency(n=3, weight="seq_logprob"), PROBLEM, backend))
    request = result.trace.events[0].request
    assert request is not None and request.params.logprobs == 0, "logprob weights turn on logprobs"
    # the fake backend gives -0.5 per token: 4 tokens vs 18 -> exp(0) = 1 against 2 * exp(-7)
    assert result.answer == "7" and result.meta["weights"]["7"] == pytest.approx(1.0)
    assert result.meta["weights"]["42"] == pytest.approx(2 * math.exp(-0.5 * 14))
    assert result.meta["votes"] == {"42": 2, "7": 1}


def test_mean_logprob_and_confidence_weights() -> None:
    items = [("42", -2.0), ("42", -2.0), ("7", -0.1), ("42", -2.0), ("7", -0.1)]
    for weight in ("mean_logprob", "confidence"):
        backend = FakeBackend(Confident(items))
        result = asyncio.run(solve(SelfConsistency(n=5, weight=weight), PROBLEM, backend))
        assert result.answer == "7", weight  # 2 * e^-0.1 = 1.81 beats 3 * e^-2 = 0.41
        assert result.meta["weights"]["42"] == pytest.approx(3 * math.exp(-2.0))
        assert result.winner == 2


class Likes:
    """A test verifier: scores by answer from a table."""

    name = "likes"

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls = 0

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: object) -> list[Score]:
        self.calls += 1
        return [Score(self.table.get(c.answer or "", 0.0), verifier=self.name) for c in candidates]


def test_score_weights_come_from_the_verifier() -> None:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies("42", "7", "42", "7", "42")})
    likes = Likes({"7": 1.0, "42": 0.2})
    result = asyncio.run(solve(SelfConsistency(n=5, weight="score", scorers=[likes]), PROBLEM, backend))
    assert result.answer == "7" and likes.calls == 1 and result.usage.verifier_calls == 5  # one per judged candidate
    assert result.meta["weights"] == pytest.approx({"42": 0.6, "7": 2.0})
    assert [c.score for c in result.candidates] == [0.2, 1.0, 0.2, 1.0, 0.2]


def test_score_weight_without_a_verifier_says_how_to_give_one() -> None:
    backend = FakeBackend.scripted(default="The answer is 3.")
    result = run(SelfConsistency(n=2, weight="score"), [PROBLEM], backend).results[0]
    assert result.error is not None and "needs a verifier" in result.error


# ---------------------------------------------------------------- DeepConf filtering


def test_deepconf_offline_keeps_the_most_confident_fraction() -> None:
    items = [("7", -1.5)] * 6 + [("42", -0.2)] * 4
    backend = FakeBackend(Confident(items))
    result = asyncio.run(solve(SelfConsistency(n=10, keep=0.4), PROBLEM, backend))
    assert result.answer == "42" and result.meta["kept"] == 4 and result.meta["votes"] == {"42": 4}
    assert len(result.candidates) == 10 and backend.completions_generated == 10 and backend.requests == 1
    backend = FakeBackend(Confident(items))
    assert asyncio.run(solve(SelfConsistency(n=10), PROBLEM, backend)).answer == "7"


def test_deepconf_online_sets_the_bar_on_warmup_and_stops_on_consensus() -> None:
    hi, lo = -0.2, -1.5
    items = [
        ("42", hi),
        ("7", hi),
        ("7", lo),
        ("42", lo),  # warmup: keep 0.5 -> bar = hi
        ("42", hi),
        ("7", lo),  # 7 dropped: 42 x2, 7 x1 (share 0.67)
        ("42", hi),
        ("42", hi),  # 42 x4, 7 x1: share 0.8 -> stop
        *[("7", hi)] * 8,
    ]
    backend = FakeBackend(Confident(items))
    sc = SelfConsistency(n=16, keep=0.5, online=True, warmup=4, window=2, stop="consensus", threshold=0.8)
    result = asyncio.run(solve(sc, PROBLEM, backend))
    assert result.answer == "42"
    assert result.meta["votes"] == {"42": 4, "7": 1} and result.meta["kept"] == 5
    assert result.meta["samples"] == 8 and result.meta["stopped"] is True
    assert backend.completions_generated == 8 and backend.requests == 3
    assert [e.request.params.n for e in result.trace.events if e.request] == [4, 2, 2]
    assert result.usage.completions == 8


def test_confidence_kinds_and_top_fraction() -> None:
    lps = [-0.1] * 6 + [-3.0] * 2 + [-0.1] * 4
    c = Completion("x", token_count=12, logprobs=lps)
    assert _select.confidence(c, "mean") == pytest.approx(sum(lps) / 12)
    assert _select.confidence(c, "lowest_group", group=2) == pytest.approx(-3.0)
    assert _select.confidence(c, "lowest_group", group=4) == pytest.approx(-1.55)
    assert _select.confidence(c, "lowest_group", group=64) == pytest.approx(sum(lps) / 12)
    assert _select.confidence(Completion("x", 3), "mean") is None
    assert _select.top_fraction([0.1, None, 0.5, 0.5, -1.0], 0.5) == [2, 3]
    assert _select.top_fraction([0.1, 0.5, 0.5, 0.5], 0.5) == [1, 2]  # equal values: earlier kept
    assert _select.top_fraction([None, None], 0.5) == []


# ---------------------------------------------------------------- early stopping


def test_esc_stops_at_the_first_unanimous_window() -> None:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies("42", "7", "42", "42", *["42"] * 4, *["9"] * 8)})
    result = asyncio.run(solve(SelfConsistency(n=16, stop="esc", window=4), PROBLEM, backend))
    assert result.answer == "42" and result.meta["samples"] == 8 and result.meta["stopped"] is True
    assert backend.requests == 2 and backend.completions_generated == 8
    assert result.usage.completions == 8 and result.usage.calls == 2
    assert result.usage.completion_tokens == backend.completion_tokens


def test_beta_rule_matches_the_posterior_and_stops_at_threshold() -> None:
    grid = np.linspace(0.0, 1.0, 200_001)
    for a, b in [(1, 0), (4, 0), (5, 1), (6, 1), (9, 4)]:
        density = grid**a * (1 - grid) ** b
        numeric = density[grid > 0.5].sum() / density.sum()
        assert _stop.beta_confidence(a, b) == pytest.approx(numeric, abs=1e-4)
    # leader vs runner-up: (6, 1) is the first count past 0.95 on this sequence -> 7 samples
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies("42", "42", "7", *["42"] * 20)})
    result = asyncio.run(solve(SelfConsistency(n=32, stop="beta", window=1), PROBLEM, backend))
    assert _stop.beta_confidence(5, 1) < 0.95 < _stop.beta_confidence(6, 1)
    assert result.meta["samples"] == 7 and backend.requests == 7 and backend.completions_generated == 7
    assert result.usage.completions == 7 and result.answer == "42"


def test_decided_vote_stops_even_a_strict_rule() -> None:
    # n=5, 3 votes for 42 and none against: 2 samples left cannot overturn it
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*["42"] * 5)})
    result = asyncio.run(solve(SelfConsistency(n=5, stop="beta", threshold=0.999, window=1), PROBLEM, backend))
    assert result.meta["samples"] == 3 and backend.completions_generated == 3
    tally = _select.Tally()
    for key in ("7", "42", "42"):
        tally.add(key)
    assert not _select.decided(tally, 2) and _select.decided(tally, 0)
    tally = _select.Tally()
    for key in ("42", "42", "7"):
        tally.add(key)
    assert _select.decided(tally, 1), "a tie would go to 42, seen first"


def test_dirichlet_rule_agrees_with_beta_on_two_buckets() -> None:
    for a in (1, 3, 6):
        assert _stop.dirichlet_confidence([a]) == pytest.approx(_stop.beta_confidence(a, 0), abs=0.025)
    assert _stop.dirichlet_confidence([8, 1]) > _stop.dirichlet_confidence([3, 2])
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*["42"] * 32)})
    result = asyncio.run(solve(SelfConsistency(n=32, stop="dirichlet", window=2), PROBLEM, backend))
    assert result.answer == "42" and result.meta["stopped"] is True and result.meta["samples"] < 10
    assert backend.completions_generated == result.meta["samples"]


def test_early_stop_cancels_queued_requests_and_counts_only_generated_tokens() -> None:
    script = {"6 times 7": replies("42", "42", *["7"] * 10)}
    backend = FakeBackend.scripted(by_prompt=script, max_batch=1)  # one request per engine batch
    sc = SelfConsistency(n=12, stop="esc", window=2, lookahead=2)
    result = asyncio.run(solve(sc, PROBLEM, backend))
    assert result.answer == "42" and result.meta["samples"] == 2
    u = result.usage
    assert u.cancelled >= 1, "the requests still queued were cancelled"
    assert backend.completions_generated < 12 and backend.requests < 3
    assert u.completions == backend.completions_generated and u.completion_tokens == backend.completion_tokens
    assert u.calls == backend.requests
    # without look-ahead nothing is wasted
    backend = FakeBackend.scripted(by_prompt=script, max_batch=1)
    result = asyncio.run(solve(SelfConsistency(n=12, stop="esc", window=2), PROBLEM, backend))
    assert backend.completions_generated == 2 and result.usage.cancelled == 0


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="keep must be < 1"):
        SelfConsistency(online=True)
    with pytest.raises(ValueError, match="warmup must be <= n"):
        SelfConsistency(n=8, keep=0.5, online=True, warmup=16)
    with pytest.raises(ValueError):
        SelfConsistency(stop="sometimes")


# ---------------------------------------------------------------- the adaptive benchmark's claim


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_adaptive", ROOT / "bench" / "adaptive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adaptive_reaches_99pct_of_fixed_32_with_at_most_40pct_of_samples() -> None:
    r = _bench().compare(count=1000)
    assert r["fixed_samples"] == 32 * 1000
    assert r["sample_fraction"] <= 0.40, r
    assert r["accuracy_ratio"] >= 0.99, r


# ---------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def hf_backend() -> Any:
    from tts.backends.hf import HFBackend

    return HFBackend()


@pytest.mark.hf
def test_adaptive_weighted_self_consistency_on_hf(hf_backend: Any) -> None:
    data = load_dataset("add1:2")
    sc = SelfConsistency(
        n=4,
        stop="esc",
        window=2,
        weight="mean_logprob",
        proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0.8, max_tokens=24)},
    )
    report = run(sc, data.problems, hf_backend, task=data.task)
    assert len(report.results) == 2
    for r in report.results:
        assert r.error is None and len(r.candidates) in (2, 4)
        assert all(c.completion is not None and c.completion.logprobs for c in r.candidates)
        assert r.usage.completions == len(r.candidates) and r.usage.completion_tokens > 0
    assert report.usage.completions == sum(len(r.candidates) for r in report.results)
