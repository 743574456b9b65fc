"""Tokens generated before a cancel are counted (issue 10.5), on every backend.

A request cancelled while queued costs nothing. One cancelled while the engine ran it is charged
what the engine generated: the backend handle resolves with the partial completions
(``finish_reason="abort"``) and the scheduler charges their tokens beside ``cancelled=1``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from aiohttp import web
from test_openai_faults import backend, chat, serve

from tts.backends.base import Capabilities, Handle
from tts.backends.fake import FakeBackend, Scripted
from tts.errors import Cancelled
from tts.sampling import SamplingParams
from tts.scheduler import Scheduler
from tts.types import Completion, Request

__all__ = ["serve"]


# ------------------------------------------------------------------------------------ fake


async def test_fake_cancel_while_the_batch_runs_is_charged_queued_costs_nothing() -> None:
    handles: list[Handle] = []

    def reply(prompt: str) -> str:
        if "first" in prompt and handles:
            handles[0].cancel()  # cancelled while the engine generates it
        return "one two three four five"

    fake = FakeBackend(Scripted(default=reply), max_batch=1)
    sched = Scheduler(fake)
    handles.append(sched.submit(Request("first", SamplingParams(n=2, max_tokens=16))))
    queued = sched.submit(Request("second", SamplingParams(n=3, max_tokens=16)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert queued.cancel()  # still in the backend's queue (max_batch=1): never generated
    with pytest.raises(Cancelled):
        await handles[0]
    with pytest.raises(Cancelled):
        await queued
    await asyncio.sleep(0)
    assert fake.completion_tokens == 10  # the first request ran, the second never did
    u = sched.usage
    assert (u.cancelled, u.completion_tokens, u.calls, u.failures) == (2, 10, 1, 0)


class PartialBackend:
    """Cancelling a running request resolves its handle with the samples generated so far."""

    name: ClassVar[str] = "partial"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.handles: list[Handle] = []

    def submit(self, request: Request) -> Handle:
        future = asyncio.get_running_loop().create_future()

        def abort(handle: Handle) -> bool:
            partial = [Completion(text="one two", token_count=7, finish_reason="abort", prompt_tokens=5)]
            asyncio.get_running_loop().call_soon(future.set_result, partial)
            return False  # keep the handle open: it resolves with what was generated

        handle = Handle(request, future, abort)
        self.handles.append(handle)
        return handle


async def test_scheduler_charges_partial_completions_of_an_aborted_request() -> None:
    b = PartialBackend()
    sched = Scheduler(b)
    h = sched.submit(Request("q", SamplingParams(n=4, max_tokens=32)))
    await asyncio.sleep(0)
    assert h.cancel()
    with pytest.raises(Cancelled):
        await h
    await asyncio.sleep(0.01)
    u = sched.usage
    # before: one of four samples looked like a short answer (failures=1) or nothing was charged
    assert (u.cancelled, u.failures, u.completion_tokens, u.prompt_tokens, u.completions) == (1, 0, 7, 5, 0)


# ------------------------------------------------------------------------------------ openai


async def test_openai_cancel_in_flight_charged_in_full_unsent_costs_nothing(serve: Any) -> None:
    server = await serve(lambda body, call: "stall")
    b = backend(server.url, model="m", max_concurrency=1)
    sched = Scheduler(b)
    running = sched.submit(chat(n=3))  # max_tokens=16
    await asyncio.sleep(0.2)
    waiting = sched.submit(Request.chat("other", SamplingParams(n=2, max_tokens=16, temperature=0.7)))
    await asyncio.sleep(0.2)
    assert len(server.bodies) == 1  # the second waits for the only connection slot
    assert waiting.cancel() and running.cancel()
    for h in (running, waiting):
        with pytest.raises(Cancelled):
            await h
    await asyncio.sleep(0.1)
    await b.aclose()
    u = sched.usage
    # the call in flight may have generated up to n * max_tokens: charged in full; the other was never sent
    assert (u.cancelled, u.completion_tokens, u.completions, u.failures) == (2, 48, 0, 0)
    assert b.stats.cancelled_in_flight == 1 and len(server.bodies) == 1


async def test_openai_split_cancel_keeps_answers_that_came_back(serve: Any) -> None:
    async def some_stall(body: dict[str, Any], call: int) -> Any:
        return "stall" if body.get("seed") == 11 else None

    server = await serve(some_stall)
    b = backend(server.url, model="m", n_mode="split")
    h = b.submit(chat(n=2, seed=10))
    await asyncio.sleep(0.3)
    assert h.cancel()
    out = await h
    await b.aclose()
    assert [c.finish_reason for c in out] == ["stop", "abort"]
    assert out[0].token_count == 4 and out[1].token_count == 16


async def test_openai_error_then_cancel_is_not_charged(serve: Any) -> None:
    # a call that failed (and waits to be retried) generated nothing to charge
    server = await serve(lambda body, call: web.json_response({}, status=503))
    b = backend(server.url, model="m", backoff_base=5.0, backoff_max=5.0)
    h = b.submit(chat())
    await asyncio.sleep(0.2)
    assert h.cancel()
    with pytest.raises(Cancelled):
        await h
    await b.aclose()


# ------------------------------------------------------------------------------------ vllm async


class FakeAsyncLLM:
    """An AsyncLLM stand-in: one token per 10 ms; ``abort`` ends the request with what it has,
    as vLLM's output processor does (a final output with finish_reason ``abort``)."""

    model_config = SimpleNamespace(max_model_len=4096)

    def __init__(self) -> None:
        self.aborted: set[str] = set()
        self.started: list[str] = []

    def get_tokenizer(self) -> Any:
        return SimpleNamespace(encode=lambda text, add_special_tokens=True: [1] * len(text.split()))

    def _out(self, tokens: list[int], n: int, finish: str) -> Any:
        outs = [
            SimpleNamespace(
                index=i,
                token_ids=list(tokens),
                text=" ".join("w" for _ in tokens),
                logprobs=None,
                finish_reason=finish,
                cumulative_logprob=None,
            )
            for i in range(n)
        ]
        return SimpleNamespace(prompt_token_ids=[1, 2, 3], num_cached_tokens=0, outputs=outs)

    async def generate(self, prompt: Any, params: Any, rid: str, priority: int = 0) -> Any:
        self.started.append(rid)
        tokens: list[int] = []
        while len(tokens) < params.max_tokens:
            if rid in self.aborted:
                yield self._out(tokens, params.n, "abort")
                return
            tokens.append(7)
            await asyncio.sleep(0.01)
        yield self._out(tokens, params.n, "length")

    async def abort(self, rid: str) -> None:
        self.aborted.add(rid)


