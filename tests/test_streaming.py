"""Token streaming on the OpenAI-compatible backend (``stream: true``): against a local aiohttp
server that streams server-sent events one token at a time, a chain cut mid-generation is charged
exactly the tokens generated until the cut; a whole streamed answer reads as the plain one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tts.backends._openai_wire import StreamState
from tts.backends.openai import OpenAIBackend
from tts.sampling import SamplingParams
from tts.scheduler import Scheduler
from tts.types import Request

WORDS = [f"w{i} " for i in range(40)]


class StreamingServer:
    """Streams ``WORDS`` one token per event with vLLM's running usage; after ``stall_after``
    tokens it stops sending and waits for the client to hang up."""

    def __init__(self, stall_after: int | None = None, usage_each: bool = True) -> None:
        self.stall_after = stall_after
        self.usage_each = usage_each
        self.bodies: list[dict[str, Any]] = []
        self.sent = 0
        self.stalled = asyncio.Event()
        self.hung_up = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> StreamingServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        limit = min(len(WORDS), body["max_tokens"])

        async def event(data: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(data).encode() + b"\n\n")

        for k, word in enumerate(WORDS[:limit], 1):
            if self.stall_after is not None and k > self.stall_after:
                self.stalled.set()
                for _ in range(400):  # until the client hangs up (at most 20 s)
                    if request.transport is None or request.transport.is_closing():
                        self.hung_up.set()
                        break
                    await asyncio.sleep(0.05)
                return resp
            chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            if self.usage_each:
                chunk["usage"] = {"prompt_tokens": 7, "completion_tokens": k, "total_tokens": 7 + k}
            await event(chunk)
            self.sent = k
        await event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        await event(
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": limit, "total_tokens": 7 + limit}}
        )
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    started: list[StreamingServer] = []

    async def start(**kw: Any) -> StreamingServer:
        s = await StreamingServer(**kw).start()
        started.append(s)
        return s

    yield start
    for s in started:
        await s.stop()


def request(max_tokens: int = 32) -> Request:
    return Request.chat("Count.", SamplingParams(n=1, temperature=0.7, max_tokens=max_tokens))


async def test_a_whole_streamed_answer_reads_like_a_plain_one(server: Any) -> None:
    s = await server()
    backend = OpenAIBackend(base_url=s.url, model="m", stream=True)
    try:
        [c] = await backend.submit(request(12))
    finally:
        await backend.aclose()
    assert s.bodies[0]["stream"] is True
    assert s.bodies[0]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert c.text == "".join(WORDS[:12]) and c.token_count == 12 and c.finish_reason == "length"
    assert c.prompt_tokens == 7
    assert backend.capabilities.streaming and not OpenAIBackend(base_url=s.url).capabilities.streaming


@pytest.mark.parametrize("usage_each", [True, False])
async def test_a_cut_mid_generation_is_charged_the_tokens_generated_until_the_cut(
    server: Any, usage_each: bool
) -> None:
    s = await server(stall_after=9, usage_each=usage_each)
    backend = OpenAIBackend(base_url=s.url, model="m", stream=True, timeout=30)
    scheduler = Scheduler(backend)
    try:
        handle = scheduler.submit(request(32))
        await asyncio.wait_for(s.stalled.wait(), 10)
        await asyncio.sleep(0.2)  # the client reads the nine events already sent
        handle.cancel()
        await asyncio.wait_for(s.hung_up.wait(), 10)
        await asyncio.sleep(0.05)
    finally:
        await backend.aclose()
    assert s.sent == 9
    u = scheduler.usage
    assert u.completion_tokens == 9, "charged exactly what was generated until the cut, not max_tokens"
    assert u.cancelled == 1 and u.completions == 0
    assert backend.stats.cancelled_in_flight == 1


async def test_without_streaming_a_cut_is_charged_max_tokens(server: Any) -> None:
    s = await server(stall_after=9)
    backend = OpenAIBackend(base_url=s.url, model="m", timeout=30)
    scheduler = Scheduler(backend)
    try:
        handle = scheduler.submit(request(32))
        await asyncio.wait_for(s.stalled.wait(), 10)
        handle.cancel()
        await asyncio.sleep(0.2)
    finally:
        await backend.aclose()
    assert "stream" not in s.bodies[0]
    assert scheduler.usage.completion_tokens == 32


def test_stream_state_counts_tokens_by_logprobs_then_usage_then_deltas() -> None:
    state = StreamState(chat=True)
    lp = {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}]}
    state.add({"choices": [{"index": 0, "delta": {"content": "ab"}, "logprobs": lp}]})
    state.add({"choices": [{"index": 1, "delta": {"content": "x"}}]})
    state.add({"choices": [{"index": 1, "delta": {"content": "y"}}]})
    assert state.tokens(0) == 2 and state.tokens(1) == 2 and state.tokens(5) == 0
    one = StreamState(chat=False)
    one.add({"choices": [{"index": 0, "text": "hello"}], "usage": {"completion_tokens": 3}})
    assert one.tokens(0) == 3, "one choice: the server's running usage"
    [c] = one.completions(Request("Say hi.", SamplingParams(max_tokens=8)))
    assert c.text == "hello" and c.token_count == 3
