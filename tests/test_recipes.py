"""Recipes: every YAML pipeline validates and runs (on the fake engine here, the real one in the hf
test), every Python script builds the same objects as its YAML twin, and every study plans."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tts.config import BackendSpec, build_pipeline, load_pipeline
from tts.study import StudyRunner, load_study

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PIPELINES = sorted(p for p in RECIPES.glob("*.yaml"))
SCRIPTS = sorted(p for p in RECIPES.glob("*.py") if not p.name.startswith("_"))
STUDIES = sorted((RECIPES / "studies").glob("*.yaml"))
REPLY = "Let me compute.\n```python\nprint(4)\n```\nThe answer is 4. Answer: B"


def test_every_recipe_has_yaml_and_python() -> None:
    # a serving pipeline (serve_*.yaml) answers requests and runs no dataset: `tts-scale serve` is its script
    served = {p.stem for p in PIPELINES if p.stem.startswith("serve_")}
    assert served == {"serve_self_consistency"}
    assert {p.stem for p in PIPELINES} - served == {p.stem for p in SCRIPTS}
    assert {
        "gsm8k_self_consistency",
        "math500_best_of_n",
        "adaptive_self_consistency",
        "program_of_thought",
        "multiple_choice_qa",
        "cpu_demo",
    } <= {p.stem for p in PIPELINES}


def _fake(spec: Any, limit: int, data_dir: Path) -> Any:
    spec.backend = BackendSpec.model_validate({"name": "fake", "default": REPLY})
    spec.dataset.limit = limit
    if spec.dataset.name in ("gsm8k", "math500"):
        spec.dataset.data_dir = str(data_dir)
    return spec


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_yaml_recipe_runs_on_the_fake_engine(path: Path, data_dir: Path) -> None:
    spec = _fake(load_pipeline(path), 3, data_dir)
    pipe = build_pipeline(spec)
    report = pipe.run()
    assert len(report.results) == 3 and all(r.error is None for r in report.results), [r.error for r in report.results]
    assert all(r.answer is not None for r in report.results)
    assert pipe.backend.completions_generated >= 3


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"recipe_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_python_recipe_builds_the_yaml_objects(path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _module(path)
    data, task, strategy = module.build(3, str(data_dir))
    pipe = build_pipeline(_fake(load_pipeline(path.with_suffix(".yaml")), 3, data_dir))
    built = pipe.strategy
    assert type(strategy) is type(built) and strategy.options == built.options
    assert getattr(module, "BUDGET", None) == pipe.limits  # a budget: the script passes the same limits
    assert task == pipe.task
    assert [p.id for p in data.problems] == [p.id for p in pipe.problems]
    # one shared shape (tts.recipe): every script takes the same flags and prints the CLI's table
    module.main(["--backend", "fake", "--limit", "2", "--data-dir", str(data_dir), "--concurrency", "2"])
    out = capsys.readouterr().out
    assert "accuracy [95% CI]" in out and "completion tokens / problem" in out
    assert "Summary(" not in out


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_python_recipe_refuses_nonsense_in_one_line(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _module(path).main(["--backend", "fake", "--limit", "0"])
    assert exc.value.code == 2 and "--limit must be >= 1, got 0." in capsys.readouterr().err


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_recipe_plans(path: Path, data_dir: Path, tmp_path: Path) -> None:
    # out in tmp_path: a study the user ran into studies/ must not change what is left to plan
    study = load_study(path, sections={"dataset": {"limit": 2, "data_dir": str(data_dir)}}, out=tmp_path / "out")
    rows = StudyRunner(study).plan()
    assert rows and all(r.generations >= r.remaining > 0 for r in rows)


def test_components_named_by_recipes_are_registered() -> None:
    from tts.registry import REGISTRY

    names = set(REGISTRY.names("strategy"))
    for path in PIPELINES:
        assert load_pipeline(path).strategy.name in names


@pytest.fixture(scope="module")
def hf_backend() -> Any:
    from tts.backends.hf import HFBackend

    return HFBackend(threads=1)


@pytest.mark.hf
def test_cpu_demo_recipe_on_the_embedded_model(hf_backend: Any) -> None:
    spec = load_pipeline(RECIPES / "cpu_demo.yaml", {"dataset.limit": 3, "strategy.n": 2})
    pipe = build_pipeline(spec, backend=hf_backend)
    report = pipe.run()
    assert len(report.results) == 3 and all(r.error is None for r in report.results)
    assert all(len(r.candidates) == 2 for r in report.results)
    assert report.usage.completion_tokens <= 3 * 2 * 16
