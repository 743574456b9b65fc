"""The OpenAI-compatible backend against a real vLLM server (SmolLM2-135M on CPU).

A module-scoped fixture starts ``python -m vllm.entrypoints.openai.api_server`` on a free loopback
port and stops it when the module's tests are done, so it never runs beside an in-process engine
(``tests/test_vllm_backend.py`` shuts its engines down the same way). A server that cannot start
makes the tests error, never skip. Fault handling (retries, timeouts, load balancing) is tested
without vLLM in ``tests/test_openai_faults.py``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tts.backends.openai import OpenAIBackend
from tts.models import smollm2_path
from tts.runner import arun
from tts.sampling import Constraint, SamplingParams
from tts.strategies.self_consistency import SelfConsistency
from tts.types import Problem, Request

pytestmark = pytest.mark.vllm

START_TIMEOUT = 600.0
LONG = ("The following note is long on purpose, so that its first blocks can be cached. " * 5).strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(smollm2_path()),
        "--served-model-name",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "1024",
        "--block-size",
        "32",
        "--kv-cache-memory-bytes",
        str(1 << 30),
        "--scheduling-policy",
        "priority",
        "--enable-prompt-tokens-details",
        "--uvicorn-log-level",
        "warning",
    ]
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"vLLM server exited with code {proc.returncode} before serving:\n{tail}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - start > START_TIMEOUT:
                pytest.fail(f"vLLM server not ready after {START_TIMEOUT:.0f}s; log: {log}")
            time.sleep(1.0)
        print(f"vLLM server ready in {time.perf_counter() - start:.1f}s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


async def test_self_consistency_n4(server: str) -> None:
    backend = OpenAIBackend(base_url=server)  # model discovered through /models
    problems = [Problem(id=f"p{i}", question=f"What is {i} + {i + 1}?", reference=str(2 * i + 1)) for i in range(4)]
    sampling = SamplingParams(temperature=0.8, max_tokens=24)
    strategy = SelfConsistency(n=4, proposer={"name": "few_shot", "sampling": sampling})
    report = await arun(strategy, problems, backend)
    await backend.aclose()
    assert backend.stats.http_calls == 4 and not backend.split_mode  # one n=4 call per prompt
    for result in report.results:
        assert result.ok, result.error
        assert len(result.candidates) == 4 and len({c.text for c in result.candidates}) >= 2
        assert result.usage.completions == 4 and result.usage.prompt_tokens > 20
        assert (
            result.usage.completion_tokens
            == sum(c.completion.token_count for c in result.candidates if c.completion is not None)
            > 0
        )


async def test_constraints_logprobs_priority(server: str) -> None:
    backend = OpenAIBackend(base_url=server, model="smollm2")
    choice, number = await asyncio.gather(
        backend.submit(
            Request.chat(
                "Is the sky blue? Answer yes or no.",
                SamplingParams(temperature=0, max_tokens=4, constraint=Constraint.choice(["yes", "no"])),
                priority=-1,
            )
        ),
        backend.submit(
            Request.chat(
                "What is 12 + 30?",
                SamplingParams(temperature=0, max_tokens=8, constraint=Constraint.regex(r"[0-9]{1,3}"), logprobs=2),
            )
        ),
    )
    await backend.aclose()
    assert choice[0].text in ("yes", "no")
    c = number[0]
    assert re.fullmatch(r"[0-9]{1,3}", c.text), c.text
    assert c.logprobs is not None and len(c.logprobs) == c.token_count > 0
    assert c.top_logprobs is not None and all(1 <= len(t) <= 2 for t in c.top_logprobs)


async def test_cached_prompt_tokens_reported(server: str) -> None:
    backend = OpenAIBackend(base_url=server, model="smollm2", endpoint="completions")
    request = Request(f"{LONG}\nSummarise the note in one word:", SamplingParams(temperature=0, max_tokens=4))
    first = await backend.submit(request)
    second = await backend.submit(request)
    await backend.aclose()
    assert first[0].prompt_tokens == second[0].prompt_tokens > 64
    assert first[0].prompt_text == request.prompt
    assert second[0].cached_prompt_tokens >= 64  # usage.prompt_tokens_details.cached_tokens


async def test_completions_endpoint_n_and_beam(server: str) -> None:
    backend = OpenAIBackend(base_url=server, model="smollm2", endpoint="completions")
    sampled, beams = await asyncio.gather(
        backend.submit(
            Request("The capital of France is", SamplingParams(n=2, temperature=0.9, max_tokens=6, logprobs=0))
        ),
        backend.submit(Request("The capital of France is", SamplingParams(beam_width=3, n=3, max_tokens=6))),
    )
    await backend.aclose()
    assert len(sampled) == 2 and all(c.logprobs is not None and len(c.logprobs) == c.token_count for c in sampled)
    assert len(beams) == 3 and len({c.text for c in beams}) == 3
