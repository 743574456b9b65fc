"""``tts-scale serve``: the official ``openai`` client against a live server on loopback.

Each test starts a server in a background thread (:func:`tts.serve.running`) over the fake
backend and asserts what the client sees beside what the engine did (requests, samples, cancels).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tts.backends.base import task_handle
from tts.backends.fake import FakeBackend
from tts.serve import Pipelines, ServeOptions, Server, running
from tts.types import Request

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "serve_self_consistency.yaml"
MODEL = "serve_self_consistency"
KEY = "test-token-1234"


class Dice:
    """Replies 'The answer is D.' with D drawn from the request's generator (seeded requests repeat)."""

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        return f"The answer is {rng.randint(0, 3)}.", 4, None


class Gated:
    """The fake engine behind a gate: requests wait until :meth:`release`; counts starts and cancels."""

    name = "gated"

    def __init__(self) -> None:
        self.fake = FakeBackend()
        self.capabilities = self.fake.capabilities
        self.started = 0
        self.cancels = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._gate: asyncio.Event | None = None

    def submit(self, request: Request) -> Any:
        self.loop = loop = asyncio.get_running_loop()
        if self._gate is None:
            self._gate = asyncio.Event()
        gate = self._gate

        async def run() -> Any:
            self.started += 1
            await gate.wait()
            return await self.fake.submit(request)

        task = loop.create_task(run())

        def cancel() -> None:
            self.cancels += 1
            task.cancel()

        return task_handle(request, task, cancel)

    def release(self) -> None:
        assert self.loop is not None and self._gate is not None
        self.loop.call_soon_threadsafe(self._gate.set)


def _server(backend: Any = None, *, key: str | None = None, default: str | None = None, **options: Any) -> Server:
    pipelines = Pipelines.load(
        [str(RECIPE), f"other={RECIPE}"],
        backend=backend if backend is not None else "fake",
        default=default,
        options=ServeOptions(**options),
    )
    return Server(pipelines, ServeOptions(**options), key)


def _client(url: str, key: str = KEY, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, **kw)


def _wait(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def fake_server() -> Iterator[tuple[str, Server]]:
    server = _server()
    with running(server) as url:
        yield url, server


def _engine(server: Server) -> FakeBackend:
    backend = server.pipelines.get(MODEL).scheduler.backend
    assert isinstance(backend, FakeBackend)
    return backend


# ------------------------------------------------------------------------------------ the mechanism


async def test_a_cancelled_waiter_withdraws_its_request_from_the_engine() -> None:
    """What a disconnect relies on: cancelling the task that awaits requests (asyncio cancellation,
    as a timeout or a gone client does) cancels them in the engine and charges what ran."""
    from tts.sampling import SamplingParams
    from tts.scheduler import Scheduler

    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    gated = Gated()
    scheduler = Scheduler(gated)
    params = SamplingParams(n=2, temperature=1.0)
    waiter = asyncio.ensure_future(
        asyncio.gather(scheduler.submit(Request("a", params)), scheduler.submit(Request("b", params)))
    )
    await asyncio.sleep(0.01)
    assert gated.started == 2
    waiter.cancel()
    await asyncio.sleep(0.01)
    assert gated.cancels == 2 and scheduler.usage.cancelled == 2
    assert gated.fake.completions_generated == 0 and scheduler.usage.completions == 0
    assert errors == []  # delivery of a cancelled waiter's request no longer raises in a callback


# ------------------------------------------------------------------------------------ answers


def test_chat_completion_answers_with_the_vote_and_real_usage(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    resp = _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}])
    engine = _engine(server)
    assert resp.model == MODEL and resp.object == "chat.completion"
    assert [c.message.content for c in resp.choices] == ["The answer is 0."]  # the fake's default reply
    assert resp.choices[0].finish_reason == "stop"
    extras = resp.choices[0].model_extra["tts"]
    assert extras == {"answer": "0", "status": "ok", "votes": {"0": 8}}  # self-consistency n=8
    assert engine.requests == 1 and engine.completions_generated == 8
    # usage: the real totals the scheduler charged (one request, 8 completions of 4 words)
    total = server.pipelines.get(MODEL).scheduler.usage
    assert resp.usage is not None
    assert resp.usage.completion_tokens == total.completion_tokens == 8 * 4
    assert resp.usage.prompt_tokens == total.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.usage.model_extra["tts"]["completions"] == 8 and resp.usage.model_extra["tts"]["calls"] == 1


