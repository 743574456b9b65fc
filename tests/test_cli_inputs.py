"""11.5, 10.10, 10.2, 11.6, 11.8: inputs that make no sense are refused in one line (exit 2),
results files are never appended to by accident, failures set the exit code unless accepted, and
offline hub look-ups fail fast with the project's own line."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tts import load_dataset
from tts.cli import app

runner = CliRunner()
FAKE = ["run", "--backend", "fake", "--strategy", "greedy"]


def one_line_error(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-1"], "dataset.limit must be >= 1"),
        (["--limit", "0"], "dataset.limit must be >= 1"),
        (["--concurrency", "0"], "run.concurrency must be >= 1"),
        (["--max-failure-rate", "1.5"], "--max-failure-rate must be between 0 and 1"),
    ],
)
def test_nonsense_numbers_exit_2_in_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*FAKE, *args])
    assert result.exit_code == 2 and message in one_line_error(result)


def test_an_empty_dataset_file_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(app, [*FAKE, "--dataset", str(empty)])
    assert result.exit_code == 2 and "has no problems" in one_line_error(result)


def test_demo_nonsense_exits_2_in_one_line() -> None:
    for args in (["--limit", "-1"], ["--n", "0"]):
        result = runner.invoke(app, ["demo", "--backend", "fake", *args])
        assert result.exit_code == 2, (args, result.output)
        one_line_error(result)


def test_report_on_a_pipeline_file_exits_2_saying_what_it_needs() -> None:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "cpu_demo.yaml"
    result = runner.invoke(app, ["report", str(recipe)])
    assert result.exit_code == 2 and "not a study's output" in one_line_error(result)


def test_out_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "results.jsonl"
    result = runner.invoke(app, [*FAKE, "--dataset", "larger:3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 3


def test_out_onto_an_existing_file_is_refused_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    args = [*FAKE, "--dataset", "larger:3", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in one_line_error(again)
    assert len(out.read_text().splitlines()) == 3  # untouched
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3  # overwritten, not a second copy of every row
    assert "--force" in runner.invoke(app, ["run", "--help"]).output


def _failing(monkeypatch: pytest.MonkeyPatch) -> None:
    import tts.cli as cli
    from tts.backends.fake import FakeBackend, Scripted
    from tts.strategies.greedy import Greedy

    failing = FakeBackend(Scripted(by_prompt={"never": "x"}))
    monkeypatch.setattr(cli, "build_from_spec", lambda spec: (failing, load_dataset("larger:2"), Greedy()))


def test_run_failures_exit_1_unless_the_rate_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch)
    strict = runner.invoke(app, ["run", "--max-failure-rate", "0.5"])
    assert strict.exit_code == 1 and "2 of 2 problems failed (100.0%)" in strict.stderr
    assert "--max-failure-rate" in strict.stderr
    lenient = runner.invoke(app, ["run", "--max-failure-rate", "1"])
    assert lenient.exit_code == 0 and "within --max-failure-rate 1.0" in lenient.stderr
    assert "accuracy" in lenient.stdout


def test_study_failures_exit_1_unless_the_rate_is_accepted(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(
        textwrap.dedent(
            f"""
            name: capped
            dataset: {{name: add2, limit: 6, seed: 0}}
            backend: {{name: fake, oracle: {{p_correct: [0.3, 0.5, 0.7, 0.9], length: [20, 60]}}}}
            strategy: {{name: self_consistency, n: 16, stop: beta, window: 4, threshold: 0.95}}
            pipelines:
              - label: capped
                budget: {{max_calls: 1}}
            out: {tmp_path / "out"}
            report: false
            """
        )
    )
    strict = runner.invoke(app, ["study", str(study)])
    assert strict.exit_code == 1, strict.output
    assert "problems failed" in strict.stderr and "--max-failure-rate" in strict.stderr
    lenient = runner.invoke(app, ["study", str(study), "--max-failure-rate", "1"])
    assert lenient.exit_code == 0, lenient.output


def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tts.models

    calls: list[Any] = []
    fake_datasets = types.ModuleType("datasets")
    fake_datasets.load_dataset = lambda *a, **k: calls.append(a)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets)
    monkeypatch.setattr(tts.models, "_offline", lambda: False)
    monkeypatch.setattr(tts.models, "_unreachable_hub", lambda timeout=3.0: "huggingface.co")
    monkeypatch.delenv("TTS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*FAKE, "--dataset", "gsm8k:5"])
    assert result.exit_code == 2 and "huggingface.co cannot be reached" in one_line_error(result)
    assert "--data-dir" in result.output and calls == []  # no hub client, so no retry warnings


def test_report_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(
        textwrap.dedent(
            f"""
            name: tiny
            dataset: {{name: larger, limit: 2}}
            backend: {{name: fake}}
            strategy: {{name: greedy}}
            pipelines: [{{label: greedy}}]
            out: {tmp_path / "out"}
            report: false
            """
        )
    )
    assert runner.invoke(app, ["study", str(study)]).exit_code == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert result.exit_code == 2 and "pip install 'tts-scale[plot]'" in one_line_error(result)


def test_study_keep_failures_flag_keeps_stored_failures(tmp_path: Path) -> None:
    """Every problem times out (each engine call costs 10 virtual seconds against a 1 s limit): the
    study exits 1; a resume with --keep-failures runs nothing, one without it runs them again."""
    from typer.testing import CliRunner

    from tts.cli import app

    study = tmp_path / "slow.yaml"
    study.write_text(
        "name: slow\n"
        "dataset: {name: add2, limit: 3}\n"
        "backend: {name: fake, cost: {per_batch: 10.0}}\n"
        "budget: {max_wall_time: 1.0}\n"
        "pipelines: [{label: greedy, strategy: {name: greedy}}]\n"
        f"out: {tmp_path / 'out'}\n"
        "allocation: null\n"
    )
    cli = CliRunner()
    first = cli.invoke(app, ["study", str(study), "--no-report"])
    assert first.exit_code == 1 and "3 of 3 problems failed" in first.output
    kept = cli.invoke(app, ["study", str(study), "--no-report", "--keep-failures", "--max-failure-rate", "1"])
    assert kept.exit_code == 0 and "ran 0 problems" in kept.output
    again = cli.invoke(app, ["study", str(study), "--no-report", "--max-failure-rate", "1"])
    assert again.exit_code == 0 and "ran 3 problems" in again.output
