"""``tts-scale serve`` held under load: 32 concurrent clients for 60 s on the fake backend.

The server runs as the command (another process); 32 aiohttp clients, each on its own connection,
send self-consistency (n=8) requests back to back over a pool of 64 questions. Every answer must
be a 200 with the fake's reply and 8 samples; the server's resident memory after the run must be
within 10% of what it was after a warm-up. Prints P50/P95 latency and throughput.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tts.metrics import latency_stats

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "serve_self_consistency.yaml"
CLIENTS = 32
SECONDS = float(os.environ.get("TTS_SERVE_LOAD_SECONDS", "60"))
WARMUP = 5.0


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(base: str, pid: int) -> dict[str, object]:
    bodies = [
        json.dumps({"model": "sc", "messages": [{"role": "user", "content": f"Question {i}: {i} plus {i}?"}]}).encode()
        for i in range(64)
    ]
    url = f"{base}/v1/chat/completions"
    latencies: list[float] = []
    errors: list[str] = []
    phase = {"record": False, "stop": False}

    async def client(k: int) -> int:
        sent = 0
        async with aiohttp.ClientSession() as session:
            while not phase["stop"]:
                body = bodies[(k * 7 + sent) % len(bodies)]
                start = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    payload = await resp.read()
                took = time.perf_counter() - start
                sent += 1
                if resp.status != 200:
                    errors.append(f"{resp.status}: {payload[:200]!r}")
                    continue
                answer = json.loads(payload)
                if (
                    answer["choices"][0]["message"]["content"] != "The answer is 0."
                    or answer["usage"]["tts"]["completions"] != 8
                ):
                    errors.append(f"wrong answer: {payload[:200]!r}")
                if phase["record"]:
                    latencies.append(took)
        return sent

    tasks = [asyncio.ensure_future(client(k)) for k in range(CLIENTS)]
    await asyncio.sleep(WARMUP)
    rss_warm = _rss_bytes(pid)
    phase["record"] = True
    start = time.perf_counter()
    await asyncio.sleep(SECONDS)
    phase["stop"] = True
    sent = sum(await asyncio.gather(*tasks))
    wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "sent": sent, "wall": wall, "rss_warm": rss_warm}


@pytest.mark.slow
def test_32_clients_for_60_seconds_without_errors_or_growth() -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "tts", "serve", f"sc={RECIPE}", "--backend", "fake", "--port", str(port)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:

        async def main() -> dict[str, object]:
            deadline = time.monotonic() + 60
            async with aiohttp.ClientSession() as session:
                while True:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    try:
                        async with session.get(f"{base}/health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    assert time.monotonic() < deadline, "the server did not start"
                    await asyncio.sleep(0.1)
            return await _load(base, proc.pid)

        out = asyncio.run(main())
        rss_end = _rss_bytes(proc.pid)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    latencies = out["latencies"]
    assert isinstance(latencies, list) and isinstance(out["wall"], float) and isinstance(out["rss_warm"], int)
    stats = latency_stats(latencies)
    growth = rss_end / out["rss_warm"] - 1
    print(
        f"\nserve load: clients={CLIENTS} seconds={SECONDS:.0f} requests={len(latencies)} "
        f"rps={len(latencies) / out['wall']:.0f} p50_ms={stats.p50 * 1e3:.1f} p95_ms={stats.p95 * 1e3:.1f} "
        f"rss_warm_mb={out['rss_warm'] / 2**20:.1f} rss_end_mb={rss_end / 2**20:.1f} growth={growth:+.1%}"
    )
    assert out["errors"] == [], out["errors"][:3]  # type: ignore[index]
    assert len(latencies) >= CLIENTS * 10  # every client kept going
    assert abs(growth) <= 0.10, f"resident memory grew {growth:+.1%} under load"