def test_n_choices_are_separate_runs_whose_samples_merge(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    resp = _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q?"}], n=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.model_extra["tts"]["votes"] == {"0": 8} for c in resp.choices)
    engine, scheduler = _engine(server), server.pipelines.get(MODEL).scheduler
    # three strategy runs, identical unseeded prompts: one engine request of 24 samples
    assert engine.requests == 1 and engine.completions_generated == 24
    assert scheduler.stats.merged_requests == 2
    assert resp.usage is not None and resp.usage.model_extra["tts"]["completions"] == 24
    assert resp.usage.completion_tokens == 24 * 4


def test_overrides_seed_temperature_and_strategy_settings() -> None:
    server = _server(FakeBackend(Dice()))
    with running(server) as url:
        client = _client(url)
        ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Roll"}]}
        runs = [
            client.chat.completions.create(
                **ask, seed=7, temperature=0.3, max_tokens=50, extra_body={"tts": {"n": 5}, "tts_return": ["trace"]}
            )
            for _ in range(2)
        ]
        other = client.chat.completions.create(**ask, seed=8, extra_body={"tts": {"n": 5}})
    a, b = (r.choices[0].model_extra["tts"] for r in runs)
    assert sum(a["votes"].values()) == 5 and a["votes"] == b["votes"]  # the same seed, the same samples
    assert sum(other.choices[0].model_extra["tts"]["votes"].values()) == 5
    params = a["trace"]["events"][0]["request"]["params"]
    assert params["temperature"] == 0.3 and params["max_tokens"] == 50 and params["n"] == 5
    assert params["seed"] is not None


def test_candidates_and_trace_on_request(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    client = _client(url)
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
    assert "candidates" not in plain.choices[0].model_extra["tts"]
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Q"}], extra_headers={"X-TTS-Return": "candidates,trace"}
    )
    extras = resp.choices[0].model_extra["tts"]
    assert len(extras["candidates"]) == 8 and extras["winner"] == 0
    assert extras["candidates"][0]["answer"] == "0" and extras["candidates"][0]["tokens"] == 4
    assert [e["kind"] for e in extras["trace"]["events"]] == ["generate"]


def test_system_message_reaches_the_prompt_and_earlier_turns_are_refused(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    client = _client(url)
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Q"}],
        extra_body={"tts_return": ["trace"]},
    )
    prompt = resp.choices[0].model_extra["tts"]["trace"]["events"][0]["request"]["prompt"]
    assert prompt[0] == {"role": "system", "content": "Be terse."}
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\] \('user'\) is an earlier turn"):
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
                {"role": "user", "content": "Q2"},
            ],
        )


# ------------------------------------------------------------------------------------ streaming


def test_streaming_progress_then_exactly_the_answer_then_usage(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    stream = _client(url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        stream=True,
        stream_options={"include_usage": True},
        n=2,
    )
    chunks = list(stream)
    progress = [c for c in chunks if c.model_extra.get("tts_progress")]
    assert progress and all(c.choices[0].delta.content is None and c.choices[0].delta.role is None for c in progress)
    assert {c.choices[0].index for c in progress} == {0, 1}
    assert all(c.model_extra["tts_progress"] == {"samples": 8, "votes": {"0": 8}} for c in progress)
    for i in (0, 1):
        joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert joined == "The answer is 0."
    ends = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [e.finish_reason for e in ends] == ["stop", "stop"]
    assert ends[0].model_extra["tts"]["votes"] == {"0": 8}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == server.pipelines.get(MODEL).scheduler.usage.completion_tokens == 64
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_progress_follows_the_windows_of_an_early_stopping_vote() -> None:
    server = _server(FakeBackend(Dice()))
    settings = {"n": 8, "stop": "consensus", "threshold": 1.0, "window": 2}  # varied answers: all 4 windows
    with running(server) as url:
        chunks = list(
            _client(url).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Roll"}], stream=True, extra_body={"tts": settings}
            )
        )
    progress = [c.model_extra["tts_progress"] for c in chunks if c.model_extra.get("tts_progress")]
    samples = [p["samples"] for p in progress]
    assert len(samples) >= 2 and samples == sorted(set(samples)) and all(s % 2 == 0 for s in samples)
    assert all(sum(p["votes"].values()) == p["samples"] for p in progress)
    final = next(c.choices[0].model_extra["tts"] for c in chunks if c.choices and c.choices[0].finish_reason)
    assert samples[-1] == final["samples"] and progress[-1]["votes"] == final["votes"]


