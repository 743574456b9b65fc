"""Pipeline files: validation against the registry, errors with file/line/field/fix, nested
components, task overrides from YAML, per-stage budgets, CLI overrides and exit codes."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from tts import ConfigError, FakeBackend, Problem, SelfConsistency, solve
from tts.cli import app
from tts.config import (
    MAX_YAML_NODES,
    BackendSpec,
    BudgetSpec,
    DatasetSpec,
    PipelineSpec,
    Stage,
    StrategySpec,
    TaskSpec,
    apply_overrides,
    build_component,
    build_pipeline,
    load_pipeline,
    merge,
    parse_pipeline,
    read_yaml,
    validate_component,
)
from tts.context import Context
from tts.registry import REGISTRY
from tts.types import Result


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


# ------------------------------------------------------------------ a strategy with a nested strategy


class _TwiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inner: StrategySpec = StrategySpec(name="greedy")
    rounds: int = Field(default=2, ge=1)


class _Twice:
    """Test strategy: runs its inner strategy ``rounds`` times and keeps the last result."""

    name: ClassVar[str] = "test_twice"
    Options = _TwiceOptions

    def __init__(self, options: _TwiceOptions | None = None, **kw: Any) -> None:
        self.options = options or _TwiceOptions(**kw)
        self.inner = build_component(self.options.inner, "strategy")

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        result = None
        for _ in range(self.options.rounds):
            result = await self.inner.solve(problem, ctx)
        assert result is not None
        return result


@pytest.fixture()
def twice() -> Any:
    REGISTRY.names("strategy")  # load the built-ins first
    REGISTRY.register("strategy", "test_twice", _Twice)
    yield _Twice
    REGISTRY._items["strategy"].pop("test_twice", None)


# ------------------------------------------------------------------ errors


def test_error_names_file_line_field_and_fix(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        backend: {name: fake}
        dataset: {name: add1, limit: 2}
        strategy:
          name: self_consistency
          n: 0
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(p)
    assert str(info.value) == f"{p}:5: strategy.n must be >= 1, got 0."


def test_nested_component_error_has_its_full_path(tmp_path: Path, twice: Any) -> None:
    p = write(
        tmp_path,
        """
        strategy:
          name: test_twice
          inner:
            name: self_consistency
            n: 0
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(p)
    assert str(info.value) == f"{p}:5: strategy.inner.n must be >= 1, got 0."


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("stratgy: {name: greedy}\n", "stratgy is not a known field; did you mean 'strategy'?"),
        ("strategy: {name: self_consistency, nn: 4}\n", "strategy.nn is not a known field; did you mean 'n'?"),
        (
            "strategy:\n  name: self_consistency\n  proposer: {name: few_shot, sampling: {temprature: 0.5}}\n",
            "strategy.proposer.sampling.temprature is not a known field; did you mean 'temperature'?",
        ),
        ("strategy: {name: self_consistancy}\n", "did you mean 'self_consistency'?"),
        ("backend: {name: fake, defalt: x}\n", "backend.defalt is not a known field; did you mean 'default'?"),
        ("backend: {name: hff}\n", "backend.name must be one of"),
        ("task: {answer_format: maths}\n", "did you mean 'math'?"),
        ("task: {answer_pattern: 'answer is \\d+'}\n", "answer_pattern must have a group around the answer"),
        ("dataset: {name: add1, limit: 0}\n", "dataset.limit must be >= 1, got 0."),
        (
            "strategy:\n  name: best_of_n\n  verifiers:\n    - {name: math, timout: 2}\n",
            "strategy.verifiers.0.timout is not a known field; did you mean 'timeout'?",
        ),
        (
            "strategy:\n  name: best_of_n\n  verifiers: [maths]\n",
            "strategy.verifiers.0.name must be a registered verifier",
        ),
    ],
)
def test_typos_and_bad_values_get_a_one_line_fix(tmp_path: Path, yaml_text: str, expected: str) -> None:
    p = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(p)
    msg = str(info.value)
    assert (
        msg.startswith(f"{p}:1: ")
        or msg.startswith(f"{p}:2: ")
        or msg.startswith(f"{p}:3: ")
        or msg.startswith(f"{p}:4: ")
    )
    assert expected in msg
    assert "\n" not in msg


