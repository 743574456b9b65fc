"""Scheduler, fake backend and runner: batching, one prefill per prompt, usage, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from tts import (
    Cancelled,
    Context,
    CostModel,
    FakeBackend,
    OracleModel,
    OracleSpec,
    Problem,
    Request,
    SamplingParams,
    Scheduler,
    SelfConsistency,
    UnsupportedControl,
    arun,
    run,
)


def oracle_problems(count: int, p: float = 0.7) -> tuple[OracleModel, list[Problem]]:
    model = OracleModel()
    return model, [model.add(f"p{i}", OracleSpec(p_correct=p, length=(10, 30))) for i in range(count)]


def test_64_problems_sc8_are_batched_with_one_prefill_per_prompt() -> None:
    model, problems = oracle_problems(64)
    backend = FakeBackend(model)
    report = run(SelfConsistency(n=8), problems, backend, concurrency=64)
    assert backend.calls <= 3, f"expected a handful of batched calls, got {backend.calls}"
    assert backend.requests == 64, "each problem's 8 samples travel as one n=8 request"
    assert backend.completions_generated == 512
    prompt_words = [
        len(c.completion.prompt_text.split())
        for r in report.results
        for c in r.candidates[:1]
        if c.completion and c.completion.prompt_text
    ]
    assert len(prompt_words) == 64
    assert backend.prefill_tokens == sum(prompt_words), "64 prompts prefilled, not 512"
    u = report.usage
    assert u.computed_prompt_tokens == backend.prefill_tokens
    assert u.completions == 512 and u.calls == 64


def test_usage_totals_equal_sum_of_completions() -> None:
    model, problems = oracle_problems(20)
    backend = FakeBackend(model)
    report = run(SelfConsistency(n=5), problems, backend)
    completions = [c.completion for r in report.results for c in r.candidates]
    assert report.usage.completion_tokens == sum(c.token_count for c in completions if c is not None)
    assert report.usage.completion_tokens == backend.completion_tokens
    assert sum(r.usage.completion_tokens for r in report.results) == report.usage.completion_tokens
    assert sum(r.usage.prompt_tokens for r in report.results) == report.usage.prompt_tokens


def test_identical_prompts_merge_into_one_n_request() -> None:
    backend = FakeBackend.scripted(default="The answer is 3.")

    async def main() -> list[list]:
        sched = Scheduler(backend)
        ctx = Context(sched)
        req = Request("same prompt", SamplingParams(n=2, temperature=0.8))
        outs = await ctx.generate_many([req, req, req])
        assert sched.stats.merged_requests == 2
        assert sched.usage.prompt_tokens == 3 * 2 and sched.usage.cached_prompt_tokens == 2 * 2
        return outs

    outs = asyncio.run(main())
    assert [len(o) for o in outs] == [2, 2, 2]
    assert backend.requests == 1 and backend.completions_generated == 6 and backend.prefill_tokens == 2


def test_seeded_and_greedy_requests_are_not_merged() -> None:
    backend = FakeBackend.scripted(default="ok")

    async def main() -> None:
        ctx = Context(Scheduler(backend))
        greedy = Request("p", SamplingParams(temperature=0))
        seeded = Request("p", SamplingParams(seed=1))
        await ctx.generate_many([greedy, greedy, seeded, seeded])

    asyncio.run(main())
    assert backend.requests == 4


def test_cancel_removes_queued_work() -> None:
    backend = FakeBackend.scripted(default="x")

    async def main() -> None:
        sched = Scheduler(backend)
        ctx = Context(sched)
        keep = ctx.submit(Request("a", SamplingParams(n=3)))
        drop = ctx.submit(Request("b", SamplingParams(n=5)))
        assert drop.cancel() and drop.cancelled()
        assert len(await keep) == 3
        with pytest.raises(Cancelled):
            await drop
        assert sched.usage.cancelled == 1

    asyncio.run(main())
    assert backend.completions_generated == 3 and backend.requests == 1


def test_priority_orders_the_backend_queue() -> None:
    backend = FakeBackend.scripted(default="x", max_batch=1)
    order: list[str] = []

    async def main() -> None:
        ctx = Context(Scheduler(backend))
        handles = [
            ctx.submit(Request(name, SamplingParams(), priority=prio))
            for name, prio in [("low", 5), ("high", -1), ("mid", 0)]
        ]
        for h in handles:
            h.future.add_done_callback(lambda f, h=h: order.append(h.request.prompt))  # type: ignore[misc]
        await asyncio.gather(*handles)

    asyncio.run(main())
    assert order == ["high", "mid", "low"]


def test_unsupported_control_is_refused_with_alternatives() -> None:
    backend = FakeBackend.scripted(default="x")

    async def main() -> None:
        ctx = Context(Scheduler(backend))
        await ctx.generate(Request("p", SamplingParams(beam_width=2, temperature=0)))

    with pytest.raises(UnsupportedControl, match=r"backend 'fake' does not support beam_search"):
        asyncio.run(main())


def test_virtual_clock_latency_is_exact() -> None:
    model, problems = oracle_problems(4)
    cost = CostModel(prefill_per_token=0.001, decode_step=0.01, max_concurrency=8)
    backend = FakeBackend(model, cost=cost)
    report = run(
        SelfConsistency(n=4, proposer={"name": "few_shot", "sampling": {"temperature": 0.7, "max_tokens": 64}}),
        problems,
        backend,
    )
    prompt = sum(len(r.candidates[0].completion.prompt_text.split()) for r in report.results)  # type: ignore[union-attr]
    lengths = [c.completion.token_count for r in report.results for c in r.candidates]  # type: ignore[union-attr]
    expected = prompt * 0.001 + (max(lengths[:8]) + max(lengths[8:])) * 0.01
    assert report.wall_time == pytest.approx(expected)
    assert all(r.latency == pytest.approx(expected) for r in report.results)


def test_run_works_inside_a_running_event_loop() -> None:
    model, problems = oracle_problems(3)

    async def notebook_cell() -> float | None:
        report = run(SelfConsistency(n=3), problems, FakeBackend(model))  # blocking call inside a loop
        return report.accuracy

    assert asyncio.run(notebook_cell()) is not None


def test_failures_are_isolated_per_problem() -> None:
    backend = FakeBackend.scripted(by_prompt={"good": "The answer is 1."})
    problems = [Problem("a", "good question", "1"), Problem("b", "bad question", "2")]
    report = asyncio.run(arun(SelfConsistency(n=2), problems, backend))
    assert report.results[0].correct is True
    assert report.results[1].error is not None and "no scripted reply" in report.results[1].error
    assert report.summary().failures == 1 and report.usage.failures == 1


def test_cancelled_in_flight_work_is_still_counted() -> None:
    """A request cancelled while its batch runs: the caller sees Cancelled, usage still counts the
    tokens the engine generated (they were paid for)."""
    from tts import Capabilities, Completion
    from tts.backends import Batcher

    async def main() -> None:
        gate = asyncio.Event()

        async def run_batch(requests: list[Request]) -> list[list[Completion] | BaseException]:
            await gate.wait()
            return [[Completion("x", 5, prompt_tokens=3) for _ in range(r.params.n)] for r in requests]

        class Slow:
            name = "slow"
            capabilities = Capabilities()

            def __init__(self) -> None:
                self.batcher = Batcher(run_batch)

            def submit(self, request: Request):  # type: ignore[no-untyped-def]
                return self.batcher.submit(request)

        sched = Scheduler(Slow())  # type: ignore[arg-type]
        ctx = Context(sched)
        handle = ctx.submit(Request("p", SamplingParams(n=2)))
        for _ in range(5):  # let the scheduler flush and the batch start
            await asyncio.sleep(0)
        assert sched.stats.backend_requests == 1
        assert handle.cancel()
        with pytest.raises(Cancelled):
            await handle
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert sched.usage.cancelled == 1
        assert sched.usage.completion_tokens == 10 and ctx.usage.completion_tokens == 10

    asyncio.run(main())


def test_fewer_samples_than_asked_are_topped_up_or_fail() -> None:
    import asyncio as _asyncio

    from tts import BackendError, FakeBackend, Request, SamplingParams
    from tts.scheduler import Scheduler

    class Capped(FakeBackend):
        """A server that returns at most ``cap`` choices per request."""

        def __init__(self, cap: int) -> None:
            super().__init__()
            self.cap = cap

        def submit(self, request: Request):  # type: ignore[no-untyped-def]
            if request.params.n > self.cap:
                request = Request(
                    request.prompt, request.params.with_n(self.cap), request.priority, request.assistant_prefix
                )
            return super().submit(request)

    async def main(cap: int) -> tuple[int, int]:
        sched = Scheduler(Capped(cap))
        out = await sched.submit(Request("q", SamplingParams(n=8, temperature=0.7)))
        return len(out), sched.stats.top_ups

    assert _asyncio.run(main(6)) == (8, 1)
    assert _asyncio.run(main(4)) == (8, 1)
    with pytest.raises(BackendError, match="returned 6 of 8 samples"):
        _asyncio.run(main(2))
