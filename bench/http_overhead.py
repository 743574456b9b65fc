"""Client-side CPU cost of the OpenAI-compatible backend per completion.

A zero-latency OpenAI-compatible aiohttp server runs in its own process (multiprocessing) on
loopback and answers every chat request at once with n canned choices. The client sends 64 prompts
x n=8 through :class:`tts.backends.openai.OpenAIBackend` per round, all in flight together, and
measures its own process CPU time (``time.process_time()``); the server's CPU is not counted.
A bare aiohttp loop posting the same bodies and reading the answers (no JSON work, no completion
objects) gives the floor. Prints per-round numbers and, last, ``us_per_completion=<median>``.

    python bench/http_overhead.py [--prompts 64] [--n 8] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import time
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _canned(n: int) -> bytes:
    text = "Let's think step by step. " * 12 + "The answer is 42."
    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "length",
                "logprobs": None} for i in range(n)]
    return json.dumps({"id": "cmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                       "choices": choices, "usage": {"prompt_tokens": 60, "completion_tokens": 64 * n,
                                                     "total_tokens": 60 + 64 * n,
                                                     "prompt_tokens_details": {"cached_tokens": 48}}}).encode()


def _serve(port: int, ready: Any) -> None:
    from aiohttp import web

    bodies: dict[int, bytes] = {}

    async def chat(request: web.Request) -> web.Response:
        raw = await request.read()
        i = raw.find(b'"n":')
        n = int(raw[i + 4:raw.find(b",", i)].strip(b" }")) if i >= 0 else 1
        body = bodies.get(n)
        if body is None:
            body = bodies[n] = _canned(n)
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def _rounds(url: str, prompts: int, n: int, rounds: int) -> tuple[list[float], list[float]]:
    import aiohttp

    from tts.backends.openai import OpenAIBackend
    from tts.sampling import SamplingParams
    from tts.types import Request

    backend = OpenAIBackend(base_url=url, model="bench", max_concurrency=64)
    params = SamplingParams(n=n, temperature=0.7, max_tokens=64)
    requests = [Request.chat(f"Question {i}: what is {i} + {i + 1}? Think step by step.", params)
                for i in range(prompts)]

    async def one_round() -> float:
        start = time.process_time()
        outs = await asyncio.gather(*(backend.submit(r) for r in requests))
        cpu = time.process_time() - start
        assert sum(len(o) for o in outs) == prompts * n
        return cpu

    await one_round()  # warm-up: connections, model path
    tts_cpu = [await one_round() for _ in range(rounds)]
    await backend.aclose()

    # floor: bare aiohttp, same bodies and concurrency, no JSON decoding, no Completion objects
    bodies = [json.dumps({"model": "bench", "messages": r.messages(), "n": n, "temperature": 0.7,
                          "max_tokens": 64}).encode() for r in requests]
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Content-Type": "application/json"}) as session:
        async def post(body: bytes) -> bytes:
            async with session.post(url + "/chat/completions", data=body) as resp:
                return await resp.read()

        async def floor_round() -> float:
            start = time.process_time()
            await asyncio.gather(*(post(b) for b in bodies))
            return time.process_time() - start

        await floor_round()
        floor_cpu = [await floor_round() for _ in range(rounds)]
    return tts_cpu, floor_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise SystemExit("bench server did not start within 60 s")
        tts_cpu, floor_cpu = asyncio.run(_rounds(f"http://127.0.0.1:{port}/v1", args.prompts, args.n, args.rounds))
    finally:
        server.terminate()
        server.join(10)
    completions = args.prompts * args.n
    for i, (a, b) in enumerate(zip(tts_cpu, floor_cpu, strict=True)):
        print(f"round {i}: tts-scale {a * 1e6 / completions:.1f} us/completion, "
              f"bare aiohttp {b * 1e6 / completions:.1f} us/completion")
    tts_us = statistics.median(tts_cpu) * 1e6 / completions
    floor_us = statistics.median(floor_cpu) * 1e6 / completions
    print(f"{args.prompts} prompts x n={args.n} = {completions} completions per round, {args.rounds} rounds, "
          f"{args.prompts} HTTP calls per round")
    print(f"client CPU per HTTP call: tts-scale {tts_us * args.n:.0f} us, bare aiohttp {floor_us * args.n:.0f} us")
    print(f"floor_us_per_completion={floor_us:.1f}")
    print(f"us_per_completion={tts_us:.1f}")


if __name__ == "__main__":
    main()
