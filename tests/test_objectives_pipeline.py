"""``run: {objective: ...}`` in a pipeline: the objective's policy (:mod:`tts.objectives`) fills
the knobs the pipeline left unset, and a study refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.config import build_pipeline, load_pipeline
from tts.errors import ConfigError
from tts.scheduler import Scheduler

PIPELINE = """
backend: {{name: fake, default: "The answer is 4."}}
dataset: {{name: larger, limit: 4}}
strategy: {{name: self_consistency, n: 4{stop}}}
run: {{concurrency: 4{run}}}
"""


def _pipe(tmp_path: Path, *, stop: str = "", run: str = "") -> object:
    p = tmp_path / "p.yaml"
    p.write_text(PIPELINE.format(stop=stop, run=run))
    return build_pipeline(load_pipeline(p))


def test_cost_objective_turns_on_early_stopping_and_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_SCALE_CACHE", str(tmp_path / "cache.sqlite"))
    pipe = _pipe(tmp_path, run=", objective: cost")
    assert pipe.strategy.options.stop == "auto"
    engine = pipe.engine()
    assert isinstance(engine, Scheduler) and engine.cache is not None
    assert engine.cache.path == tmp_path / "cache.sqlite"
    report = pipe.run()
    assert len(report.results) == 4 and all(r.ok for r in report.results)


def test_a_knob_the_pipeline_sets_wins_over_the_policy(tmp_path: Path) -> None:
    pipe = _pipe(tmp_path, stop=", stop: none", run=", objective: cost, cache: {enabled: false}")
    assert pipe.strategy.options.stop == "none"
    assert pipe.engine() is pipe.backend  # the cache opted out: no scheduler in front of the backend


def test_latency_objective_runs_ahead_with_small_engine_batches(tmp_path: Path) -> None:
    pipe = _pipe(tmp_path, run=", objective: latency")
    assert pipe.run_options()["priority"] == -1
    assert pipe.backend.options.max_batch == 4
    assert pipe.strategy.options.stop == "none"  # early stopping is the cost policy's
    plain = _pipe(tmp_path)
    assert "priority" not in plain.run_options() and plain.backend.options.max_batch is None


def test_an_unknown_objective_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _pipe(tmp_path, run=", objective: speed")
    assert "run.objective" in str(exc.value) and "latency" in str(exc.value) and "\n" not in str(exc.value)


def test_a_study_refuses_an_objective_in_one_line(tmp_path: Path) -> None:
    from tts.study import StudyRunner, load_study

    p = tmp_path / "s.yaml"
    p.write_text(
        "name: s\ndataset: {name: add2, limit: 4}\nbackend: {name: fake}\n"
        "pipelines:\n  - label: sc\n    strategy: {name: self_consistency, n: 2}\n    run: {objective: cost}\n"
        "n_values: [2]\n"
    )
    with pytest.raises(ConfigError) as exc:
        StudyRunner(load_study(p, out=tmp_path / "out")).run()
    msg = str(exc.value)
    assert "run.objective is refused in studies" in msg and "drop run.objective" in msg and "\n" not in msg
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before anything is written


def test_tts_scale_run_honours_the_objective_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tts.cli import app

    monkeypatch.setenv("TTS_SCALE_CACHE", str(tmp_path / "cache.sqlite"))
    p = tmp_path / "p.yaml"
    p.write_text(PIPELINE.format(stop="", run=", seed: 3, objective: cost"))
    result = CliRunner().invoke(app, ["run", str(p)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache.sqlite").exists()  # the cost policy's request cache was used by the CLI run