def test_stream_without_usage_ends_with_the_finish_chunk(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    chunks = list(
        _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}], stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage is None


# ------------------------------------------------------------------------------------ refusals


def test_wrong_model_is_404_listing_the_pipelines(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    with pytest.raises(openai.NotFoundError) as err:
        _client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Q"}])
    assert "'gpt-4o' is not served" in str(err.value) and "serve_self_consistency, other" in str(err.value)
    assert _engine(server).requests == 0


def test_default_pipeline_answers_unknown_names() -> None:
    with running(_server(default="other")) as url:
        resp = _client(url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Q"}])
    assert resp.model == "other" and resp.choices[0].message.content == "The answer is 0."


def test_models_lists_the_pipelines(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    assert [m.id for m in _client(url).models.list()] == [MODEL, "other"]


def test_bad_json_and_unknown_fields_are_400_in_one_line(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    r = httpx.post(f"{url}/chat/completions", content=b'{"model": "x", "messages": [', timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("request body is not valid JSON")
    r = httpx.post(f"{url}/chat/completions", content=b"[" * 100_000, timeout=10)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/chat/completions", json=[1, 2], timeout=10)
    assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]["message"]
    client = _client(url)
    with pytest.raises(openai.BadRequestError, match="tempreature is not a known field; did you mean 'temperature'"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Q"}], extra_body={"tempreature": 1}
        )
    with pytest.raises(openai.BadRequestError, match=r"temperature must be <= 2"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}], temperature=3)
    assert _engine(server).requests == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("response_format", {"type": "json_object"}),
        ("logprobs", True),
    ],
)
def test_fields_a_pipeline_cannot_honour_are_400_naming_them(
    fake_server: tuple[str, Server], field: str, value: Any
) -> None:
    url, server = fake_server
    with pytest.raises(openai.BadRequestError) as err:
        _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}], **{field: value})
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == field
    assert body["message"].startswith(f"{field} is not supported")
    assert _engine(server).requests == 0
    # the no-op values are accepted
    ok = _client(url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Q"}], logprobs=False, response_format={"type": "text"}
    )
    assert ok.choices[0].message.content == "The answer is 0."


def test_strategy_settings_and_caps_are_checked(fake_server: tuple[str, Server]) -> None:
    url, server = fake_server
    client = _client(url)
    ask: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Q"}]}
    cases = [
        ({"extra_body": {"tts": {"n": 0}}}, "tts.n must be >= 1, got 0."),
        ({"extra_body": {"tts": {"n": 65}}}, "tts.n must be <= 64 (the server's cap), got 65."),
        ({"extra_body": {"tts": {"nn": 3}}}, "nn is not a known field"),
        ({"extra_body": {"tts": {"budget": {"max_tokens": 0}}}}, "tts.budget.max_tokens must be >= 1, got 0."),
        ({"max_tokens": 5000}, "max_tokens must be <= 4096 (the server's cap), got 5000."),
        ({"n": 9}, "n must be <= 8 (the server's cap), got 9."),
        ({"temperature": 0}, "proposer.sampling.temperature must be > 0 when n > 1, got 0.0"),
    ]
    for kw, message in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**ask, **kw)
        assert isinstance(err.value.body, dict)
        assert message in err.value.body["message"] and "\n" not in err.value.body["message"]
    assert _engine(server).requests == 0


def test_request_budget_cuts_the_samples(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    resp = _client(url).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Q"}],
        extra_body={"tts": {"budget": {"max_completion_tokens": 8}}},
    )
    # 8 tokens over 8 samples: each sample is cut to 1 token (the budget's admission rule)
    assert resp.usage is not None and resp.usage.completion_tokens == 8
    assert resp.choices[0].finish_reason == "length"


