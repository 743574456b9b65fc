"""What ``tts-scale serve`` costs over the same pipeline called in-process, per sampled completion.

The workload: self-consistency n=8 (``recipes/serve_self_consistency.yaml``) over 64 questions, all
in flight at once, on the zero-cost fake backend. Two series, alternating round by round so load
on the machine hits both alike:

- server: ``tts-scale serve`` in another process; an aiohttp client in this process posts the 64
  requests (one pooled session, all in flight) and reads the answers. The server process's CPU
  time (user + system, from ``/proc``) is counted; the client's is not.
- in-process: the same pipeline (same YAML, same fake backend, one scheduler kept across rounds)
  through :func:`tts.runner.arun` on the same 64 questions, this process's CPU time counted.

CPU times from ``/proc`` tick at 10 ms, so the figures are totals over all rounds divided by all
completions (512 per round), not medians of rounds. Prints per-series figures, then last
``us_per_completion=<(server CPU - in-process CPU) / completions>`` (target: at most 200).

    python bench/serve_overhead.py [--rounds 20] [--questions 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "serve_self_consistency.yaml"
N = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _questions(count: int) -> list[str]:
    return [f"Question {i}: what is {i} plus {i + 1}?" for i in range(count)]


async def _server_round(session: object, url: str, bodies: list[bytes], pid: int, check: bool = False) -> float:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)

    async def post(body: bytes) -> None:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"server answered {resp.status}: {payload[:200]!r}")
            if check and json.loads(payload)["usage"]["tts"]["completions"] != N:
                raise RuntimeError(f"the server did not draw {N} samples: {payload[:300]!r}")

    before = _cpu_seconds(pid)
    await asyncio.gather(*(post(b) for b in bodies))
    return _cpu_seconds(pid) - before


async def _inprocess_round(pipeline: object, scheduler: object, problems: list[object]) -> float:
    from tts.runner import arun

    start = time.process_time()
    report = await arun(
        pipeline.strategy,  # type: ignore[attr-defined]
        problems,  # type: ignore[arg-type]
        scheduler,  # type: ignore[arg-type]
        task=pipeline.task,  # type: ignore[attr-defined]
        concurrency=len(problems),
        seed=None,
    )
    elapsed = time.process_time() - start
    assert all(r.ok for r in report.results) and report.usage.completions == len(problems) * N
    return elapsed


async def main_async(rounds: int, count: int) -> None:
    import aiohttp

    from tts.config import build_pipeline, load_pipeline, make_backend
    from tts.scheduler import Scheduler
    from tts.types import Problem

    questions = _questions(count)
    port = _free_port()
    cmd = [sys.executable, "-m", "tts", "serve", f"sc={RECIPE}", "--backend", "fake", "--port", str(port)]
    server = subprocess.Popen([*cmd, "--max-concurrent-requests", str(2 * count)], stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=count)) as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(f"{base}/health") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.1)
            bodies = [
                json.dumps({"model": "sc", "messages": [{"role": "user", "content": q}]}).encode() for q in questions
            ]
            spec = load_pipeline(RECIPE, edit=lambda d: {**d, "backend": {"name": "fake"}})
            pipeline = build_pipeline(spec)
            scheduler = Scheduler(make_backend(spec.backend))
            problems = [Problem(id=str(i), question=q) for i, q in enumerate(questions)]
            url = f"{base}/v1/chat/completions"
            # warm-up: imports, caches, connections
            await _server_round(session, url, bodies, server.pid, check=True)
            await _inprocess_round(pipeline, scheduler, problems)
            served = inproc = 0.0
            for r in range(rounds):
                s = await _server_round(session, url, bodies, server.pid)
                p = await _inprocess_round(pipeline, scheduler, problems)
                served, inproc = served + s, inproc + p
                print(f"round {r}: server_cpu_ms={s * 1e3:.0f} inprocess_cpu_ms={p * 1e3:.1f}")
    finally:
        server.terminate()
        server.wait(30)
    completions = rounds * count * N
    print(f"questions={count} n={N} rounds={rounds} completions={completions}")
    print(f"server_us_per_completion={served / completions * 1e6:.1f}")
    print(f"inprocess_us_per_completion={inproc / completions * 1e6:.1f}")
    print(f"server_us_per_request={served / (rounds * count) * 1e6:.0f}")
    print(f"us_per_completion={(served - inproc) / completions * 1e6:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--questions", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.questions))


if __name__ == "__main__":
    main()
