"""Limits live in the context: checked on submit, caps on the request that would cross a token
limit, stage limits that nest, run totals, wall time, cost; per-problem request seeding."""

from __future__ import annotations

import asyncio
import random

import pytest

from tts import FakeBackend, Problem, Request, SamplingParams, arun, solve
from tts.backends.fake import CostModel
from tts.context import Context
from tts.errors import BudgetExceeded, ConfigError, RequestTimeout
from tts.limits import Limits
from tts.scheduler import Scheduler
from tts.types import Result


class Long:
    """Every sample is 64 tokens long unless max_tokens cuts it."""

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        return " ".join(["w"] * 63 + ["42"]), 64, None


class OneCall:
    """A single-call strategy: one n=16 request, no limit handling of its own."""

    name = "one_call"

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        completions = await ctx.generate(
            Request(problem.question, SamplingParams(n=16, temperature=0.7, max_tokens=64))
        )
        return Result.choose(problem, [ctx.parse(c) for c in completions], winner=0)


class Calls:
    """k sequential calls; catches the budget and returns what it has (a cut result)."""

    name = "calls"

    def __init__(self, k: int) -> None:
        self.k = k

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        out = []
        try:
            for _ in range(self.k):
                out += await ctx.generate(Request(problem.question, SamplingParams(max_tokens=64, temperature=0)))
        except BudgetExceeded:
            r = Result.choose(problem, [ctx.parse(c) for c in out], winner=0 if out else None)
            r.status = "cut"
            return r
        return Result.choose(problem, [ctx.parse(c) for c in out], winner=0)


P = Problem("p", "question", "42")


