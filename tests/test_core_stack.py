"""A request's path from the command line to the backend stays short: at most 7 tts modules are
on the Python stack when the backend's ``submit`` is called for ``tts-scale run
recipes/cpu_demo.yaml --backend fake`` (the README's "What is inside" names them in order)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from tts.backends.fake import FakeBackend

ROOT = Path(__file__).resolve().parents[1]


def _tts_modules(frames: list[inspect.FrameInfo]) -> list[str]:
    out: list[str] = []
    for frame in reversed(frames):  # outermost first
        name = frame.frame.f_globals.get("__name__", "")
        if (name == "tts" or name.startswith("tts.")) and (not out or out[-1] != name):
            out.append(name)
    return out


def test_tts_modules_on_the_stack_at_backend_submit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tts.cli import app

    seen: list[list[str]] = []
    submit = FakeBackend.submit

    def spy(self: FakeBackend, request: Any) -> Any:
        seen.append(_tts_modules(inspect.stack()))
        return submit(self, request)

    monkeypatch.setattr(FakeBackend, "submit", spy)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        app(["run", str(ROOT / "recipes" / "cpu_demo.yaml"), "--backend", "fake", "--limit", "3"])
    assert done.value.code in (0, None)
    assert seen, "the backend was never called"
    modules = max(seen, key=len)
    assert len(set(modules)) <= 7, modules
    assert "tts.cli" in modules and modules[-1] == "tts.scheduler", modules
