"""Token streaming on the OpenAI-compatible backend (``stream: true``): against a local aiohttp
server that streams server-sent events one token at a time, a chain cut mid-generation is charged
exactly the tokens generated until the cut; a whole streamed answer reads as the plain one; a
token watcher (DeepConf's running group confidence) cuts one sample when its per-token logprobs
dip, that sample's call hangs up, and the other samples complete; ``self_consistency`` with
``cut: true`` does the same through its own watcher, end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tts import Problem, SelfConsistency, solve
from tts.backends._openai_wire import StreamState
from tts.backends.openai import OpenAIBackend
from tts.sampling import SamplingParams
from tts.scheduler import Scheduler
from tts.strategies._watch import GroupConfidenceCut
from tts.types import Request

WORDS = [f"w{i} " for i in range(40)]


class StreamingServer:
    """Streams ``WORDS`` one token per event with vLLM's running usage; after ``stall_after``
    tokens it stops sending and waits for the client to hang up. With ``logprob(call, k)`` each
    event carries token k's chosen-token logprob, one event every ``pace`` seconds, and a call
    whose client hangs up stops there; ``calls`` records per call (its seed, else its arrival
    number from 0) the tokens sent and the hang-up."""

    def __init__(
        self,
        stall_after: int | None = None,
        usage_each: bool = True,
        logprob: Any = None,
        pace: float = 0.0,
    ) -> None:
        self.stall_after = stall_after
        self.usage_each = usage_each
        self.logprob = logprob
        self.pace = pace
        self.calls: dict[Any, dict[str, Any]] = {}
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

        key = body["seed"] if body.get("seed") is not None else len(self.bodies) - 1
        call = self.calls[key] = {"sent": 0, "hung_up": False}
        for k, word in enumerate(WORDS[:limit], 1):
            if self.pace and k > 1:
                await asyncio.sleep(self.pace)
                if request.transport is None or request.transport.is_closing():
                    call["hung_up"] = True
                    return resp
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
            if self.logprob is not None:
                lp = self.logprob(key, k)
                chunk["choices"][0]["logprobs"] = {"content": [{"token": word, "logprob": lp, "top_logprobs": []}]}
            await event(chunk)
            self.sent = call["sent"] = k
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


async def test_a_watcher_cuts_one_sample_mid_generation_and_the_others_complete(server: Any) -> None:
    # sample 1 (seed 101) dips to logprob -3 from its 6th token: its window of 4 falls below the
    # bar -1 at token 7 ((3 x -0.1 - 3) / 4 = -0.825 at token 6, (2 x -0.1 - 6) / 4 = -1.55 at 7)
    s = await server(logprob=lambda call, k: -3.0 if call == 101 and k >= 6 else -0.1, pace=0.05)
    backend = OpenAIBackend(base_url=s.url, model="m", stream=True, timeout=30)
    scheduler = Scheduler(backend)
    watcher = GroupConfidenceCut(4, lambda: -1.0)
    params = SamplingParams(n=3, temperature=0.7, max_tokens=12, seed=100, logprobs=0)
    try:
        out = await scheduler.submit(Request("Count.", params, watch=watcher))
        await asyncio.sleep(0.2)  # the server notices the hang-up at its next token
    finally:
        await backend.aclose()
    assert sorted(b["seed"] for b in s.bodies) == [100, 101, 102] and all(b["n"] == 1 for b in s.bodies)
    assert [c.finish_reason for c in out] == ["length", "cut", "length"] and watcher.cut == [1]
    assert [c.token_count for c in out] == [12, 7, 12]
    assert out[1].text == "".join(WORDS[:7]) and out[1].logprobs == [-0.1] * 5 + [-3.0] * 2
    # the server stops at its next token after the hang-up (one more may leave under load: not charged)
    assert s.calls[101]["hung_up"] and 7 <= s.calls[101]["sent"] <= 8, "the cut call hung up: the server stopped"
    assert s.calls[100] == s.calls[102] == {"sent": 12, "hung_up": False}
    u = scheduler.usage
    assert u.completion_tokens == 12 + 7 + 12, "charged exactly the tokens streamed until the cut"
    assert u.completions == 3 and u.cancelled == 0 and u.calls == 1
    assert backend.stats.cancelled_in_flight == 0 and backend.stats.http_calls == 3


async def test_self_consistency_cut_on_a_streaming_server_charges_the_cut_chain_until_its_cut(server: Any) -> None:
    # warmup calls 0-2 at logprob -0.1 set the bar; of the next draw (calls 3-5), call 4 dips to -3
    # from its 6th token: its first window of 4 below the bar ends at token 6
    s = await server(logprob=lambda call, k: -3.0 if call == 4 and k >= 6 else -0.1, pace=0.05)
    backend = OpenAIBackend(base_url=s.url, model="m", stream=True, timeout=30)
    sc = SelfConsistency(
        n=6,
        online=True,
        warmup=3,
        window=3,
        keep=0.5,
        confidence="lowest_group",
        group=4,
        cut=True,
        proposer={"name": "few_shot", "sampling": {"temperature": 0.7, "max_tokens": 12}},
    )
    try:
        result = await solve(sc, Problem("p", "Count."), backend)
        await asyncio.sleep(0.2)  # the server notices the hang-up at its next token
    finally:
        await backend.aclose()
    assert result.ok, result.error
    assert len(s.bodies) == 6 and all(b["n"] == 1 and b["logprobs"] is True and b["stream"] for b in s.bodies)
    tokens = sorted(c.completion.token_count for c in result.candidates if c.completion is not None)
    assert tokens == [6, 12, 12, 12, 12, 12] and result.meta["cut"] == 1 and result.meta["samples"] == 6
    assert s.calls[4]["hung_up"] and 6 <= s.calls[4]["sent"] <= 7  # stopped at the cut (one more under load)
    assert result.usage.completion_tokens == 5 * 12 + 6, "the cut chain is charged the 6 tokens streamed until its cut"