def test_single_call_is_capped_within_one_decode_step_per_sample() -> None:
    backend = FakeBackend(Long())
    result = asyncio.run(solve(OneCall(), P, backend, limits=Limits(max_completion_tokens=50)))
    assert result.ok
    assert result.usage.completion_tokens <= 50 + 16
    assert result.usage.completion_tokens == 16 * (50 // 16)
    assert backend.completion_tokens == result.usage.completion_tokens


def test_without_a_limit_the_request_is_not_capped() -> None:
    result = asyncio.run(solve(OneCall(), P, FakeBackend(Long())))
    assert result.usage.completion_tokens == 16 * 64


def test_a_reached_limit_raises_and_a_strategy_may_return_a_cut_result() -> None:
    backend = FakeBackend(Long())
    result = asyncio.run(solve(Calls(5), P, backend, limits=Limits(max_calls=2)))
    assert result.status == "cut" and result.ok and result.answer is not None
    assert backend.requests == 2 and result.usage.calls == 2


def test_uncaught_budget_fails_the_problem_only() -> None:
    problems = [Problem(str(i), "question", "42") for i in range(3)]
    report = asyncio.run(arun(OneCall(), problems, FakeBackend(Long()), limits=Limits(max_calls=0 + 1)))
    assert all(r.ok for r in report.results)
    report = asyncio.run(arun(Calls(3), problems, FakeBackend(Long()), limits=Limits(max_calls=1)))
    assert [r.status for r in report.results] == ["cut"] * 3


def test_stage_limits_nest_inside_problem_limits() -> None:
    async def main() -> tuple[int, int]:
        sched = Scheduler(FakeBackend(Long()))
        ctx = Context(sched, problem=P, limits=Limits(max_calls=3))
        stage = ctx.limited(Limits(max_calls=1), "verifier")
        await stage.generate(Request("q", SamplingParams(temperature=0)))
        with pytest.raises(BudgetExceeded, match="verifier: max_calls=1"):
            stage.submit(Request("q", SamplingParams(temperature=0)))
        await ctx.generate(Request("q", SamplingParams(temperature=0)))
        await ctx.generate(Request("q", SamplingParams(temperature=0)))
        with pytest.raises(BudgetExceeded, match="problem: max_calls=3"):
            ctx.submit(Request("q", SamplingParams(temperature=0)))
        return ctx.usage.calls, stage.usage.calls

    assert asyncio.run(main()) == (3, 1)  # the stage's spend is the problem's spend


def test_total_limits_stop_the_run() -> None:
    problems = [Problem(str(i), "question", "42") for i in range(10)]
    backend = FakeBackend(Long())
    report = asyncio.run(
        arun(OneCall(), problems, backend, concurrency=1, total_limits=Limits(max_completion_tokens=2000))
    )
    # each problem costs 16 x 64 = 1024 tokens: the second is capped to what remains, then the run stops
    assert len(report.results) == 2 and report.unstarted == 8
    assert report.usage.completion_tokens <= 2000 + 16


def test_wall_time_is_a_timeout() -> None:
    backend = FakeBackend(Long(), cost=CostModel(per_batch=1.0))
    result = asyncio.run(solve(Calls(5), P, backend, limits=Limits(max_wall_time=2.5)))
    assert result.status == "timeout" and not result.ok and "max_wall_time" in (result.error or "")


def test_cost_limit_needs_pricing() -> None:
    with pytest.raises(ConfigError, match="pricing"):
        Context(Scheduler(FakeBackend(Long())), problem=P, limits=Limits(max_cost=1.0))


def test_limits_are_strict_and_bounded() -> None:
    for bad in (
        {"max_calls": "3"},
        {"max_calls": 0},
        {"max_wall_time": float("nan")},
        {"max_tokens": 1.5},
        {"max_token": 3},
    ):
        with pytest.raises(ValueError):
            Limits.model_validate(bad)


def test_seed_requests_make_a_problem_independent_of_what_else_runs() -> None:
    class Random:
        def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
            return f"The answer is {rng.randint(0, 10**6)}.", 5, None

    class Sample:
        name = "sample"

        async def solve(self, problem: Problem, ctx: Context) -> Result:
            cands = [
                ctx.parse(c)
                for c in await ctx.generate(Request(problem.question, SamplingParams(n=4, temperature=1.0)))
            ]
            return Result.choose(problem, cands, winner=0)

    a = [Problem("a", "qa"), Problem("b", "qb")]
    r1 = asyncio.run(arun(Sample(), a, FakeBackend(Random()), seed=7, seed_requests=True))
    r2 = asyncio.run(arun(Sample(), a[1:], FakeBackend(Random()), seed=7, seed_requests=True))
    assert [c.answer for c in r1.results[1].candidates] == [c.answer for c in r2.results[0].candidates]
    r3 = asyncio.run(arun(Sample(), a[1:], FakeBackend(Random()), seed=8, seed_requests=True))
    assert [c.answer for c in r3.results[0].candidates] != [c.answer for c in r2.results[0].candidates]


def test_failed_problems_count_as_wrong_and_rates_are_reported() -> None:
    class Flaky:
        name = "flaky"

        async def solve(self, problem: Problem, ctx: Context) -> Result:
            if problem.id.startswith("bad"):
                raise RuntimeError("engine went away")
            if problem.id.startswith("slow"):
                raise RequestTimeout("too slow")
            out = [ctx.parse(c) for c in await ctx.generate(Request(problem.question, SamplingParams(temperature=0)))]
            return Result.choose(problem, out, winner=0)

    problems = [
        Problem("ok1", "q", "42"),
        Problem("bad1", "q", "42"),
        Problem("bad2", "q", "42"),
        Problem("slow1", "q", "42"),
    ]
    s = asyncio.run(arun(Flaky(), problems, FakeBackend(Long()))).summary()
    assert s.accuracy == 0.25 and s.accuracy_answered == 1.0
    assert s.failure_rate == 0.5 and s.timeout_rate == 0.25 and s.cut_rate == 0.0 and s.failures == 3


def test_latency_is_per_problem_and_per_request_on_the_virtual_clock() -> None:
    """Four one-call problems, two in flight at a time, each batch costs 1 s of virtual time: every
    problem's latency is 1 s (from its first request), not the run's 2 s; QPS is 4 / 2 s."""
    backend = FakeBackend(Long(), cost=CostModel(per_batch=1.0, prefill_per_token=0.0, decode_step=0.0))
    problems = [Problem(str(i), "question", "42") for i in range(4)]
    report = asyncio.run(arun(Calls(1), problems, backend, concurrency=2))
    s = report.summary()
    assert [r.latency for r in report.results] == [1.0, 1.0, 1.0, 1.0]
    assert report.wall_time == 2.0 and s.latency_p50 == 1.0 and s.latency_p95 == 1.0
    assert s.request_latency_p50 == 1.0 and s.qps == 2.0


def test_a_stage_budget_is_per_problem_across_its_calls() -> None:
    async def main() -> None:
        ctx = Context(Scheduler(FakeBackend(Long())), problem=P)
        for _ in range(2):
            stage = ctx.limited(Limits(max_calls=2), "judge")
            await stage.generate(Request("q", SamplingParams(temperature=0)))
        with pytest.raises(BudgetExceeded, match="judge: max_calls=2"):
            ctx.limited(Limits(max_calls=2), "judge").submit(Request("q", SamplingParams(temperature=0)))

    asyncio.run(main())


def test_progress_reports_samples_as_they_land() -> None:
    seen = []
    problems = [Problem(str(i), "question", "42") for i in range(3)]
    asyncio.run(arun(OneCall(), problems, FakeBackend(Long()), progress=seen.append))
    assert seen[0].done == 0 and seen[0].completions == 48 and seen[0].completion_tokens == 48 * 64
    assert [p.done for p in seen[1:]] == [1, 2, 3] and seen[-1].total == 3
