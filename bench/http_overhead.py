"""Client CPU per completion of the whole stack over HTTP, against a bare aiohttp client.

The workload the target was set for: 64 problems x self-consistency n=8 through ``tts.arun``, the
scheduler and :class:`tts.backends.openai.OpenAIBackend`, against a zero-latency OpenAI-compatible
server that runs in another process (a raw asyncio HTTP/1.1 server on 127.0.0.1 that answers each
chat request at once with n canned choices). The client measures its own CPU time
(``time.process_time()``); the server's is not counted.

The floor, in the same run: a bare aiohttp client (one pooled session, 64 calls in flight) posting
the very request bodies tts-scale sent (the server records them in the warm-up round) and reading
the answers, with no JSON decoding and no objects built. Rounds of the two alternate, so machine
load hits both alike. A third series submits the same requests straight to the backend (no
scheduler, context, strategy or answer parsing) to show where the time goes. Prints per-round
figures, ``backend_us_per_completion=``, then ``floor_us_per_completion=``, ``us_per_completion=``
and, last, ``over_floor_us=`` (medians; target: over_floor_us <= 20).

    python bench/http_overhead.py [--problems 64] [--n 8] [--rounds 15] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import socket
import statistics
import time
from typing import Any

TEXT = "Let's think step by step. " * 12 + "The answer is 42."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _canned(n: int) -> bytes:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop", "logprobs": None}
        for i in range(n)
    ]
    body = json.dumps(
        {
            "id": "cmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": choices,
            "usage": {
                "prompt_tokens": 60,
                "completion_tokens": 64 * n,
                "total_tokens": 60 + 64 * n,
                "prompt_tokens_details": {"cached_tokens": 48},
            },
        }
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


def _serve(port: int, ready: Any) -> None:
    """A minimal keep-alive HTTP/1.1 server: POST -> n canned choices; GET /bodies -> what it
    recorded while recording was on (POST /record switches it on, GET /bodies off)."""
    import re

    answers: dict[int, bytes] = {}
    recorded: list[str] = []
    state = {"record": False}
    n_field = re.compile(rb'"n":\s*(\d+)')

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await read_request(reader)
                if head.startswith(b"POST /record"):
                    state["record"] = True
                    recorded.clear()
                    out = b"{}"
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + out)
                    continue
                if head.startswith(b"GET /bodies"):
                    state["record"] = False
                    out = json.dumps(recorded).encode()
                    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(out)}\r\n\r\n".encode() + out)
                    continue
                if state["record"]:
                    recorded.append(body.decode())
                m = n_field.search(body)
                n = int(m.group(1)) if m else 1
                answer = answers.get(n)
                if answer is None:
                    answer = answers[n] = _canned(n)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    serve_forever(handle, port, ready)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request: its head (request line and headers) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, (await reader.readexactly(length) if length else b"")


def serve_forever(handle: Any, port: int, ready: Any) -> None:
    """Serve ``handle(reader, writer)`` on 127.0.0.1:``port``; set ``ready`` once listening."""

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _bench(
    base: str, problems: int, n: int, rounds: int, profile: cProfile.Profile | None
) -> tuple[list[float], list[float], list[float]]:
    import aiohttp

    import tts
    from tts.backends.openai import OpenAIBackend

    url = base + "/v1"
    backend = OpenAIBackend(base_url=url, model="bench", max_concurrency=64)
    items = [tts.Problem(id=f"p{i}", question=f"What is {i} + {i + 1}?", reference="42") for i in range(problems)]
    strategy = tts.SelfConsistency(n=n)

    async def ours() -> float:
        start = time.process_time()
        report = await tts.arun(strategy, items, backend, concurrency=problems)
        cpu = time.process_time() - start
        assert all(r.ok for r in report.results), [r.error for r in report.results if not r.ok][:1]
        assert report.usage.completions == problems * n, report.usage
        return cpu

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), headers={"Content-Type": "application/json"}
    )
    async with session.post(base + "/record") as resp:
        await resp.read()
    requests: list[Any] = []
    submit = backend.submit

    def recording(request: Any) -> Any:
        requests.append(request)
        return submit(request)

    backend.submit = recording  # type: ignore[method-assign]
    await ours()  # warm-up (connections, caches), recorded by the server and here
    backend.submit = submit  # type: ignore[method-assign]
    async with session.get(base + "/bodies") as resp:
        bodies = [b.encode() for b in json.loads(await resp.read())]
    assert len(bodies) == problems, f"expected {problems} HTTP calls (one n={n} call per problem), got {len(bodies)}"

    async def post(body: bytes) -> bytes:
        async with session.post(url + "/chat/completions", data=body) as resp:
            return await resp.read()

    async def floor() -> float:
        start = time.process_time()
        answers = await asyncio.gather(*(post(b) for b in bodies))
        cpu = time.process_time() - start
        assert len(answers) == problems
        return cpu

    async def backend_only() -> float:
        start = time.process_time()
        outs = await asyncio.gather(*(backend.submit(r) for r in requests))
        cpu = time.process_time() - start
        assert sum(len(o) for o in outs) == problems * n
        return cpu

    await floor()
    await backend_only()
    ours_cpu, floor_cpu, backend_cpu = [], [], []
    for _ in range(rounds):
        if profile is not None:
            profile.enable()
        ours_cpu.append(await ours())
        if profile is not None:
            profile.disable()
        floor_cpu.append(await floor())
        backend_cpu.append(await backend_only())
    await session.close()
    await backend.aclose()
    return ours_cpu, floor_cpu, backend_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", help="write a cProfile of our rounds to this file")
    args = parser.parse_args()
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    profile = cProfile.Profile(time.process_time) if args.profile else None
    try:
        if not ready.wait(60):
            raise SystemExit("bench server did not start within 60 s")
        ours_cpu, floor_cpu, backend_cpu = asyncio.run(
            _bench(f"http://127.0.0.1:{port}", args.problems, args.n, args.rounds, profile)
        )
    finally:
        server.terminate()
        server.join(10)
    if profile is not None:
        profile.dump_stats(args.profile)
    completions = args.problems * args.n
    for i, (a, b, c) in enumerate(zip(ours_cpu, floor_cpu, backend_cpu, strict=True)):
        print(
            f"round {i}: tts-scale {a * 1e6 / completions:.1f} us/completion, "
            f"bare aiohttp {b * 1e6 / completions:.1f}, backend alone {c * 1e6 / completions:.1f}"
        )
    ours_us = statistics.median(ours_cpu) * 1e6 / completions
    floor_us = statistics.median(floor_cpu) * 1e6 / completions
    print(
        f"{args.problems} problems x self-consistency n={args.n} = {completions} completions per round, "
        f"{args.rounds} rounds, {args.problems} HTTP calls per round"
    )
    print(f"backend_us_per_completion={statistics.median(backend_cpu) * 1e6 / completions:.1f}")
    print(f"floor_us_per_completion={floor_us:.1f}")
    print(f"us_per_completion={ours_us:.1f}")
    print(f"over_floor_us={ours_us - floor_us:.1f}")


if __name__ == "__main__":
    main()
