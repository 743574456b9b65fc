"""The study file: keys of earlier versions are refused with the new shape in one line, n values
and pricing, and a study runs through the one run loop (tts.runner.arun)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tts.runner
from tts.cli import app
from tts.errors import ConfigError
from tts.study import StudyRunner, load_study
from tts.study.store import Store


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "pipelines: [{label: x}]\nbudgets: [4]\n",
            2,
            "budgets is now n_values (the values of strategy.n; 'budget' is a "
            "pipeline's per-problem limits): write n_values: [...].",
        ),
        ("pipelines:\n  - label: x\n    budgets: [4]\n", 3, "budgets is now n_values"),
        ("pipelines: [{label: x}]\nbudget_key: strategy.n\n", 2, "budget_key is now n_key: write n_key: strategy.n."),
        (
            "pipelines: [{label: x}]\nprice: {prompt: 1, completion: 2}\n",
            2,
            "price moved to the backend: write backend: {pricing: {prompt: ..., completion: ...}}",
        ),
    ],
)
def test_renamed_keys_are_refused_with_the_new_shape(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["study", str(path), "--dry-run"])
    assert result.exit_code == 2 and message in result.output


def test_n_values_set_n_key_and_pricing_does_not_change_a_configuration(tmp_path: Path) -> None:
    base = """
        dataset: {name: add2, limit: 3}
        backend: {name: fake%s}
        pipelines: [{label: sc, strategy: {name: self_consistency}}]
        n_values: [2, 4]
        """
    plain = load_study(write(tmp_path, base % "", "a.yaml"))
    priced = load_study(write(tmp_path, base % ", pricing: {prompt: 1.0, completion: 2.0}", "b.yaml"))
    assert [c.label for c in plain.configs] == ["sc n=2", "sc n=4"]
    assert [c.n_value for c in plain.configs] == [2, 4]
    assert [c.resolved["strategy"]["n"] for c in plain.configs] == [2, 4]
    assert [c.id for c in plain.configs] == [c.id for c in priced.configs]  # pricing changes cost, not results
    window = load_study(
        write(
            tmp_path,
            """
        dataset: {name: add2, limit: 3}
        pipelines: [{label: sc, strategy: {name: self_consistency, stop: beta}}]
        n_values: [2, 4]
        n_key: strategy.window
        """,
            "c.yaml",
        )
    )
    assert [c.resolved["strategy"]["window"] for c in window.configs] == [2, 4]


def test_each_configuration_and_seed_is_one_run_of_the_run_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real = tts.runner.arun

    async def spy(strategy: Any, problems: Any, backend: Any, **kw: Any) -> Any:
        problems = list(problems)
        calls.append({"problems": len(problems), **kw})
        return await real(strategy, problems, backend, **kw)

    monkeypatch.setattr(tts.runner, "arun", spy)
    path = write(
        tmp_path,
        f"""
        dataset: {{name: add2, limit: 6}}
        backend: {{name: fake, oracle: {{p_correct: 0.5}}}}
        pipelines: [{{label: g, strategy: {{name: greedy}}}}, {{label: sc, strategy: {{name: self_consistency}}}}]
        n_values: [3]
        budget: {{max_completion_tokens: 40, total_tokens: 100000}}
        seeds: [0, 1]
        out: {tmp_path / "out"}
        report: false
        """,
    )
    study = load_study(path)
    outcome = StudyRunner(study).run()
    assert outcome.ran == 2 * 2 * 6 and len(calls) == 4
    assert [c["seed"] for c in calls] == [0, 1, 0, 1] and all(c["seed_requests"] for c in calls)
    assert all(c["limits"].max_completion_tokens == 40 and c["total_limits"].max_tokens == 100000 for c in calls)
    with Store(study.store_path, readonly=True) as store:
        rows = store.results()
    assert len(rows) == 24 and all(r["status"] in ("ok", "cut", "failed") for r in rows)
    # the per-problem limit holds within one decode step per sample
    assert all(r["completion_tokens"] <= 40 + 3 for r in rows)
    assert max(r["completion_tokens"] for r in rows) >= 39  # and it was binding
    calls.clear()
    assert StudyRunner(load_study(path)).run().skipped == 24 and calls == []  # resumed: nothing left to run


RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "studies"


def test_study_outputs_go_where_the_readme_says_and_never_into_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: ``tts-scale study recipes/studies/cpu_demo_study.yaml`` then ``tts-scale report
    studies/cpu-demo``: a study's default folder is ``studies/NAME`` under the current folder (not
    beside the recipe), and a dry run writes nothing."""
    checkout = RECIPES.parents[1]
    before = sorted(p.name for p in checkout.iterdir())
    readme = (checkout / "README.md").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for path in sorted(RECIPES.glob("*.yaml")):
        study = load_study(path)
        assert study.out == Path("studies") / study.spec.name and not study.out.is_absolute()
        assert (tmp_path / study.out).resolve().parent == (tmp_path / "studies").resolve()
    assert (
        "tts-scale report studies/cpu-demo" in readme
        and load_study(RECIPES / "cpu_demo_study.yaml").spec.name == "cpu-demo"
    )
    # a recipe run with its default folder (the fake oracle: seconds) lands under the current folder
    study = load_study(RECIPES / "oracle_simulation.yaml", sections={"dataset": {"limit": 4}}, seeds=[0])
    StudyRunner(study).plan()
    assert not (tmp_path / "studies").exists()
    outcome = StudyRunner(study).run()
    assert (tmp_path / "studies" / "oracle-simulation" / "results.sqlite").resolve() == outcome.store.resolve()
    assert sorted(p.name for p in checkout.iterdir()) == before


@pytest.mark.parametrize("name", ["cpu_demo_study", "temperature_sweep"])
def test_cpu_recipes_leave_room_for_an_answer(name: str, tmp_path: Path) -> None:
    """SmolLM2 states its answer about 30-40 tokens into a reply on "larger" (measured: "To solve
    this problem, ... The larger number is 63."). On a stand-in model with replies that long, no
    configuration of the CPU study recipes may be flagged as cut off at the token limit (greedy
    had 16 tokens: all 30 greedy answers were cut off and scored 0)."""
    oracle = {"name": "fake", "oracle": {"p_correct": 0.6, "length": [30, 40]}}
    study = load_study(
        RECIPES / f"{name}.yaml", sections={"backend": oracle, "dataset": {"limit": 6}}, out=tmp_path / "out"
    )
    outcome = StudyRunner(study).run()
    assert outcome.failed == 0 and outcome.warnings == [], outcome.warnings
    with Store(outcome.store, readonly=True) as store:
        cut = [store.truncation(c.id) for c in study.configs]
    assert all(length == 0 and drawn >= 6 for length, _, drawn in cut), cut
