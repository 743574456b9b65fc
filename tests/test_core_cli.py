"""CLI exit codes, output files, the import-time promise and the datasets of the foundation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tts import DatasetError, load_dataset
from tts.cli import app

runner = CliRunner()


def test_import_tts_loads_no_heavy_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tts"], capture_output=True, text=True, check=True
    )
    modules = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not modules & {"torch", "transformers", "vllm"}, sorted(modules & {"torch", "transformers", "vllm"})


def test_run_writes_every_result_and_prints_summary(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    result = runner.invoke(
        app,
        [
            "run",
            "--backend",
            "fake",
            "--dataset",
            "larger:6:1",
            "--strategy",
            "self_consistency",
            "--n",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["id"] for r in rows} == {f"larger-{i}" for i in range(6)}
    assert all(len(r["candidates"]) == 3 and r["trace"]["events"] for r in rows)
    assert "accuracy" in result.output and "latency P50 / P95" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "dataset must be one of"),
        (["--strategy", "self_consistensy"], "did you mean 'self_consistency'?"),
        (["--strategy", "greedy", "--n", "4"], "--n does not apply to strategy 'greedy'"),
        (["--temperature", "-1"], "strategy.proposer.sampling.temperature must be >= 0, got -1.0."),
        (["--backend", "nonsense"], "backend.name must be one of"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["run", "--dataset", "larger:2", "--backend", "fake", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_bad_yaml_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yaml"
    path.write_text("backend:\n  name: fake\nstrategy:\n  name: self_consistency\nrun:\n  concurency: 4\n")
    result = runner.invoke(app, ["run", str(path), "--dataset", "larger:2"])
    assert result.exit_code == 2
    assert f"{path}:6: run.concurency is not a known field; did you mean 'concurrency'?" in result.output


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        rows.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "expands to more than" in result.output


def test_runtime_failure_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid configuration whose problems fail at run time (a scripted backend with no reply for
    them) prints the summary and exits 1, not 2."""
    import tts.cli as cli
    from tts.backends.fake import FakeBackend, Scripted
    from tts.strategies.greedy import Greedy

    failing = FakeBackend(Scripted(by_prompt={"never": "x"}))
    monkeypatch.setattr(cli, "build_from_spec", lambda spec: (failing, load_dataset("larger:2"), Greedy()))
    result = runner.invoke(app, ["run", "--strategy", "greedy"])
    assert result.exit_code == 1 and "2 of 2 problems failed" in result.output
    assert "accuracy" in result.output  # the summary is still printed


def test_benchmark_files_give_final_answers(data_dir: Path) -> None:
    gsm = load_dataset(str(data_dir / "gsm8k_test.jsonl"), limit=3)
    assert [p.reference for p in gsm.problems] == ["18", "3", "70000"] and gsm.task.name == "gsm8k"
    math = load_dataset("math500", data_dir=data_dir, limit=2)
    assert math.problems[0].reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    game = load_dataset(str(data_dir / "game24.csv"), limit=1)
    assert game.problems[0].question.startswith("Numbers: ") and game.problems[0].reference is None
    assert len(load_dataset("gsm8k:10:3", data_dir=data_dir)) == 10


def test_builtin_tasks_and_jsonl_mapping(tmp_path: Path) -> None:
    a, b = load_dataset("larger:20:5"), load_dataset("larger:20:5")
    assert [p.question for p in a.problems] == [p.question for p in b.problems]
    assert all(p.reference == str(max(p.metadata["a"], p.metadata["b"])) for p in a.problems)
    assert len(load_dataset("capitals").problems) == 100
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "2+2?", "gold": "4", "uid": "x1"}\n')
    ds = load_dataset(str(path), fields={"question": "q", "reference": "gold", "id": "uid"})
    assert ds.problems[0].id == "x1" and ds.problems[0].reference == "4"
    with pytest.raises(DatasetError, match=r"invalid JSON"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text("{oops\n")
        load_dataset(str(bad))
    with pytest.raises(DatasetError, match=r"pass a local JSONL/CSV file instead|needs the datasets library"):
        load_dataset("hf:nobody/nothing")
