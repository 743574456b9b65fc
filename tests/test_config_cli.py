"""``tts-scale run`` on the one run loop: the ``budget`` section (per problem, and ``total_tokens``
for the whole run) is honoured, flags land where the strategy keeps them, old shapes are refused."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import tts.cli as cli
from tts.backends.fake import FakeBackend

runner = CliRunner()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The backends the CLI builds (to count what reached the engine)."""
    built: list[Any] = []
    original = cli.build_from_spec

    def build(spec: Any) -> Any:
        backend, dataset, strategy = original(spec)
        built.append(backend)
        return backend, dataset, strategy

    monkeypatch.setattr(cli, "build_from_spec", build)
    return built


PIPELINE = """
    backend: {name: fake, default: "The answer is 4."}
    dataset: {name: add1, limit: 10}
    strategy: {name: self_consistency, n: 4}
    run: {concurrency: 1}
    """


def test_total_tokens_stops_a_run(tmp_path: Path, spy: list[Any]) -> None:
    p = _write(tmp_path, PIPELINE + "budget: {total_tokens: 60}\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli.app, ["run", str(p), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "budget.total_tokens=60 reached" in result.output and "problems not started" in result.output
    backend: FakeBackend = spy[0]
    assert 1 <= backend.requests < 10  # stopped: without the budget every problem runs
    assert len(out.read_text().splitlines()) == backend.requests
    assert "accuracy" in result.output  # the summary of what ran is still printed
    # the same pipeline without the budget runs every problem; --set reaches the budget too
    spy.clear()
    assert runner.invoke(cli.app, ["run", str(p), "--set", "budget.total_tokens=100000"]).exit_code == 0
    assert spy[0].requests == 10


def test_per_problem_budget_limits_each_problem(tmp_path: Path, spy: list[Any]) -> None:
    p = _write(tmp_path, PIPELINE + "budget: {max_completion_tokens: 3}\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli.app, ["run", str(p), "--limit", "2", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # one request of n=4 samples, each capped to what remains: at most one decode step per sample over
    assert all(r["usage"]["completion_tokens"] <= 3 + 4 for r in rows), [r["usage"] for r in rows]
    assert all(r["usage"]["calls"] == 1 for r in rows)
    assert result.exit_code == 0, result.output


def test_sampling_flags_reach_the_requests(tmp_path: Path) -> None:
    p = _write(tmp_path, PIPELINE)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        cli.app,
        [
            "run",
            str(p),
            "--limit",
            "1",
            "--temperature",
            "0.3",
            "--max-tokens",
            "12",
            "--prompt",
            "direct",
            "--n",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())
    request = row["trace"]["events"][0]["request"]
    params = request["params"]
    assert params["temperature"] == 0.3 and params["max_tokens"] == 12 and params["n"] == 2
    assert "step by step" not in json.dumps(request).lower()  # the direct prompt, not chain of thought


def test_flags_that_do_not_apply_and_bad_values_exit_2_in_one_line(tmp_path: Path) -> None:
    p = _write(tmp_path, PIPELINE)
    for args, message in (
        (["--strategy", "greedy", "--n", "3"], "--n does not apply to strategy 'greedy'"),
        (["--temperature", "-1"], "sampling.temperature must be >= 0, got -1.0."),
        (["--backend", "fake", "--model", "x"], "backend.model is not a known field"),
    ):
        result = runner.invoke(cli.app, ["run", str(p), *args])
        lines = [line for line in result.output.splitlines() if line]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output


def test_old_verifier_options_shape_exits_2_showing_the_new_one(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        """
        backend: {name: fake}
        strategy:
          name: refine
          verifier: math
          verifier_options: {timeout: 2}
        """,
    )
    result = runner.invoke(cli.app, ["run", str(p)])
    lines = [line for line in result.output.splitlines() if line]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{p}:5: strategy.verifier_options is the old shape" in lines[0] and "{name: math, ...}" in lines[0]


def test_flags_follow_the_strategy_into_its_proposer() -> None:
    """A strategy whose sampling lives in its proposer (a field typed ProposerSpec) gets the flags there,
    the rest of the proposer (its default or the file's) kept."""
    from pydantic import BaseModel, ConfigDict, Field

    from tts.config import ProposerSpec, build_component, build_strategy
    from tts.registry import REGISTRY
    from tts.sampling import SamplingParams

    class PropOptions(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        prompt: str = "cot"
        sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=99)
        shots: int = 0

    class Prop:
        name = "test_prop"
        Options = PropOptions

        def __init__(self, options: Any = None, **kw: Any) -> None:
            self.options = options

        async def propose(self, problem: Any, ctx: Any, n: int = 1) -> list[Any]:
            return []

    class SamplerOptions(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        n: int = Field(default=4, ge=1)
        proposer: ProposerSpec = ProposerSpec(name="test_prop", shots=1)

    class Sampler:
        name = "test_sampler"
        Options = SamplerOptions

        def __init__(self, options: Any = None, **kw: Any) -> None:
            self.options = options
            self.proposer = build_component(options.proposer, "proposer")

    REGISTRY.names("strategy")
    REGISTRY.register("proposer", "test_prop", Prop)
    REGISTRY.register("strategy", "test_sampler", Sampler)
    try:
        spec = cli.strategy_spec("test_sampler", n=2, temperature=0.3, prompt="direct")
        assert spec == {
            "name": "test_sampler",
            "n": 2,
            "proposer": {
                "name": "test_prop",
                "shots": 1,
                "prompt": "direct",
                "sampling": {"temperature": 0.3, "max_tokens": 99},
            },
        }
        built = build_strategy(spec)
        o = built.proposer.options
        assert (o.prompt, o.shots, o.sampling.temperature, o.sampling.max_tokens) == ("direct", 1, 0.3, 99)
        # the file's proposer is kept and completed from that proposer's own defaults
        spec = cli.strategy_spec("test_sampler", {"proposer": {"name": "test_prop", "shots": 3}}, max_tokens=5)
        o = build_strategy(spec).proposer.options
        assert (o.prompt, o.shots, o.sampling.temperature, o.sampling.max_tokens) == ("cot", 3, 0.7, 5)
    finally:
        REGISTRY._items["proposer"].pop("test_prop", None)
        REGISTRY._items["strategy"].pop("test_sampler", None)


def test_old_proposer_fields_at_the_top_exit_2_showing_the_new_shape(tmp_path: Path) -> None:
    p = _write(tmp_path, PIPELINE.replace("n: 4}", "n: 4, sampling: {temperature: 0.5}}"))
    result = runner.invoke(cli.app, ["run", str(p)])
    lines = [line for line in result.output.splitlines() if line]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{p}:3: strategy.sampling" in lines[0] and "proposer: {name: few_shot, sampling: ...}" in lines[0]


RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_takes_every_run_flag(recipe: Path, data_dir: Path, spy: list[Any], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    args = [
        "run",
        str(recipe),
        "--backend",
        "fake",
        "--limit",
        "1",
        "--n",
        "2",
        "--temperature",
        "0.5",
        "--max-tokens",
        "8",
        "--prompt",
        "direct",
        "--seed",
        "3",
        "--concurrency",
        "2",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]
    strategy = yaml.safe_load(recipe.read_text())["strategy"]
    takes_n = _takes_n(strategy)
    if not takes_n:  # a search strategy has no n: --n is refused in one line, the other flags apply
        refused = runner.invoke(cli.app, args)
        assert refused.exit_code == 2 and "--n does not apply" in refused.output, refused.output
        args = [a for i, a in enumerate(args) if a != "--n" and args[i - 1] != "--n"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code in (0, 1), result.output  # 1: the fake's reply may fail a problem, never a config error
    events = json.loads(out.read_text())["trace"]["events"]  # the first engine request (a retrieval may come first)
    params = next(e for e in events if "request" in e)["request"]["params"]
    assert params["temperature"] == 0.5
    if takes_n:
        assert (params["n"], params["max_tokens"]) == (2, 8)
    else:  # a search's "propose" call lists k steps of --max-tokens each in one reply
        assert params["max_tokens"] % 8 == 0 and params["max_tokens"] >= 8, params


def _takes_n(strategy: Any) -> bool:
    """Whether a recipe's strategy (or the one a wrapper such as rag runs) keeps an ``n``."""
    from tts.config.flags import strategy_spec
    from tts.errors import ConfigError

    base = {"name": strategy} if isinstance(strategy, str) else strategy
    try:
        strategy_spec(base["name"], base, n=2)
    except ConfigError:
        return False
    return True