@pytest.mark.vllm  # imports vllm's SamplingParams (no engine)
async def test_vllm_async_abort_charges_tokens_generated() -> None:
    from tts.backends.vllm import VLLMBackend

    engine = FakeAsyncLLM()
    v = VLLMBackend(engine=engine, scheduling_policy="fcfs")
    v._cpu = False
    v.sampling_params(SamplingParams())  # import vllm now, not while the clock runs
    sched = Scheduler(v)
    h = sched.submit(Request("count", SamplingParams(n=2, max_tokens=500, temperature=0.8)))
    await asyncio.sleep(0.3)
    assert h.cancel()
    with pytest.raises(Cancelled):
        await h
    for _ in range(50):
        if sched.usage.completion_tokens:
            break
        await asyncio.sleep(0.01)
    u = sched.usage
    assert engine.aborted and u.cancelled == 1 and u.failures == 0
    # about 30 tokens per sample were generated before the abort: all counted, not 0 and not 500
    assert 2 * 5 <= u.completion_tokens < 2 * 100, u.completion_tokens
    assert u.prompt_tokens == 3 and u.completions == 0

    # aborted before it reached the engine: nothing generated, nothing charged
    before = u.completion_tokens
    direct = v.submit(Request("never", SamplingParams(max_tokens=50)))
    assert direct.cancel()
    with pytest.raises(Cancelled):
        await direct
    assert len(engine.started) == 1 and sched.usage.completion_tokens == before