def test_missing_and_wrong_token_are_401() -> None:
    with running(_server(key=KEY)) as url:
        with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
            _client(url, key="wrong-token").chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Q"}]
            )
        r = httpx.post(f"{url}/chat/completions", json={"model": MODEL, "messages": []}, timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/models", timeout=10).status_code == 401
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        assert httpx.get(f"{url.removesuffix('/v1')}/health", timeout=10).status_code == 200
        ok = _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
        assert ok.choices[0].message.content == "The answer is 0."


def test_oversize_body_is_413_without_running() -> None:
    server = _server(max_body_bytes=4096)
    with running(server) as url:
        with pytest.raises(openai.APIStatusError) as err:
            _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x " * 5000}])
        assert err.value.status_code == 413 and "larger than 4096 bytes" in str(err.value)
        # chunked (no Content-Length): refused while reading
        r = httpx.post(f"{url}/chat/completions", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]), timeout=10)
        assert r.status_code == 413
        assert _engine(server).requests == 0
        metrics = httpx.get(f"{url.removesuffix('/v1')}/metrics", timeout=10).text
    assert 'tts_requests_total{model="_unknown",code="413"} 2' in metrics


def test_too_many_concurrent_requests_is_429() -> None:
    gated = Gated()
    server = _server(gated, max_concurrent_requests=2)
    with running(server) as url:
        client = _client(url, timeout=30)
        answers: list[str | None] = []

        def ask() -> None:
            r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
            answers.append(r.choices[0].message.content)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        _wait(lambda: server.metrics.in_flight == 2)
        with pytest.raises(openai.RateLimitError, match="answering 2 requests, its limit"):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
        gated.release()
        for t in threads:
            t.join(30)
        assert answers == ["The answer is 0.", "The answer is 0."]
        assert server.metrics.requests[(MODEL, 200)] == 2 and server.metrics.requests[("_unknown", 429)] == 1


def test_concurrent_requests_share_one_scheduler_and_batch() -> None:
    gated = Gated()
    server = _server(gated)
    with running(server) as url:
        client = _client(url, timeout=30)
        answers: list[str | None] = []

        def ask(question: str, model: str) -> None:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
            answers.append(r.choices[0].message.content)

        threads = [threading.Thread(target=ask, args=(f"Q{i}", (MODEL, "other")[i % 2])) for i in range(4)]
        for t in threads:
            t.start()
        _wait(lambda: gated.started == 4)  # both pipelines' requests wait in the one engine
        gated.release()
        for t in threads:
            t.join(30)
    assert answers == ["The answer is 0."] * 4
    assert gated.fake.batch_sizes == [4] and gated.fake.completions_generated == 32


def test_client_disconnect_cancels_the_samples() -> None:
    gated = Gated()
    server = _server(gated)
    with running(server) as url:
        with pytest.raises(openai.APITimeoutError):
            _client(url, timeout=1.0).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
        _wait(lambda: gated.cancels == 1)  # the engine saw the cancel
        _wait(lambda: server.metrics.disconnects == 1)
        scheduler = server.pipelines.get(MODEL).scheduler
        assert gated.started == 1 and scheduler.usage.cancelled == 1 and scheduler.usage.completions == 0
        assert gated.fake.completions_generated == 0
        assert server.metrics.requests[(MODEL, 499)] == 1 and server.metrics.in_flight == 0
        # a streaming client that goes away is cancelled too
        with pytest.raises(openai.APITimeoutError):
            stream = _client(url, timeout=1.0).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Q"}], stream=True
            )
            list(stream)
        _wait(lambda: gated.cancels == 2)
        _wait(lambda: server.metrics.disconnects == 2)
        assert gated.fake.completions_generated == 0


def test_a_failing_pipeline_is_500_with_its_error_and_counted() -> None:
    server = _server(FakeBackend.scripted(by_prompt={"never asked": "x"}))
    with running(server) as url:
        with pytest.raises(openai.InternalServerError, match="the pipeline failed: ConfigError: fake backend: no scr"):
            _client(url).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
        text = httpx.get(f"{url.removesuffix('/v1')}/metrics", timeout=10).text
    assert f'tts_request_failures_total{{model="{MODEL}"}} 1' in text.splitlines()
    assert f'tts_requests_total{{model="{MODEL}",code="500"}} 1' in text.splitlines()


