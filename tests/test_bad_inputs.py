"""10.16 and the proof of issue 10: every malformed input in ``tests/bad_inputs/`` is refused with the
expected exit code and ONE line on stderr (no traceback), and nothing is written where it should not be.

``tests/bad_inputs/expected.jsonl`` holds one object per input file::

    {"file": "pipeline_n_huge.yaml", "kind": "pipeline", "exit": 2, "message": "strategy.n must be <= 65536"}

How each kind runs (in-process through ``tts-scale`` with typer's CliRunner, on the fake backend, in an
empty working folder; ``args``, when given, replaces the default flags):

- ``pipeline``: ``tts-scale run FILE --backend fake --limit 2``;
- ``study``: ``tts-scale study FILE --backend fake --dry-run --out TMP/out``;
- ``dataset``: ``tts-scale run --backend fake --strategy greedy --limit 2 --dataset FILE``;
- ``cli``: the ``.args`` file, one argument per line (``{dir}`` is this folder);
- ``python``: the ``.py`` snippet in a subprocess; an error the library raises on purpose
  (:class:`tts.errors.TTSError`) is printed as ``error: MESSAGE`` and exits 2, as the CLI does, so
  a raw pydantic or Python exception shows up as a traceback and fails the test.

The one line is also short: a huge value is cut in the message, never printed whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tts.cli import app

HERE = Path(__file__).parent / "bad_inputs"
ENTRIES: list[dict[str, Any]] = [json.loads(line) for line in (HERE / "expected.jsonl").read_text().splitlines()]
KINDS = ("pipeline", "study", "dataset", "cli", "python")

DEFAULT_FLAGS = {
    "pipeline": ["--backend", "fake", "--limit", "2"],
    "study": ["--backend", "fake", "--dry-run"],
    "dataset": ["--backend", "fake", "--strategy", "greedy", "--limit", "2"],
}

# A snippet's errors are shown the way the CLI shows them: one line, exit 2 (anything else escapes
# as a traceback).
RUN_SNIPPET = """
import runpy, sys
from tts.errors import TTSError
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
except TTSError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


def _listing() -> list[str]:
    return sorted(p.name for p in HERE.iterdir())


def _command(entry: dict[str, Any], tmp: Path) -> list[str]:
    path = str(HERE / entry["file"])
    kind = entry["kind"]
    flags = entry.get("args", DEFAULT_FLAGS.get(kind, []))
    if kind == "pipeline":
        return ["run", path, *flags]
    if kind == "study":
        return ["study", path, *flags, "--out", str(tmp / "out")]
    if kind == "dataset":
        return ["run", *flags, "--dataset", path]
    lines = (HERE / entry["file"]).read_text(encoding="utf-8").splitlines()
    return [line.replace("{dir}", str(HERE)) for line in lines if line]


