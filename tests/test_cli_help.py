"""11.7: help a newcomer can read: ``--version``, ``tts-scale list [KIND]`` from the registry
(plugins included), flags without a type tag, ``-v`` explained, and command help without literal
double backticks or a line broken mid-sentence."""

from __future__ import annotations

import itertools

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tts import __version__
from tts.cli import app

runner = CliRunner()
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tts-scale {__version__}"


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


WIDTH = 120


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_reads_cleanly(command: str) -> None:
    text = _help(*([command] if command else []))
    assert "<bool>" not in text, text  # a flag takes no value
    assert "``" not in text, text
    description = text.split("Options:")[0].split("Arguments:")[0]
    for paragraph in description.split("\n\n")[1:]:
        lines = paragraph.splitlines()
        for line, nxt in itertools.pairwise(lines):
            # a line ends early only when the next word would not have fitted
            assert len(line) + 1 + len(nxt.split()[0]) > WIDTH - 4, f"{command}: {line!r} / {nxt!r}"


def test_verbose_has_help() -> None:
    for command in ("run", "study"):
        line = next(line for line in _help(command).splitlines() if "--verbose" in line)
        assert "-v" in line and len(line.split("--verbose", 1)[1].strip()) > 5, line


def test_list_shows_every_kind_with_options() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for header in ("strategies:", "proposers:", "verifiers:", "backends:", "tasks:"):
        assert header in result.output
    assert "  self_consistency: Vote over canonical answer keys" in result.output
    assert "      n (int, default 8): Number of sampled chains" in result.output
    assert "      stop (none|esc|beta|dirichlet|consensus|outcome|auto, default 'none')" in result.output
    assert "      lookahead (int | auto, default 0)" in result.output  # constrained types by their base type
    assert "  gsm8k: benchmark" in result.output and "  larger: built-in" in result.output
    names = runner.invoke(app, ["list", "backends", "--names"]).output.split()
    assert {"fake", "hf", "openai", "vllm"} <= set(names) and "self_consistency" not in names


def test_list_shows_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from tts.registry import REGISTRY

    class Mine:
        """A plugin strategy that always answers 42."""

        class Options(BaseModel):
            depth: int = 3
            """How deep it thinks."""

    REGISTRY.names("strategy")  # loaded, so the plugin is added to the real table
    monkeypatch.setitem(REGISTRY._items["strategy"], "mine", Mine)
    result = runner.invoke(app, ["list", "strategy"])
    assert "  mine: A plugin strategy that always answers 42." in result.output
    assert "      depth (int, default 3): How deep it thinks." in result.output


def test_list_unknown_kind_exits_2() -> None:
    result = runner.invoke(app, ["list", "widgets"])
    assert result.exit_code == 2 and "KIND must be one of strategies" in result.output