def test_metrics_count_requests_latency_and_tokens(fake_server: tuple[str, Server]) -> None:
    url, _ = fake_server
    client = _client(url)
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Q"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Q"}])
    text = httpx.get(f"{url.removesuffix('/v1')}/metrics", timeout=10).text
    lines = set(text.splitlines())
    assert f'tts_requests_total{{model="{MODEL}",code="200"}} 3' in lines
    assert 'tts_requests_total{model="_unknown",code="404"} 1' in lines
    assert f'tts_request_duration_seconds_count{{model="{MODEL}"}} 3' in lines
    assert f'tts_request_duration_seconds_bucket{{model="{MODEL}",le="+Inf"}} 3' in lines
    assert f'tts_completion_tokens_total{{model="{MODEL}"}} {3 * 8 * 4}' in lines
    assert f'tts_completions_total{{model="{MODEL}"}} 24' in lines
    assert 'tts_engine_usage_total{scheduler="0",backend="fake",kind="completions"} 24' in lines
    assert "tts_requests_in_flight 0" in lines


# ------------------------------------------------------------------------------------ the command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_with_a_token_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    port = _free_port()
    cmd = [sys.executable, "-m", "tts", "serve", f"sc={RECIPE}", "--backend", "fake", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--api-key-file", str(keyfile)], stderr=subprocess.PIPE, text=True, env={**os.environ}, cwd=ROOT
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, 60)
        resp = _client(url).chat.completions.create(model="sc", messages=[{"role": "user", "content": "Q"}])
        assert resp.choices[0].message.content == "The answer is 0."
        with pytest.raises(openai.AuthenticationError):
            _client(url, key="sk-wrong-token").chat.completions.create(
                model="sc", messages=[{"role": "user", "content": "Q"}]
            )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"serving sc on http://127.0.0.1:{port}/v1 (bearer token required)" in err
    assert KEY not in err


def test_cli_refuses_bad_setups_in_one_line(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "tts", "serve", str(RECIPE), "--backend", "fake"]
    for extra, message in [
        (["--api-key-file", str(tmp_path / "missing")], "--api-key-file"),
        (["--default", "nope"], "--default 'nope' is not a served pipeline"),
        (["--max-concurrent-requests", "0"], "serve: max_concurrent_requests must be >= 1, got 0."),
    ]:
        r = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_import_tts_stays_free_of_the_server_stack() -> None:
    code = (
        "import sys, tts, tts.serve, tts.serve.pipelines, tts.serve.protocol; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'fastapi'))))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def _readme_serve_section() -> tuple[list[str], str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Serve pipelines to any OpenAI client", 1)[1].split("\n## ", 1)[0]
    (shell,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    (client,) = re.findall(r"```py\n(.*?)```", section, flags=re.S)
    return [line for line in shell.replace("\\\n", " ").splitlines() if line.strip()], client


def test_readme_serve_lines_run_as_written(tmp_path: Path) -> None:
    """The README's serve section: the token file, the server (on the fake backend, a free port),
    the curl line and the openai snippet, each as written."""
    lines, client = _readme_serve_section()
    port = str(_free_port())
    proc = None
    outputs = []
    try:
        for line in lines:
            line = line.replace("8000", port)
            if line.startswith("tts-scale serve"):
                args = [*shlex.split(line)[1:], "--backend", "fake"]
                args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
                proc = server = subprocess.Popen(
                    [sys.executable, "-m", "tts", *args], cwd=tmp_path, stderr=subprocess.PIPE
                )
                _wait(functools.partial(_up, port, server), 60)
            else:
                run = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=60)
                assert run.returncode == 0, run.stderr
                outputs.append(run.stdout)
        assert proc is not None
        answer = json.loads(outputs[-1])
        assert answer["choices"][0]["message"]["content"] == "The answer is 0."
        assert answer["usage"]["completion_tokens"] == 4 * 4  # tts.n=4 samples of the fake's 4 words
        snippet = subprocess.run(
            [sys.executable, "-c", client.replace("8000", port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert snippet.returncode == 0, snippet.stderr
        assert snippet.stdout.strip() == "The answer is 0. {'0': 16} 64"
    finally:
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=30)


def _up(port: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