def test_line_of_a_nested_typo_is_the_typo_line(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        backend: {name: fake}
        strategy:
          name: best_of_n
          n: 4
          verifiers:
            - name: math
              weight: 0.5
              timout: 3
        """,
    )
    with pytest.raises(ConfigError, match=r"pipeline\.yaml:8: strategy\.verifiers\.0\.timout is not a known field"):
        load_pipeline(p)


def test_invalid_yaml_and_alias_bombs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: invalid YAML"):
        load_pipeline(write(tmp_path, "strategy: {name: greedy\nrun: [\n", "bad.yaml"))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_NODES} nodes"):
        read_yaml(bomb)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_pipeline(tmp_path / "missing.yaml")


def test_cli_exits_2_on_configuration_errors_and_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "backend: {name: fake}\ndataset: {name: add1, limit: 2}\nstrategy: {name: greedy, n: 3}\n")
    result = CliRunner().invoke(app, ["run", str(p)])
    assert result.exit_code == 2
    assert f"{p}:3: strategy.n is not a known field" in result.output


# ------------------------------------------------------------------ defaults, overrides, code = YAML


def test_defaults_are_filled_in_and_code_builds_the_same_spec(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        backend: {name: fake}
        dataset: {name: add2, limit: 3}
        strategy: {name: self_consistency, n: 4, proposer: {name: few_shot, sampling: {temperature: 0.5}}}
        """,
    )
    from_yaml = load_pipeline(p)
    in_code = PipelineSpec(
        backend=BackendSpec(name="fake"),
        dataset=DatasetSpec(name="add2", limit=3),
        strategy=StrategySpec.model_validate(
            {"name": "self_consistency", "n": 4, "proposer": {"name": "few_shot", "sampling": {"temperature": 0.5}}}
        ),
    )
    resolved = from_yaml.resolved()
    assert resolved == in_code.check().resolved()
    sc = resolved["strategy"]
    proposer = sc["proposer"]
    assert sc["n"] == 4 and proposer["sampling"]["temperature"] == 0.5
    assert proposer["sampling"]["max_tokens"] == 256 and proposer["prompt"] == "cot"  # defaults filled in
    assert resolved["run"]["concurrency"] == 64
    built = build_pipeline(from_yaml).strategy
    assert (
        isinstance(built, SelfConsistency)
        and built.options
        == SelfConsistency(n=4, proposer={"name": "few_shot", "sampling": {"temperature": 0.5}}).options
    )


