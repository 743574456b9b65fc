"""Dynamic batch size under a P95 step-time cap and length grouping: the controller on a known
step-time line, the fake engine's decode waves on the virtual clock, padding counted with and
without grouping, the benchmark's claim, and (marked hf) the real transformers backend."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, Request, SamplingParams
from tts.backends._hf_batching import DynamicBatchSize, by_length, pack, padding
from tts.backends.fake import CostModel
from tts.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def step(size: int) -> float:
    return 0.002 + 0.0001 * size


def test_the_batch_grows_to_the_largest_size_under_the_cap_and_stays_there() -> None:
    ctl = DynamicBatchSize(cap=0.0138, largest=256)  # 0.002 + 0.0001 x 118 = 0.0138
    assert ctl.size == 64  # a quarter of the largest to start
    for _ in range(200):
        ctl.observe(step(ctl.size))
    assert ctl.history[-1] == ctl.size and 100 <= ctl.size <= 118
    assert all(step(s) <= 0.0138 for s in ctl.history)  # the line fit keeps every step under the cap
    assert max(ctl.history) == max(ctl.history[-100:])  # settled, not oscillating upwards


def test_the_batch_shrinks_when_steps_get_slower_and_never_below_smallest() -> None:
    ctl = DynamicBatchSize(cap=0.01, largest=64, start=64, smallest=4)
    size = ctl.observe(0.02)  # a step over the cap: three quarters
    assert size == 48
    for _ in range(30):
        ctl.observe(1.0)  # the engine got slow: the size falls to the floor
    assert ctl.size == 4
    with pytest.raises(ConfigError, match="step_time_cap must be > 0"):
        DynamicBatchSize(cap=0.0, largest=8)


def test_the_fake_engine_sizes_its_decode_waves_with_the_controller() -> None:
    cost = CostModel(decode_step=0.002, decode_per_seq=0.0001, max_concurrency=256)
    fake = FakeBackend.scripted(
        default="one two three four five six seven eight nine ten", cost=cost, step_time_cap=0.0138
    )

    async def go() -> None:
        await fake.submit(Request("q", SamplingParams(n=1000)))

    asyncio.run(go())
    sizes = [n for n, _, _ in fake.waves]
    assert sum(sizes) == 1000 and sizes[0] == 64 and max(sizes) <= 118
    assert fake.clock() == pytest.approx(sum(10 * (0.002 + 0.0001 * n) for n in sizes))
    fixed = FakeBackend.scripted(default="one two", cost=cost)
    asyncio.run(_one(fixed, Request("q", SamplingParams(n=600))))
    assert [n for n, _, _ in fixed.waves] == [256, 256, 88] and fixed.dynamic is None


async def _one(fake: FakeBackend, request: Request) -> None:
    await fake.submit(request)


def test_length_grouping_cuts_the_padded_prompt_positions() -> None:
    lengths = [5, 50, 6, 52, 4, 49, 7, 51]
    requests = [Request(f"p{i}") for i in range(8)]
    members = list(range(8))
    plain = padding(pack(members, requests, 2), lengths)
    grouped = padding(pack(by_length(members, lengths), requests, 2), lengths)
    assert plain == 45 + 46 + 45 + 44 and grouped == 1 + 1 + 1 + 1
    assert by_length(members, lengths) == [4, 0, 2, 6, 5, 1, 7, 3]


def test_benchmark_claim(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_dynamic_batch", ROOT / "bench" / "dynamic_batch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    lines = capsys.readouterr().out.strip().splitlines()
    over = dict(line.split("=") for line in lines[-2:])
    assert float(over["p95_over_cap"]) <= 1.0 and float(over["throughput_ratio"]) >= 0.8


@pytest.mark.hf
def test_length_grouping_and_dynamic_batches_on_the_hf_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tts.backends.hf import HFBackend

    threads = torch.get_num_threads()
    backend = HFBackend(seed=0, threads=1, max_batch_sequences=2)
    params = SamplingParams(temperature=0, max_tokens=2)
    short, long = "Hi?", "Please explain in detail why the sky looks blue during a clear summer day?"
    requests = [Request.chat(q, params) for q in (short, long, short + " ", long + " ")]

    def padded(grouping: bool) -> tuple[int, int]:
        monkeypatch.setattr(backend, "options", backend.options.model_copy(update={"length_grouping": grouping}))
        before, calls = backend.padded_tokens, backend.generate_calls
        asyncio.run(_all(backend, requests))
        return backend.padded_tokens - before, backend.generate_calls - calls

    try:
        (plain, calls_plain), (grouped, calls_grouped) = padded(False), padded(True)
        assert calls_plain == calls_grouped == 2
        assert grouped < plain and grouped <= 2  # like lengths share a call
        backend.dynamic = DynamicBatchSize(cap=1e-9, largest=2, start=2)  # every step is over this cap
        asyncio.run(_all(backend, requests))
        assert backend.dynamic.history[0] == 1 and backend.dynamic.size == 1
    finally:
        torch.set_num_threads(threads)


async def _all(backend: Any, requests: list[Request]) -> None:
    await asyncio.gather(*(backend.submit(r) for r in requests))


# ---------------------------------------------------------------- objectives


def test_each_objective_sets_its_knobs_and_leaves_set_ones_alone() -> None:
    from tts.objectives import policy

    lat, thr, cost = policy("latency"), policy("throughput"), policy("cost")
    assert lat.backend_options("fake", {}, 0.02) == {"max_batch": 4, "step_time_cap": pytest.approx(0.005)}
    assert lat.backend_options("fake", {"max_batch": 16}, 0.02)["max_batch"] == 16  # the pipeline's wins
    assert lat.backend_options("hf", {}, None) == {} and lat.priority == -1
    assert thr.backend_options("hf", {}) == {"length_grouping": True} and thr.backend_options("vllm", {}) == {}
    assert cost.cache and cost.strategy_options({"n": 8}, {"n", "stop"}) == {"n": 8, "stop": "auto"}
    assert cost.strategy_options({"n": 8, "stop": "esc"}, {"n", "stop"})["stop"] == "esc"
    assert cost.strategy_options({"n": 8}, {"n"}) == {"n": 8}  # a strategy without early stopping
    assert not thr.cache and thr.strategy_options({}, {"stop"}) == {}
    with pytest.raises(ConfigError, match="objective must be one of latency, throughput, cost, got 'speed'"):
        policy("speed")


def test_objectives_benchmark_each_policy_wins_its_workload(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_objectives", ROOT / "bench" / "objectives.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "objectives_won=3/3"
    assert [line.split("= ")[1] for line in out if "best policy" in line] == ["latency", "throughput", "cost"]


@pytest.mark.hf
def test_hf_cancel_stops_a_running_call_between_decode_steps_and_drops_a_queued_one() -> None:
    import time

    import torch

    from tts.backends.hf import HFBackend
    from tts.errors import Cancelled
    from tts.scheduler import Scheduler
    from tts.types import Usage

    threads = torch.get_num_threads()
    backend = HFBackend(seed=0, threads=1)
    assert backend.capabilities.aborts
    scheduler = Scheduler(backend)
    running, queued = Usage(), Usage()

    async def go() -> tuple[Any, Any, float]:
        long = scheduler.submit(Request.chat("Tell a story.", SamplingParams(max_tokens=400, ignore_eos=True)), running)
        await asyncio.sleep(0.05)  # its generate call has started
        later = scheduler.submit(Request.chat("Say hi.", SamplingParams(temperature=0, max_tokens=4)), queued)
        await asyncio.sleep(1.5)
        start = time.perf_counter()
        later.cancel()
        long.cancel()
        got = await asyncio.gather(long.future, later.future, return_exceptions=True)
        while scheduler._inflight:  # the engine stops the running call at its next step
            await asyncio.sleep(0.02)
        return got[0], got[1], time.perf_counter() - start

    try:
        calls = backend.generate_calls
        partial, dropped, waited = asyncio.run(go())
    finally:
        torch.set_num_threads(threads)
    assert isinstance(dropped, Cancelled) and queued.completion_tokens == 0 and queued.cancelled == 1
    assert backend.generate_calls == calls + 1  # the queued request never ran
    assert isinstance(partial, Cancelled)  # the caller's handle says cancelled ...
    assert 0 < running.completion_tokens < 400 and running.cancelled == 1  # ... and the tokens are charged
    assert backend.completion_tokens == running.completion_tokens
    assert waited < 5.0  # stopped at the next decode step, not after 400 tokens
