"""The OpenAI-compatible backend against small local aiohttp servers (no vLLM, no network).

Each server is scripted: it answers chat/completions requests with n choices, or with 429 / 500,
or stalls, and records what it received. The tests check request bodies, response parsing,
retries with backoff, timeouts, n>1 fallback, load balancing, endpoint ejection, cancellation
and failure accounting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from tts.backends.openai import OpenAIBackend, OpenAIOptions
from tts.errors import BackendError, ConfigError, RequestTimeout, UnsupportedControl
from tts.sampling import Constraint, SamplingParams
from tts.scheduler import Scheduler
from tts.types import Request

Behaviour = Callable[[dict[str, Any], int], Any]
"""(request body, call number) -> an aiohttp response, or None for a normal answer."""


class FakeServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 (chat + completions + models)."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        delay: float = 0.0,
        max_n: int | None = None,
        reasoning: bool = False,
    ) -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.max_n = max_n
        self.reasoning = reasoning
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call = len(self.bodies)
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.behaviour is not None:
            special = self.behaviour(body, call)
            if asyncio.iscoroutine(special):
                special = await special
            if special == "stall":
                for _ in range(400):  # up to 20 s, noticing the client going away
                    if request.transport is None or request.transport.is_closing():
                        self.disconnected += 1
                        break
                    await asyncio.sleep(0.05)
                return web.json_response({"error": {"message": "stalled"}}, status=500)
            if special is not None:
                return special
        if self.delay:
            await asyncio.sleep(self.delay)
        n = int(body.get("n", 1))
        if self.max_n is not None and n > self.max_n:
            if self.max_n == 0:  # "ignores n": answers one choice
                n = 1
            else:
                message = f"n must be at most {self.max_n}"
                return web.json_response({"error": {"message": message}}, status=400)
        chat = request.path.endswith("/chat/completions")
        choices = []
        for i in range(n):
            text = f"The answer is {i}." if i else "The answer is 42."
            ch: dict[str, Any] = {"index": i, "finish_reason": "stop" if i % 2 == 0 else "length"}
            if chat:
                ch["message"] = {"role": "assistant", "content": text}
                if self.reasoning:
                    ch["message"]["reasoning_content"] = f"thinking {i}"
                if body.get("logprobs"):
                    ch["logprobs"] = {
                        "content": [
                            {
                                "token": w,
                                "logprob": -0.5,
                                "top_logprobs": [{"token": w, "logprob": -0.5}, {"token": "x", "logprob": -2.0}],
                            }
                            for w in text.split()
                        ]
                    }
            else:
                ch["text"] = text
                if body.get("logprobs") is not None:
                    words = text.split()
                    ch["logprobs"] = {
                        "tokens": words,
                        "token_logprobs": [-0.25] * len(words),
                        "top_logprobs": [{w: -0.25} for w in words],
                    }
            choices.append(ch)
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": 4 * n,
            "total_tokens": 11 + 4 * n,
            "prompt_tokens_details": {"cached_tokens": 8},
        }
        return web.json_response(
            {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": choices, "usage": usage}
        )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeServer] = []

    async def start(*args: Any, **kw: Any) -> FakeServer:
        server = await FakeServer(*args, **kw).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def backend(url: str | list[str], **kw: Any) -> OpenAIBackend:
    defaults: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}
    return OpenAIBackend(base_url=url, **{**defaults, **kw})


def chat(n: int = 1, **params: Any) -> Request:
    return Request.chat("What is 6*7?", SamplingParams(n=n, temperature=0.7, max_tokens=16, **params))


async def test_chat_n_sampling_body_and_parsing(serve: Any) -> None:
    server = await serve(reasoning=True)
    b = backend(server.url)
    out = await b.submit(chat(n=4, logprobs=1, stop=["\n\n"], top_k=5, min_p=0.05, seed=7))
    await b.aclose()
    assert len(server.bodies) == 1, "n=4 must be one call with n, not four"
    body = server.bodies[0]
    assert body["model"] == "fake-model"  # discovered through /models
    assert body["n"] == 4 and body["max_tokens"] == 16 and body["stop"] == ["\n\n"] and body["seed"] == 7
    assert body["logprobs"] is True and body["top_logprobs"] == 1
    assert body["top_k"] == 5 and body["min_p"] == 0.05
    assert body["messages"] == [{"role": "user", "content": "What is 6*7?"}]
    assert [c.index for c in out] == [0, 1, 2, 3]
    assert out[0].text == "The answer is 42." and out[0].reasoning == "thinking 0"
    assert [c.finish_reason for c in out] == ["stop", "length", "stop", "length"]
    assert out[0].prompt_tokens == 11 and out[0].cached_prompt_tokens == 8
    assert out[0].logprobs == [-0.5] * 4 and out[0].token_count == 4 and out[0].cumulative_logprob == -2.0
    assert out[0].top_logprobs is not None and out[0].top_logprobs[0] == {"The": -0.5, "x": -2.0}


async def test_token_counts_apportioned_without_logprobs(serve: Any) -> None:
    server = await serve()
    b = backend(server.url, model="m")
    out = await b.submit(chat(n=3))
    await b.aclose()
    assert sum(c.token_count for c in out) == 12  # usage.completion_tokens, split by text length
    assert all(c.token_count > 0 for c in out)


async def test_constraints_and_extensions_in_body(serve: Any) -> None:
    server = await serve()
    b = backend(server.url, model="m")
    await b.submit(chat(constraint=Constraint.regex(r"\d+")))
    await b.submit(chat(constraint=Constraint.choice(["yes", "no"])))
    await b.submit(chat(constraint=Constraint.json({"type": "object"})))
    await b.submit(chat(constraint=Constraint.ebnf('root ::= "a"')))
    await b.submit(chat(banned_words=["foo"], repetition_penalty=1.1, presence_penalty=0.5, ignore_eos=True))
    await b.submit(Request.chat("q", SamplingParams(beam_width=3, n=2, max_tokens=8)))
    await b.submit(
        Request.chat("q", SamplingParams(temperature=0, max_tokens=8), priority=-2, assistant_prefix="The answer is")
    )
    await b.aclose()
    bodies = server.bodies
    assert bodies[0]["structured_outputs"] == {"regex": r"\d+"}
    assert bodies[1]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert bodies[2]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }
    assert bodies[3]["structured_outputs"] == {"grammar": 'root ::= "a"'}
    assert bodies[4]["bad_words"] == ["foo"] and bodies[4]["repetition_penalty"] == 1.1
    assert bodies[4]["presence_penalty"] == 0.5 and bodies[4]["ignore_eos"] is True
    assert bodies[5]["use_beam_search"] is True and bodies[5]["n"] == 3
    assert bodies[6]["priority"] == -2 and bodies[6]["continue_final_message"] is True
    assert bodies[6]["messages"][-1] == {"role": "assistant", "content": "The answer is"}


async def test_hosted_mode_refuses_extensions(serve: Any) -> None:
    server = await serve()
    b = backend(server.url, model="m", server_extensions=False)
    with pytest.raises(UnsupportedControl, match="constraint regex"):
        b.submit(chat(constraint=Constraint.regex("a")))
    with pytest.raises(UnsupportedControl, match="top_k needs server extensions"):
        b.submit(chat(top_k=3))
    out = await b.submit(chat(constraint=Constraint.json()))  # standard response_format
    await b.aclose()
    assert server.bodies[0]["response_format"] == {"type": "json_object"}
    assert out[0].text


async def test_completions_endpoint(serve: Any) -> None:
    server = await serve()
    b = backend(server.url, model="m", endpoint="completions")
    out = await b.submit(Request("2+2=", SamplingParams(n=2, max_tokens=4, logprobs=0), assistant_prefix=" "))
    with pytest.raises(ConfigError, match="endpoint='chat'"):
        b.submit(chat())
    await b.aclose()
    assert server.bodies[0]["prompt"] == "2+2= " and server.bodies[0]["logprobs"] == 0
    assert out[0].prompt_text == "2+2= " and out[0].logprobs == [-0.25] * 4 and out[0].top_logprobs is None


async def test_retries_429_and_500_then_success(serve: Any) -> None:
    def flaky(body: dict[str, Any], call: int) -> Any:
        if call == 0:
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"})
        if call == 1:
            return web.json_response({"error": {"message": "boom"}}, status=500)
        return None

    server = await serve(flaky)
    b = backend(server.url, model="m")
    start = time.perf_counter()
    out = await b.submit(chat())
    await b.aclose()
    assert out[0].text == "The answer is 42."
    assert len(server.bodies) == 3
    assert b.stats.retries == 2 and b.stats.rate_limited == 1 and b.stats.server_errors == 1
    assert b.stats.failures == 0 and b.stats.by_status == {429: 1, 500: 1, 200: 1}
    assert time.perf_counter() - start < 2.0


async def test_backoff_grows_exponentially(serve: Any) -> None:
    server = await serve(lambda body, call: web.json_response({}, status=503) if call < 3 else None)
    b = backend(server.url, model="m", backoff_base=0.1, backoff_max=10.0)
    start = time.perf_counter()
    await b.submit(chat())
    elapsed = time.perf_counter() - start
    await b.aclose()
    # delays: 0.1, 0.2, 0.4 seconds, each jittered to 50-100%: between 0.35 s and 0.7 s in all
    assert 0.35 <= elapsed < 1.5, elapsed


async def test_persistent_500_fails_after_retries(serve: Any) -> None:
    dead = {"error": {"message": "engine dead"}}
    server = await serve(lambda body, call: web.json_response(dead, status=500))
    b = backend(server.url, model="m", max_retries=3)
    with pytest.raises(BackendError, match=r"after 4 attempts.*HTTP 500.*engine dead") as info:
        await b.submit(chat())
    await b.aclose()
    assert not isinstance(info.value, RequestTimeout)
    assert len(server.bodies) == 4 and b.stats.failures == 1 and b.stats.retries == 3


async def test_4xx_fails_at_once_with_key_hint(
    serve: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TTS_TEST_KEY", "sk-secret-123")
    server = await serve(lambda body, call: web.json_response({"error": {"message": "bad key"}}, status=401))
    b = backend(server.url, model="m", api_key_env="TTS_TEST_KEY")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendError, match=r"HTTP 401: bad key.*\$TTS_TEST_KEY") as info:
        await b.submit(chat())
    await b.aclose()
    assert len(server.bodies) == 1  # not retried
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in str(info.value) and "sk-secret" not in caplog.text
    assert "sk-secret" not in repr(b.options) and "sk-secret" not in repr(vars(b))


async def test_stall_times_out(serve: Any) -> None:
    server = await serve(lambda body, call: "stall")
    b = backend(server.url, model="m", timeout=0.3, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(RequestTimeout, match=r"within 0\.3s"):
        await b.submit(chat())
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.2)
    await b.aclose()
    assert 0.6 <= elapsed < 2.0, elapsed
    assert b.stats.timeouts == 2 and b.stats.failures == 1
    assert server.disconnected >= 1  # the client hung up on the stalled call


async def test_n_fallback_on_rejection(serve: Any) -> None:
    server = await serve(max_n=1)
    b = backend(server.url, model="m")
    out = await b.submit(chat(n=3, seed=5))
    await b.aclose()
    assert b.split_mode and len(out) == 3 and [c.index for c in out] == [0, 1, 2]
    assert [body["n"] for body in server.bodies] == [3, 1, 1, 1]
    assert sorted(body.get("seed") for body in server.bodies[1:]) == [5, 6, 7]  # distinct samples
    # each of the three calls submitted the prompt
    assert out[0].prompt_tokens == 33 and out[0].cached_prompt_tokens == 24


async def test_n_fallback_when_server_ignores_n(serve: Any) -> None:
    server = await serve(max_n=0)
    b = backend(server.url, model="m")
    out = await b.submit(chat(n=4))
    again = await b.submit(chat(n=2))
    await b.aclose()
    assert len(out) == 4 and len(again) == 2
    assert [body["n"] for body in server.bodies] == [4, 1, 1, 1, 1, 1]


async def test_unrelated_400_does_not_switch_to_split(serve: Any) -> None:
    too_long = {"error": {"message": "prompt is too long"}}
    server = await serve(lambda body, call: web.json_response(too_long, status=400))
    b = backend(server.url, model="m")
    with pytest.raises(BackendError, match="HTTP 400: prompt is too long"):
        await b.submit(chat(n=4))
    await b.aclose()
    # the n=1 probe failed the same way: the error is not about n, so the backend keeps n>1 calls
    assert not b.split_mode and [body["n"] for body in server.bodies] == [4, 1]
    assert b.stats.failures == 1


async def test_native_mode_does_not_fall_back(serve: Any) -> None:
    server = await serve(max_n=1)
    b = backend(server.url, model="m", n_mode="native")
    with pytest.raises(BackendError, match="n must be at most 1"):
        await b.submit(chat(n=2))
    await b.aclose()


async def test_load_balancing_least_outstanding(serve: Any) -> None:
    fast = await serve(delay=0.01)
    slow = await serve(delay=0.2)
    b = backend([fast.url, slow.url], model="m")
    outs = await asyncio.gather(*(b.submit(chat()) for _ in range(40)))
    await b.aclose()
    assert len(outs) == 40
    counts = [len(fast.bodies), len(slow.bodies)]
    assert sum(counts) == 40 and counts[1] >= 1
    # all 40 start at once: least-outstanding splits them evenly between the two servers
    assert counts == [20, 20], counts
    assert [e.successes for e in b.endpoints] == counts

    b2 = backend([fast.url, slow.url], model="m")
    fast_before, slow_before = len(fast.bodies), len(slow.bodies)
    handles = []
    for _ in range(10):  # a request every 30 ms: the fast server is idle again, the slow one is not
        handles.append(b2.submit(chat()))
        await asyncio.sleep(0.03)
    await asyncio.gather(*handles)
    await b2.aclose()
    to_fast, to_slow = len(fast.bodies) - fast_before, len(slow.bodies) - slow_before
    assert to_fast + to_slow == 10 and to_fast >= 7, (to_fast, to_slow)


async def test_dead_endpoint_out_of_rotation_and_retried_later(serve: Any) -> None:
    live = await serve()
    dead_url = "http://127.0.0.1:9/v1"  # discard port: connection refused
    b = backend([dead_url, live.url], model="m", endpoint_cooldown=0.3)
    for _ in range(6):
        out = await b.submit(chat())
        assert out[0].text
    dead, alive = b.endpoints
    assert dead.calls == 1 and dead.ejections == 1 and dead.successes == 0
    assert alive.successes == 6 and b.stats.connection_errors == 1 and b.stats.failures == 0
    await asyncio.sleep(0.35)  # cooldown over: the dead endpoint is probed again
    await asyncio.gather(*(b.submit(chat()) for _ in range(2)))
    await b.aclose()
    assert dead.calls == 2 and dead.ejections == 2 and alive.successes == 8


async def test_all_endpoints_dead_fails_with_backend_error() -> None:
    b = backend(["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/"], model="m", max_retries=2)
    with pytest.raises(BackendError, match="cannot connect"):
        await b.submit(chat())
    await b.aclose()
    assert b.stats.failures == 1 and b.stats.connection_errors == 3


async def test_concurrency_limit(serve: Any) -> None:
    active = 0
    peak = 0

    async def track(body: dict[str, Any], call: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1

    server = await serve(track)
    b = backend(server.url, model="m", max_concurrency=3)
    await asyncio.gather(*(b.submit(chat()) for _ in range(12)))
    await b.aclose()
    assert len(server.bodies) == 12 and peak == 3


async def test_cancel_hangs_up(serve: Any) -> None:
    server = await serve(lambda body, call: "stall")
    b = backend(server.url, model="m")
    handle = b.submit(chat())
    await asyncio.sleep(0.3)
    assert handle.cancel()
    out = await handle  # the call was in flight: charged in full (max_tokens), marked aborted
    assert [(c.finish_reason, c.token_count, c.text) for c in out] == [("abort", 16, "")]
    for _ in range(40):
        if server.disconnected:
            break
        await asyncio.sleep(0.05)
    await b.aclose()
    assert server.disconnected == 1 and b.endpoints[0].outstanding == 0


async def test_through_scheduler_merges_and_counts(serve: Any) -> None:
    server = await serve()
    b = backend(server.url, model="m")
    sched = Scheduler(b)
    outs = await asyncio.gather(*(sched.submit(chat(n=2)) for _ in range(3)))
    await b.aclose()
    assert len(server.bodies) == 1 and server.bodies[0]["n"] == 6
    assert [len(o) for o in outs] == [2, 2, 2]
    assert sched.usage.completions == 6 and sched.usage.prompt_tokens == 33


def test_options_rejected_with_one_line() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^openai backend: max_retry is not a known field; "
        r"did you mean 'max_retries'\?$",
    ) as info:
        OpenAIBackend(max_retry=3)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="base_url must start with http"):
        OpenAIBackend(base_url="localhost:8000")
    with pytest.raises(ConfigError, match=r"^openai backend: max_retries must be an integer, got '3'\.$"):
        OpenAIBackend(max_retries="3")
    with pytest.raises(ConfigError, match=r"^openai backend: timeout must be a finite number, got inf\.$"):
        OpenAIBackend(timeout=float("inf"))
    with pytest.raises(ConfigError, match="not both"):
        OpenAIBackend(OpenAIOptions(), timeout=3)
    assert OpenAIBackend({"timeout": 3, "max_retries": 1}).options.timeout == 3.0
    assert OpenAIOptions(base_url=("http://a/v1", "http://b/v1/")).urls == ("http://a/v1", "http://b/v1")


def test_orjson_or_json_roundtrip() -> None:
    from tts.backends import _openai_wire as wire

    assert json.loads(wire.dumps({"a": [1, 2]})) == {"a": [1, 2]} == wire.loads(b'{"a": [1, 2]}')