@pytest.fixture(scope="module")
def snippets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Every python snippet, run at once in its own subprocess (each in an empty folder)."""
    procs = {}
    for entry in ENTRIES:
        if entry["kind"] == "python":
            cwd = tmp_path_factory.mktemp(entry["file"].replace(".", "_"))
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            procs[entry["file"]] = (
                subprocess.Popen(
                    [sys.executable, "-c", RUN_SNIPPET, str(HERE / entry["file"])],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
                cwd,
            )
    out = {}
    for name, (proc, cwd) in procs.items():
        _, err = proc.communicate(timeout=60)
        out[name] = (proc.returncode, err, cwd)
    return out


def test_the_corpus_is_large_and_complete() -> None:
    files = {e["file"] for e in ENTRIES}
    assert len(ENTRIES) >= 50 and len(files) == len(ENTRIES)
    assert {e["kind"] for e in ENTRIES} == set(KINDS)
    on_disk = set(_listing()) - {"expected.jsonl"}
    assert on_disk == files, f"files without an entry: {on_disk - files}; entries without a file: {files - on_disk}"
    for e in ENTRIES:
        assert e["kind"] in KINDS and isinstance(e["exit"], int) and e["message"], e


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_bad_input_is_refused_in_one_line(
    entry: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    snippets: dict[str, tuple[int, str, Path]],
) -> None:
    before = _listing()
    work = tmp_path / "cwd"
    work.mkdir()
    if entry["kind"] == "python":
        code, stderr, work = snippets[entry["file"]]
        output = stderr
    else:
        monkeypatch.chdir(work)
        monkeypatch.setenv("TTS_DATA_DIR", str(work))
        result = CliRunner().invoke(app, _command(entry, tmp_path))
        code, stderr, output = result.exit_code, result.stderr, result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{entry['file']}: uncaught {result.exception!r}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert code == entry["exit"], f"{entry['file']}: exit {code}, stderr: {stderr}"
    assert len(lines) == 1, f"{entry['file']}: stderr is not one line:\n{stderr}"
    assert lines[0].startswith("error: ") and entry["message"] in lines[0], f"{entry['file']}: {lines[0]}"
    assert len(lines[0]) < 600, f"{entry['file']}: a {len(lines[0])}-character line"  # huge values are cut
    # nothing written: not in the working folder, not beside the inputs, no study output
    assert list(work.iterdir()) == [], f"{entry['file']} wrote {list(work.iterdir())}"
    assert not (tmp_path / "out").exists(), f"{entry['file']} created the study's output folder"
    assert _listing() == before


# ------------------------------------------------------------------------------ bounds on every count

NOT_COUNTS = {"seed", "priority", "low", "high", "best"}
"""Integer fields that are not counts (seeds, priorities, score scales)."""


def _int_fields(model: Any) -> list[tuple[str, Any]]:
    import typing

    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        members = typing.get_args(ann) or (ann,)
        if int in members and bool not in members and name not in NOT_COUNTS:
            out.append((name, field))
    return out


def _upper_bound(field: Any) -> int | None:
    return next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)


def test_every_count_in_strategy_proposer_pipeline_and_study_options_is_bounded() -> None:
    """10.16: ``n: 99999999999999999999999`` used to pass validation and hang; every count now has a
    documented maximum (``tts.sampling.MAX_COUNT`` and friends)."""
    from tts.config.spec import BudgetSpec, DatasetSpec, RunSpec
    from tts.registry import REGISTRY
    from tts.sampling import SamplingParams
    from tts.study.spec import AllocationOptions, CurveOptions

    models: list[type] = [DatasetSpec, RunSpec, BudgetSpec, CurveOptions, AllocationOptions, SamplingParams]
    for kind in ("strategy", "proposer"):
        models += [REGISTRY.get(kind, name).Options for name in REGISTRY.names(kind)]
    unbounded = [
        f"{m.__module__}.{m.__qualname__}.{name}"
        for m in models
        for name, field in _int_fields(m)
        if _upper_bound(field) is None and not (m is SamplingParams and name in ("top_k", "logprobs"))
    ]
    assert not unbounded, f"counts without a maximum: {unbounded}"


def test_counts_are_strict_and_bounded_in_one_line() -> None:
    from tts.errors import ConfigError, parse_options
    from tts.strategies.self_consistency import SelfConsistencyOptions

    for value, message in [
        (10**23, "n must be <= 65536, got 100000000000000000000000."),
        (2.5, "n must be an integer, got 2.5."),
        (True, "n must be an integer, got True."),
        ("4", "n must be an integer, got '4'."),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_options(SelfConsistencyOptions, {"n": value})
        assert str(info.value) == message


def test_a_typo_inside_an_optional_nested_model_gets_did_you_mean() -> None:
    """``_model_at`` looks inside ``X | None`` and list items."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    from tts.errors import format_validation_error

    class Price(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cached_prompt: float = 0.0

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        weight: float = 1.0

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        pricing: Price | None = None
        items: list[Item] = []

    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"pricing": {"cached": 0.1}, "items": [{"wieght": 2}]})
    msg = format_validation_error(info.value, model=Outer)
    assert "pricing.cached is not a known field; did you mean 'cached_prompt'?" in msg
    assert "items.0.wieght is not a known field; did you mean 'weight'?" in msg
