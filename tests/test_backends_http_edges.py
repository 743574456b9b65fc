"""Hard edges of the OpenAI-compatible backend over HTTP (issue 10.14), on 127.0.0.1 only.

A wrong-shaped or cut-short 200 is a retried :class:`BackendError`, never a raw AttributeError; the
per-attempt timeout and the per-request deadline bound a stalling server; sessions are closed at
the end of a run (no "Unclosed client session"); a refused endpoint takes one call, not half of
the first burst.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from aiohttp import web
from test_openai_faults import FakeServer, backend, chat, serve

from tts.backends.openai import OpenAIBackend, OpenAIOptions
from tts.errors import BackendError, RequestTimeout
from tts.runner import arun
from tts.scheduler import Scheduler
from tts.strategies.self_consistency import SelfConsistency
from tts.types import Problem

__all__ = ["serve"]  # the fixture, imported for the tests below

GOOD = {"choices": [{"index": 0, "message": {"content": "The answer is 42."}, "finish_reason": "stop"}]}


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],  # not an object: data.get -> AttributeError before
        {"choices": "none"},
        {"choices": [None]},
        {"choices": [{"message": "The answer is 42."}]},  # message as a string
        {"choices": [{"message": {"content": 42}}]},
        {"choices": [], "usage": "lots"},
    ],
)
async def test_wrong_shaped_200_is_a_retried_backend_error(serve: Any, body: Any) -> None:
    server = await serve(lambda b, call: web.json_response(body))
    b = backend(server.url, model="m", max_retries=2)
    sched = Scheduler(b)
    with pytest.raises(BackendError, match=r"after 3 attempts.*malformed answer"):
        await sched.submit(chat())
    await b.aclose()
    assert len(server.bodies) == 3 and b.stats.retries == 2 and b.stats.malformed == 3
    assert b.stats.failures == 1 and sched.usage.failures == 1  # counted as a backend failure


async def test_wrong_shape_then_good_answer_recovers(serve: Any) -> None:
    server = await serve(lambda b, call: web.json_response({"choices": [7]}) if call == 0 else None)
    b = backend(server.url, model="m")
    out = await b.submit(chat())
    await b.aclose()
    assert out[0].text == "The answer is 42." and b.stats.retries == 1 and b.stats.failures == 0


async def test_truncated_200_body_is_retried(serve: Any) -> None:
    async def truncated(body: dict[str, Any], call: int) -> Any:
        if call == 0:  # valid HTTP, JSON cut in half
            return web.Response(body=b'{"choices": [{"index": 0, "message": {"cont', content_type="application/json")
        return None

    server = await serve(truncated)
    b = backend(server.url, model="m")
    out = await b.submit(chat())
    await b.aclose()
    assert out[0].text == "The answer is 42." and len(server.bodies) == 2 and b.stats.malformed == 1


async def _raw_server(handler: Any) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


async def test_connection_closed_mid_body_is_retried() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        await reader.readuntil(b"\r\n\r\n")
        calls += 1
        if calls == 1:  # announces 500 bytes, sends 20, hangs up
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n")
            writer.write(b'{"choices": [{"inde')
        else:
            import json

            data = json.dumps(GOOD).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        await writer.drain()
        writer.close()

    server, url = await _raw_server(handler)
    b = backend(url, model="m")
    out = await b.submit(chat())
    await b.aclose()
    server.close()
    assert out[0].text == "The answer is 42." and calls == 2 and b.stats.retries == 1


def test_timeout_defaults_are_sane() -> None:
    o = OpenAIOptions()
    assert o.timeout == 120.0 and o.deadline == 300.0  # was 600 s per attempt, no deadline


async def test_deadline_bounds_a_stalling_server(serve: Any) -> None:
    server = await serve(lambda b, call: "stall")
    b = backend(server.url, model="m", timeout=0.4, deadline=1.0, max_retries=10, backoff_base=0.05)
    start = time.perf_counter()
    with pytest.raises(RequestTimeout, match=r"gave up at its 1s deadline after \d attempts"):
        await b.submit(chat())
    elapsed = time.perf_counter() - start
    await b.aclose()
    # 10 retries of 0.4 s would take over 4 s; the deadline stops it at 1 s
    assert 0.9 <= elapsed < 1.6, elapsed
    assert b.stats.deadline_exceeded == 1 and b.stats.http_calls <= 3 and b.stats.failures == 1


async def test_refused_endpoint_takes_one_call_of_a_burst(serve: Any) -> None:
    live = await serve(delay=0.05)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    b = backend([dead_url, live.url], model="m", backoff_base=0.2, backoff_max=0.2)
    start = time.perf_counter()
    outs = await asyncio.gather(*(b.submit(chat()) for _ in range(32)))
    elapsed = time.perf_counter() - start
    await b.aclose()
    dead, alive = b.endpoints
    assert len(outs) == 32 and alive.successes == 32
    # before: least-outstanding sent 16 of the burst to the dead server, each waiting a backoff
    assert dead.calls == 1 and dead.ejections == 1 and b.stats.retries == 1, (dead.calls, b.stats.retries)
    assert elapsed < 1.0, elapsed


SCRIPT = """
import asyncio, sys, warnings
warnings.simplefilter("always")
sys.path.insert(0, {tests!r})
from test_openai_faults import FakeServer
from tts import run
from tts.backends.openai import OpenAIBackend
from tts.strategies.self_consistency import SelfConsistency
from tts.types import Problem

async def start():
    return await FakeServer().start()

import threading
box = {{}}
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
server = asyncio.run_coroutine_threadsafe(start(), loop).result()
b = OpenAIBackend(base_url=server.url, model="m")
problems = [Problem(id=f"p{{i}}", question="6*7?", reference="42") for i in range(4)]
report = run(SelfConsistency(n=2), problems, b)      # sync API: its own event loop, then closed
report = run(SelfConsistency(n=2), problems, b)      # a second loop: the first session is closed
print("ok", sum(r.correct for r in report.results))
"""


def test_no_unclosed_session_at_exit(tmp_path: Any) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "PYTHONWARNINGS": "always", "PYTHONDEVMODE": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok ")
    assert "Unclosed" not in proc.stderr, proc.stderr[-2000:]


async def test_aclose_after_arun_closes_the_session(serve: Any) -> None:
    server: FakeServer = await serve()
    b = OpenAIBackend(base_url=server.url, model="m")
    problems = [Problem(id="p", question="6*7?", reference="42")]
    await arun(SelfConsistency(n=2), problems, b)
    session = b._pool._session
    assert session is not None and not session.closed
    await b.aclose()
    assert session.closed