def test_overrides_and_merge_rules() -> None:
    data = {
        "strategy": {"name": "self_consistency", "n": 4},
        "backend": {"name": "hf", "model": "x"},
        "dataset": {"name": "gsm8k", "data_dir": "d"},
    }
    assert apply_overrides(data, {"strategy.n": 8})["strategy"] == {"name": "self_consistency", "n": 8}
    assert apply_overrides(data, {"strategy.name": "greedy"})["strategy"] == {"name": "greedy"}
    assert apply_overrides(data, {"strategy.sampling.temperature": 0.2})["strategy"]["sampling"] == {"temperature": 0.2}
    assert data["strategy"] == {"name": "self_consistency", "n": 4}  # not mutated
    merged = merge(data, {"backend": {"name": "fake"}, "dataset": {"name": "math500"}, "strategy": {"n": 2}})
    assert merged["backend"] == {"name": "fake"}  # a new backend drops the old one's options
    assert merged["dataset"] == {"name": "math500", "data_dir": "d"}  # datasets keep their folder
    assert merged["strategy"] == {"name": "self_consistency", "n": 2}


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        backend: {name: fake, default: "The answer is 4."}
        dataset: {name: add1, limit: 50}
        strategy: {name: self_consistency, n: 3}
        """,
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["run", str(p), "--limit", "4", "--n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 4
    import json

    assert all(len(json.loads(line)["candidates"]) == 2 for line in lines)


# ------------------------------------------------------------------ nested components, tasks, budgets


def test_nested_strategy_is_built_from_its_spec(twice: Any) -> None:
    spec = parse_pipeline(
        {
            "backend": {"name": "fake"},
            "dataset": {"name": "add1", "limit": 2},
            "strategy": {"name": "test_twice", "rounds": 3, "inner": {"name": "self_consistency", "n": 2}},
        }
    )
    pipe = build_pipeline(spec)
    assert isinstance(pipe.strategy, _Twice) and isinstance(pipe.strategy.inner, SelfConsistency)
    assert pipe.strategy.inner.options.n == 2
    report = pipe.run()
    assert pipe.backend.requests == 2 * 3 and pipe.backend.completions_generated == 2 * 3 * 2
    inner = spec.resolved()["strategy"]["inner"]
    assert inner["proposer"]["sampling"]["temperature"] == 0.7  # nested defaults filled
    assert len(report.results) == 2


def test_task_section_sets_templates_and_answer_pattern() -> None:
    spec = parse_pipeline(
        {
            "backend": {"name": "fake", "replies": {"Q:": "I pick option (c) because... ANSWER=c"}},
            "dataset": {"name": "add1", "limit": 2},
            "task": {
                "instruction": "Reply ANSWER=<letter>.",
                "direct_template": "Q: {question} | {instruction}",
                "answer_pattern": r"ANSWER=(\w)",
                "answer_format": "text",
            },
            "strategy": {"name": "greedy", "proposer": {"name": "few_shot", "prompt": "direct"}},
        }
    )
    pipe = build_pipeline(spec)
    report = pipe.run()
    first = report.results[0]
    request = first.trace.events[0].request
    assert request is not None
    prompt = request.messages()[-1]["content"]
    assert prompt.startswith("Q: What is") and prompt.endswith("| Reply ANSWER=<letter>.")
    assert [r.answer for r in report.results] == ["c", "c"]
    assert pipe.task.canonical("C") == "c"


def test_stage_limits_stop_a_stage_and_count_its_usage(twice: Any) -> None:
    backend = FakeBackend.scripted(default="The answer is 2.")
    limited = {"name": "test_twice", "rounds": 3, "inner": "greedy", "limits": {"max_calls": 2}}
    strategy = build_component(limited, "strategy")
    assert isinstance(strategy, Stage) and strategy.options.rounds == 3  # other attributes are the component's
    result = asyncio.run(solve(strategy, Problem("p", "What is 1 + 1?", "2"), backend))
    assert result.error is not None and "test_twice: max_calls=2 reached" in result.error
    assert backend.requests == 2 and result.usage.calls == 2 and result.usage.completions == 2
    # a nested stage: its limits hold for what it spends on the problem over all its calls (both rounds)
    backend = FakeBackend.scripted(default="The answer is 2.")
    inner = {"name": "self_consistency", "n": 2, "limits": {"max_calls": 2}}
    ok = build_component({"name": "test_twice", "rounds": 2, "inner": inner}, "strategy")
    assert isinstance(ok.inner, Stage) and ok.inner.limits.max_calls == 2
    assert asyncio.run(solve(ok, Problem("p", "What is 1 + 1?", "2"), backend)).correct is True
    assert backend.requests == 2
    backend = FakeBackend.scripted(default="The answer is 2.")
    inner = {"name": "self_consistency", "n": 2, "limits": {"max_calls": 1}}
    short = build_component({"name": "test_twice", "rounds": 2, "inner": inner}, "strategy")
    result = asyncio.run(solve(short, Problem("p", "What is 1 + 1?", "2"), backend))
    assert "self_consistency: max_calls=1 reached" in (result.error or "") and backend.requests == 1


def test_stage_wall_time_is_a_timeout(twice: Any) -> None:
    class _Slow:
        name: ClassVar[str] = "test_slow"
        Options = _TwiceOptions

        def __init__(self, options: Any = None, **kw: Any) -> None:
            self.options = options

        async def solve(self, problem: Problem, ctx: Context) -> Result:
            await asyncio.sleep(5)
            raise AssertionError("not reached")

    REGISTRY.register("strategy", "test_slow", _Slow)
    try:
        inner = {"name": "test_slow", "limits": {"max_wall_time": 0.05}}
        strategy = build_component({"name": "test_twice", "rounds": 1, "inner": inner}, "strategy")
        result = asyncio.run(solve(strategy, Problem("p", "What is 1 + 1?", "2"), FakeBackend()))
        assert result.status == "timeout" and "test_slow: max_wall_time=0.05s exceeded" in (result.error or "")
    finally:
        REGISTRY._items["strategy"].pop("test_slow", None)


def test_budget_section_limits_each_problem(twice: Any) -> None:
    spec = PipelineSpec(
        backend=BackendSpec.model_validate({"name": "fake", "default": "The answer is 2."}),
        dataset=DatasetSpec(name="add1", limit=2),
        strategy=StrategySpec.model_validate({"name": "test_twice", "rounds": 2}),
        budget=BudgetSpec(max_calls=1),
    )
    report = build_pipeline(spec).run()
    assert all("BudgetExceeded: problem: max_calls=1 reached" in (r.error or "") for r in report.results)
    assert all(r.usage.calls == 1 for r in report.results)
    unlimited = build_pipeline(spec.model_copy(update={"budget": BudgetSpec()})).run()
    assert all(r.error is None and r.usage.calls == 2 for r in unlimited.results)


def test_oracle_backend_marks_problems_and_answers_with_known_accuracy() -> None:
    spec = parse_pipeline(
        {
            "backend": {"name": "fake", "oracle": {"p_correct": [1.0, 0.0]}},
            "dataset": {"name": "add2", "limit": 6},
            "strategy": {"name": "greedy"},
        }
    )
    pipe = build_pipeline(spec)
    assert all(p.question.startswith(f"[oracle:{p.id}]") for p in pipe.problems)
    report = pipe.run()
    assert [r.correct for r in report.results] == [True, False] * 3


def test_python_recipes_can_pass_built_objects() -> None:
    sc = SelfConsistency(n=2)
    assert build_component(sc) is sc
    assert isinstance(build_component("greedy", "strategy"), object)
    with pytest.raises(ConfigError, match=r"strategy\.name must be a registered strategy"):
        build_component({"name": "nope"}, "strategy")
    # a verifier without an Options model: checked against its constructor (``**kwargs`` pass through)
    orm = validate_component({"name": "orm", "model": "some/reward-model"}, "verifier")[1]
    assert getattr(orm, "model", None) == "some/reward-model"
    with pytest.raises(ConfigError, match=r"verifier\.model is required"):
        validate_component({"name": "orm"}, "verifier", ("verifier",))
    verifier = build_component({"name": "math", "timeout": 2.0}, "verifier")
    assert verifier.name == "math"
    with pytest.raises(ConfigError, match=r"verifier\.timeout must be a number"):
        build_component({"name": "math", "timeout": "soon"}, "verifier")


def test_task_spec_covers_every_task_field() -> None:
    import dataclasses

    from tts.task import Task

    assert {f.name for f in dataclasses.fields(Task)} <= set(TaskSpec.model_fields)


def test_task_spec_rejects_templates_without_question() -> None:
    with pytest.raises(Exception, match=r"must contain \{question\}"):
        TaskSpec(cot_template="no placeholder")
