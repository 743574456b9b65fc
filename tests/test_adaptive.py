"""Adaptive compute beyond the stop rule: look-ahead sized from the engine (requests in flight,
cancellations and the virtual clock of the fake engine), online allocation of a run's samples
across its problems, and the adaptive benchmark's claims on a smaller mix."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, Problem, SamplingParams, SelfConsistency, run, solve
from tts.errors import ConfigError
from tts.strategies import _allocation

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def replies(*answers: str) -> list[str]:
    return [f"The answer is {a}." for a in answers]


# ---------------------------------------------------------------- look-ahead

# ESC with windows of 2: (42, 7), (42, 9), (42, 42) -> stops after the third window, 6 samples
SCRIPT = {"6 times 7": replies("42", "7", "42", "9", "42", "42", *["5"] * 10)}


def test_lookahead_auto_keeps_a_window_in_flight_and_saves_round_trips() -> None:
    # every reply is 4 tokens; one decode step costs 1 virtual second: a batch costs 4 s
    plain = FakeBackend.scripted(by_prompt=SCRIPT, cost={"decode_step": 1.0})
    r0 = asyncio.run(solve(SelfConsistency(n=12, stop="esc", window=2), PROBLEM, plain))
    assert plain.batch_sizes == [1, 1, 1] and plain.clock.now == 12.0
    assert plain.completions_generated == 6 and r0.usage.completions == 6 and r0.usage.cancelled == 0

    ahead = FakeBackend.scripted(by_prompt=SCRIPT, cost={"decode_step": 1.0})
    r1 = asyncio.run(solve(SelfConsistency(n=12, stop="esc", window=2, lookahead="auto"), PROBLEM, ahead))
    assert ahead.batch_sizes == [2, 2], "two windows in flight in every engine batch"
    assert ahead.clock.now == 8.0, "two round trips instead of three"
    assert r1.answer == r0.answer == "42" and r1.meta["samples"] == 6
    # the window in flight when the rule fired was generated: charged, never voted
    assert ahead.completions_generated == 8 and r1.usage.completions == 8
    assert r1.usage.completion_tokens == ahead.completion_tokens == 32


def test_lookahead_cancels_what_is_still_queued_when_the_rule_fires() -> None:
    # an engine that takes one request per batch: the look-ahead window still queued is withdrawn
    backend = FakeBackend.scripted(by_prompt=SCRIPT, cost={"decode_step": 1.0}, max_batch=1)
    result = asyncio.run(solve(SelfConsistency(n=12, stop="esc", window=2, lookahead="auto"), PROBLEM, backend))
    assert result.meta["samples"] == 6 and result.usage.cancelled == 1
    assert backend.batch_sizes == [1, 1, 1, 1] and backend.clock.now == 16.0
    assert backend.completions_generated == 8 == result.usage.completions
    assert backend.requests == 4 and result.usage.calls == 4


def test_lookahead_auto_adds_nothing_while_other_problems_fill_the_engine() -> None:
    # 4 sequence slots, 6 problems, windows of 2: the first problem finds the engine empty and
    # sends a look-ahead window; the others find it full and send one window each
    problems = [Problem(f"q{i}", f"What is {i} times 7?", "42") for i in range(6)]
    backend = FakeBackend.scripted(default="The answer is 42.", cost={"decode_step": 1.0, "max_concurrency": 4})
    report = run(SelfConsistency(n=8, stop="esc", window=2, lookahead="auto"), problems, backend, concurrency=6)
    assert backend.batch_sizes == [7] and backend.requests == 7
    assert [r.meta["samples"] for r in report.results] == [2] * 6
    assert backend.completions_generated == 14 == report.usage.completions  # one window not voted
    assert backend.clock.now == 16.0  # 14 sequences in waves of 4, 4 steps each


def test_samples_in_flight_counts_queued_and_running_work() -> None:
    from tts.scheduler import Scheduler
    from tts.types import Request

    async def go() -> list[int]:
        backend = FakeBackend.scripted(default="The answer is 42.")
        s = Scheduler(backend)
        seen = [s.samples_in_flight]
        h1 = s.submit(Request.chat("a", SamplingParams(n=3)))
        h2 = s.submit(Request.chat("b", SamplingParams(n=2)))
        seen.append(s.samples_in_flight)
        h2.cancel()
        seen.append(s.samples_in_flight)
        await h1
        seen.append(s.samples_in_flight)
        return seen

    assert asyncio.run(go()) == [0, 5, 3, 0]


# ---------------------------------------------------------------- online allocation


def test_plan_funds_the_best_gain_per_sample_within_the_budget() -> None:
    curves = [[0.0, 0.5, 0.6], [0.0, 0.1, 0.2], [0.9, 0.9, 0.9]]
    assert _allocation.plan(curves, 1) == [1, 0, 0]
    assert _allocation.plan(curves, 4) == [2, 2, 0], "a flat curve is never funded"
    # a stretch that pays only after two samples is funded as a whole, or not at all
    assert _allocation.plan([[0.0, 0.0, 0.4], [0.0, 0.15]], 2) == [2, 0]
    assert _allocation.plan([[0.0, 0.0, 0.4], [0.0, 0.15]], 1) == [0, 1]
    assert _allocation.plan(curves, 0) == [0, 0, 0]


EASY = [Problem(f"e{i}", f"Easy question {i}?", "42") for i in range(4)]
HARD = [Problem(f"h{i}", f"Hard question {i}?", "42") for i in range(4)]
MIXED = {
    **{f"Easy question {i}?": replies("42") for i in range(4)},
    **{f"Hard question {i}?": replies("42", "7", "9", "42", "7", "42", "42", "9") for i in range(4)},
}


@pytest.mark.parametrize("concurrency", [8, 3])
def test_allocation_spends_the_run_budget_where_votes_are_contested(concurrency: int) -> None:
    backend = FakeBackend.scripted(by_prompt=MIXED)
    sc = SelfConsistency(n=16, budget=6, pilot=4, window=1)
    report = run(sc, EASY + HARD, backend, concurrency=concurrency)
    samples = {r.problem.id: r.meta["samples"] for r in report.results}
    assert all(samples[p.id] == 4 for p in EASY), samples  # settled after the pilot: nothing more
    assert all(samples[p.id] > 4 for p in HARD), samples
    assert sum(samples.values()) == backend.completions_generated == report.usage.completions
    assert backend.completions_generated <= 6 * 8, "never more than budget x problems"
    assert all(r.answer == "42" for r in report.results)
    # uniform n=6 spends the same budget on every problem, the easy ones included
    uniform = FakeBackend.scripted(by_prompt=MIXED)
    run(SelfConsistency(n=6), EASY + HARD, uniform, concurrency=concurrency)
    assert uniform.completions_generated == 48


def test_one_allocator_per_run_and_strategy() -> None:
    class Owner:
        pass

    sched_a, sched_b, owner = Owner(), Owner(), Owner()
    a = _allocation.allocator_for(sched_a, owner, 8, 1)
    assert _allocation.allocator_for(sched_a, owner, 8, 1) is a
    assert _allocation.allocator_for(sched_b, owner, 8, 1) is not a


def test_allocation_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="budget needs a plain count vote"):
        SelfConsistency(budget=8, weight="mean_logprob")
    with pytest.raises(ConfigError, match="budget must be >= pilot=4"):
        SelfConsistency(n=16, budget=2)


# ---------------------------------------------------------------- the benchmark's claims


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_adaptive_claims", ROOT / "bench" / "adaptive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_streams_give_the_same_sample_to_whichever_run_asks() -> None:
    bench = _bench()
    specs, ids = bench.mix(50)
    fixed = bench.PairedOracle(seed=3)
    adaptive = bench.PairedOracle(seed=3)
    problems = [fixed.add(pid, s) for pid, s in zip(ids, specs, strict=True)]
    for pid, s in zip(ids, specs, strict=True):
        adaptive.add(pid, s)
    b1, b2 = FakeBackend(fixed), FakeBackend(adaptive)
    r1 = run(SelfConsistency(n=8), problems, b1, task=bench.TASK)
    r2 = run(SelfConsistency(n=8, stop="esc", window=1, lookahead=0), problems, b2, task=bench.TASK)
    for a, b in zip(r1.results, r2.results, strict=True):
        k = len(b.candidates)
        assert [c.answer for c in a.candidates[:k]] == [c.answer for c in b.candidates]


@pytest.mark.slow
def test_auto_meets_the_targets_on_both_mixes_and_allocation_gains() -> None:
    bench = _bench()
    r = bench.compare(count=1000)
    assert r["sample_fraction"] <= 0.30 and r["accuracy_ratio"] >= 0.99, r
    h = bench.compare(count=1000, shares=bench.HIGH_ENTROPY_MIX, wrong=10)
    assert h["sample_fraction"] <= 0.6 and h["accuracy_ratio"] >= 0.99, h
    a = bench.allocation(count=1000)
    assert a["allocated_samples"] <= a["uniform_samples"] and a["allocation_gain"] >= 0, a
