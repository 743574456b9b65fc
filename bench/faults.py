"""Fault injection: what the OpenAI-compatible backend returns when the server misbehaves.

For each fault, a faulty OpenAI-compatible server runs in its own process on 127.0.0.1 (a raw
asyncio HTTP/1.1 server; every answer takes ``--delay`` seconds, as generation would) and
``tts.arun`` runs self-consistency (n=4) over 16 problems through :class:`OpenAIBackend`, the
scheduler and the whole stack. Every third POST the server receives is faulty (all of them for
"fewer choices" and "500-all"); "dead endpoint" adds a second base URL where nothing listens. Client settings:
timeout 1 s per attempt, deadline 10 s, 4 retries, backoff 0.05-0.5 s.

Prints one row per fault: results returned (answered / problems), problems failed, correct
answers, empty answers, HTTP calls, retries, top-ups (scheduler), malformed answers, wall time and
its ratio to the clean run.

    python bench/faults.py [--problems 16] [--n 4] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import re
import time
from typing import Any

from http_overhead import _free_port, read_request, serve_forever  # bench/ is on sys.path

FAULTS = {
    "clean": "no fault",
    "500": "HTTP 500",
    "500-all": "HTTP 500 on every call (the retries run out)",
    "429": "HTTP 429, Retry-After: 0",
    "reset": "connection reset before any answer",
    "stall": "no answer at all (client timeout 1 s)",
    "drip": "answer sent in 10 slices over 0.5 s",
    "truncated": "200, Content-Length announced, half the body, hang-up",
    "shape": "200 with a JSON list instead of an object",
    "fewer": "n-1 choices on every call asking n > 1",
    "empty": "200 with empty message content",
    "dead": "a second base_url where nothing listens",
}


def _answer(n: int, content: str = "Adding them up. The answer is 42.") -> bytes:
    choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
               for i in range(n)]  # fmt: skip
    usage = {"prompt_tokens": 40, "completion_tokens": 9 * n, "total_tokens": 40 + 9 * n}
    return json.dumps({"object": "chat.completion", "choices": choices, "usage": usage}).encode()


def _response(status: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _serve(port: int, fault: str, delay: float, ready: Any) -> None:
    n_field = re.compile(rb'"n":\s*(\d+)')
    calls = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        try:
            while True:
                head, body = await read_request(reader)
                if head.startswith(b"GET"):
                    writer.write(_response("200 OK", b'{"data": [{"id": "bench"}]}'))
                    continue
                calls += 1
                faulty = fault in ("fewer", "500-all") or calls % 3 == 0
                m = n_field.search(body)
                n = int(m.group(1)) if m else 1
                await asyncio.sleep(delay)
                if not faulty or fault in ("clean", "dead"):
                    writer.write(_response("200 OK", _answer(n)))
                elif fault in ("500", "500-all"):
                    writer.write(_response("500 Internal Server Error", b'{"error": {"message": "engine error"}}'))
                elif fault == "429":
                    writer.write(_response("429 Too Many Requests", b'{"error": {"message": "slow down"}}',
                                           "Retry-After: 0\r\n"))  # fmt: skip
                elif fault == "reset":
                    writer.transport.abort()
                    return
                elif fault == "stall":
                    await asyncio.sleep(3600)
                elif fault == "drip":
                    data = _response("200 OK", _answer(n))
                    step = len(data) // 10 + 1
                    for i in range(0, len(data), step):
                        writer.write(data[i : i + step])
                        await writer.drain()
                        await asyncio.sleep(0.05)
                elif fault == "truncated":
                    data = _answer(n)
                    writer.write(_response("200 OK", data)[: -len(data) // 2])
                    await writer.drain()
                    writer.close()
                    return
                elif fault == "shape":
                    writer.write(_response("200 OK", b'[{"text": "The answer is 42."}]'))
                elif fault == "fewer":
                    writer.write(_response("200 OK", _answer(max(1, n - 1))))
                elif fault == "empty":
                    writer.write(_response("200 OK", _answer(n, content="")))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    serve_forever(handle, port, ready)


async def _one(fault: str, url: str, problems: int, n: int) -> dict[str, Any]:
    import tts
    from tts.backends.openai import OpenAIBackend
    from tts.scheduler import Scheduler

    urls: Any = url
    if fault == "dead":
        urls = [f"http://127.0.0.1:{_free_port()}/v1", url]
    backend = OpenAIBackend(base_url=urls, model="bench", timeout=1.0, deadline=10.0, max_retries=4,
                            backoff_base=0.05, backoff_max=0.5)  # fmt: skip
    scheduler = Scheduler(backend)
    items = [tts.Problem(id=f"p{i}", question=f"What is {i} + {42 - i}?", reference="42") for i in range(problems)]
    start = time.perf_counter()
    report = await tts.arun(tts.SelfConsistency(n=n), items, scheduler, concurrency=problems)
    wall = time.perf_counter() - start
    await backend.aclose()
    results = report.results
    return {
        "fault": fault,
        "answered": sum(r.ok for r in results),
        "failed": sum(not r.ok for r in results),
        "correct": sum(bool(r.correct) for r in results),
        "empty": sum(1 for r in results for c in r.candidates if not c.text.strip()),
        "http_calls": backend.stats.http_calls,
        "retries": backend.stats.retries,
        "top_ups": scheduler.stats.top_ups,
        "malformed": backend.stats.malformed,
        "wall": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per answer (generation time)")
    args = ap.parse_args()
    logging.getLogger("tts").setLevel(logging.ERROR)  # the table is the output; failures are counted in it
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for fault in ["clean", *FAULTS]:  # the first clean run warms up imports and is not shown
        port = _free_port()
        ready = ctx.Event()
        proc = ctx.Process(target=_serve, args=(port, fault, args.delay, ready), daemon=True)
        proc.start()
        ready.wait(30)
        try:
            rows.append(asyncio.run(_one(fault, f"http://127.0.0.1:{port}/v1", args.problems, args.n)))
        finally:
            proc.terminate()
            proc.join(5)
    rows = rows[1:]
    clean = rows[0]["wall"]
    print(f"{args.problems} problems x self_consistency n={args.n}; server answers in {args.delay:g} s; "
          "every third POST faulty")  # fmt: skip
    header = "| fault | what the server does | answered | failed | correct | empty | HTTP calls | retries | " \
             "top-ups | malformed | wall (s) | vs clean |"  # fmt: skip
    print(header)
    print("|" + "---|" * 12)
    for r in rows:
        print(f"| {r['fault']} | {FAULTS[r['fault']]} | {r['answered']}/{args.problems} | {r['failed']} | "
              f"{r['correct']} | {r['empty']} | {r['http_calls']} | {r['retries']} | {r['top_ups']} | "
              f"{r['malformed']} | {r['wall']:.2f} | {r['wall'] / clean:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
