"""API keys never reach results, logs or error texts (issue 10.15).

A server that echoes the request's Authorization header in its 401 body used to put the key into
the results JSONL, the store and stderr. Backends register their keys with :mod:`tts.secrets` and
redact every error text they raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_openai_faults import FakeServer

from tts.secrets import MASK, redact, register_secret

KEY = "sk-planted-0123456789abcdefXYZ"


def test_redact_masks_registered_secrets_and_bearer_tokens() -> None:
    register_secret("hunter2-longer-secret")
    register_secret(None)
    register_secret("ab")  # too short to mask without garbling text: ignored
    text = "key hunter2-longer-secret; Authorization: Bearer abc.def-123; sk-abcdefghijklmnop; api_key=zzzzzzzzzz; ab"
    out = redact(text)
    assert "hunter2" not in out and "abc.def-123" not in out and "sk-abcdefgh" not in out and "zzzzzzzz" not in out
    assert out.endswith("; ab") and "Bearer ***" in out and "api_key=***" in out
    assert redact("") == "" and redact("nothing secret here") == "nothing secret here"
    assert MASK == "***"


class EchoServer:
    """A scripted server (:class:`FakeServer`) in a thread of its own, answering every request
    with 401 and the request's headers in the body, as some servers do."""

    def __init__(self) -> None:
        self.server = FakeServer(self._echo)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def _echo(self, body: dict[str, Any], call: int) -> web.Response:
        headers = self.server.headers[-1]
        message = {"message": f"invalid key: you sent {headers}", "auth": headers.get("Authorization")}
        return web.json_response({"error": message}, status=401)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _files(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode(errors="replace") for p in folder.rglob("*") if p.is_file()}


def test_planted_key_reaches_no_output_of_a_cli_run(
    echo_server: EchoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "results.jsonl"
    args = [
        sys.executable, "-m", "tts", "run", "--backend", "openai", "--dataset", "add2:3", "--strategy",
        "self_consistency", "--n", "2", "--out", str(out), "-v",
        "--set", f"backend.base_url={echo_server.url}", "--set", "backend.model=m",
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.is_file(), proc.stderr[-2000:]
    rows = out.read_text()
    assert "HTTP 401" in rows and "invalid key" in rows, rows[:1000]  # the error is kept, the key masked
    for name, text in {"stdout": proc.stdout, "stderr": proc.stderr, **_files(tmp_path)}.items():
        assert KEY not in text, f"the API key leaked into {name}"
        assert KEY[3:20] not in text, f"part of the API key leaked into {name}"


async def test_backend_errors_and_logs_are_redacted(
    echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tts.backends.openai import OpenAIBackend
    from tts.errors import BackendError
    from tts.sampling import SamplingParams
    from tts.types import Request

    monkeypatch.setenv("TTS_SECRET_TEST_KEY", "plain-secret-without-prefix-42")
    caplog.set_level(logging.DEBUG)
    for model in ("m", None):  # a named model, and one discovered through /models first
        b = OpenAIBackend(
            base_url=echo_server.url,
            model=model,
            api_key_env="TTS_SECRET_TEST_KEY",
            max_retries=0,
            headers={"X-Api-Key": "header-secret-value-77"},
        )
        with pytest.raises(BackendError) as info:
            await b.submit(Request.chat("q", SamplingParams(max_tokens=4)))
        await b.aclose()
        text = str(info.value)
        assert "plain-secret-without-prefix-42" not in text and "header-secret-value-77" not in text, text
        assert "Bearer ***" in text, text
    assert "plain-secret" not in caplog.text and "header-secret" not in caplog.text


def test_runner_error_text_redacted_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tts.cli.app`` in process: the summary on stdout and the log on stderr carry no key."""
    from tts.cli import app

    with EchoServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), contextlib.suppress(SystemExit):
            app(["run", "--backend", "openai", "--dataset", "add2:2", "--strategy", "greedy",
                 "--set", f"backend.base_url={server.url}", "--set", "backend.model=m"])  # fmt: skip
    assert KEY not in stdout.getvalue() + stderr.getvalue()


def test_module_has_no_heavy_imports() -> None:
    code = "import sys, tts.secrets; print('aiohttp' in sys.modules or 'pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
