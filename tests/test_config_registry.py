"""One registry for every kind: a plugin backend registered through the ``tts_scale`` entry-point
group validates, builds and runs like a built-in one (``tts.make_backend``, pipelines, the CLI)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tts
from tts import ConfigError
from tts.cli import app
from tts.config import build_pipeline, load_pipeline
from tts.registry import KINDS, REGISTRY

PLUGIN = '''
from pydantic import BaseModel, ConfigDict

from tts.backends.fake import FakeBackend, Scripted
from tts.errors import parse_options


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reply: str = "The answer is 0."


class EchoBackend(FakeBackend):
    """A plugin backend: a fake engine that always gives ``reply``."""

    name = "echo"
    Options = EchoOptions

    def __init__(self, options=None, **kw):
        self.options = options if options is not None else parse_options(EchoOptions, kw, where="backend echo")
        super().__init__(Scripted(default=self.options.reply))


def register(registry):
    registry.register("backend", "echo", "tts_echo_plugin:EchoBackend")
'''


@pytest.fixture()
def echo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An installed plugin: a module and a ``*.dist-info`` with its entry point, on ``sys.path``."""
    (tmp_path / "tts_echo_plugin.py").write_text(PLUGIN, encoding="utf-8")
    info = tmp_path / "tts_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tts-echo-plugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[tts_scale]\necho = tts_echo_plugin:register\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    REGISTRY.reload()
    yield tmp_path
    REGISTRY.reload()
    sys.modules.pop("tts_echo_plugin", None)


def test_plugin_backend_builds_and_runs(echo_plugin: Path) -> None:
    assert "echo" in REGISTRY.names("backend") and "fake" in REGISTRY.names("backend")
    backend = tts.make_backend("echo", reply="The answer is 2.")
    report = tts.run(tts.Greedy(), [tts.Problem("p", "What is 1 + 1?", "2")], backend)
    assert report.results[0].correct is True and backend.requests == 1
    with pytest.raises(ConfigError, match=r"backend\.rply is not a known field; did you mean 'reply'\?"):
        tts.make_backend("echo", rply="x")

    p = echo_plugin / "pipeline.yaml"
    p.write_text(
        textwrap.dedent("""
        backend: {name: echo, reply: "The answer is 2."}
        dataset: {name: add1, limit: 3}
        strategy: {name: self_consistency, n: 2}
        """),
        encoding="utf-8",
    )
    pipe = build_pipeline(load_pipeline(p))
    report = pipe.run()
    assert type(pipe.backend).__name__ == "EchoBackend" and pipe.backend.requests == 3
    assert [r.answer for r in report.results] == ["2", "2", "2"]
    result = CliRunner().invoke(app, ["run", str(p), "--limit", "2"])
    assert result.exit_code == 0 and "accuracy" in result.output, result.output


def test_unknown_backend_lists_the_registered_ones(echo_plugin: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"backend\.name must be one of echo, fake, hf, openai, vllm, got 'ecko'; "
        r"did you mean 'echo'\?",
    ):
        tts.make_backend("ecko")


def test_registry_kinds_and_missing_engines() -> None:
    assert KINDS == ("strategy", "verifier", "proposer", "backend", "retriever")
    assert "self_consistency" in REGISTRY.names("strategy") and "math" in REGISTRY.names("verifier")
    REGISTRY.register("backend", "test_missing", "tts_no_such_engine:Backend")
    try:
        with pytest.raises(ConfigError, match=r"backend 'test_missing' is not available .*install its extra"):
            REGISTRY.get("backend", "test_missing")
    finally:
        REGISTRY._items["backend"].pop("test_missing", None)
