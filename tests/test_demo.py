"""The CPU demo (issue 10.10): a ladder of strategies on add2 with trivial baselines and paired
intervals against greedy and the best baseline, said in words when an interval includes zero."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tts import FakeBackend
from tts.cli import app
from tts.demo import DemoPlan, ladder, run_demo, verdicts

runner = CliRunner()


def test_demo_on_the_fake_backend_prints_baselines_and_paired_intervals(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    result = runner.invoke(
        app, ["demo", "--backend", "fake", "--limit", "4", "--n", "3", "--max-tokens", "9", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "tts-scale demo: add2, 4 problems" in text
    for label in ("greedy", "self_consistency@3", "program_of_thought", "program_of_thought@4"):
        assert label in text
    assert "baseline: most frequent answer" in text and "baseline: always first number" in text
    assert "vs greedy [95% CI]" in text and "vs most frequent answer [95% CI]" in text
    # the fake answers 0 everywhere: every interval against greedy is [0, 0], said in words
    assert "self_consistency@3: not distinguishable from greedy (+0.000 [+0.000, +0.000]" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 * 4
    params = [(r["strategy"], r["trace"]["events"][0]["request"]) for r in rows]
    direct = [(s, q) for s, q in params if s in ("greedy", "self_consistency")]
    assert all(q["params"]["temperature"] == 0 for s, q in direct if s == "greedy")
    assert all(
        q["params"]["temperature"] == 0.7 and q["params"]["n"] == 3 for s, q in direct if s == "self_consistency"
    )
    assert all(q["params"]["max_tokens"] == 9 for _, q in direct)
    first = rows[0]["id"]
    same = {
        json.dumps(q["prompt"])
        for (s, q), r in zip(params, rows, strict=True)
        if r["id"] == first and s != "program_of_thought"
    }
    assert len(same) == 1  # greedy and self-consistency see the same direct prompt


def test_demo_on_larger_shows_chance_and_always_first() -> None:
    result = runner.invoke(app, ["demo", "--backend", "fake", "--task", "larger", "--limit", "10"])
    assert result.exit_code == 0, result.output
    assert "baseline: chance" in result.output and "baseline: always first" in result.output
    assert re.search(r"baseline: chance\s+│\s+0\.500", result.output)
    assert "trivial baselines on these 10 problems: chance 0.500" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-1"], "demo --limit must be at least 1, got -1."),
        (["--limit", "0"], "demo --limit must be at least 1, got 0."),
        (["--n", "0"], "demo --n must be at least 1, got 0."),
        (["--temperature", "0"], "demo --temperature must be > 0"),
    ],
)
def test_nonsense_sizes_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["demo", "--backend", "fake", *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_existing_out_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    out.write_text("kept\n")
    result = runner.invoke(app, ["demo", "--backend", "fake", "--limit", "2", "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert out.read_text() == "kept\n"


def _adder(prompt: str) -> str:
    """Writes a correct program when asked for one; answers 0 when asked directly."""
    a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", prompt)[0])
    if "Python program" in prompt:
        return f"```python\nprint({a} + {b})\n```"
    return "The answer is 0."


def test_a_ladder_that_helps_is_reported_above_greedy_and_the_baselines() -> None:
    plan = DemoPlan(limit=6, n=2, program_n=2, backend="fake")
    assert [r.label for r in ladder(plan)] == [
        "greedy",
        "self_consistency@2",
        "program_of_thought",
        "program_of_thought@2",
    ]
    result = run_demo(plan, backend=FakeBackend.scripted(default=_adder))
    rows = {r.label: r for r in result.rows}
    assert rows["greedy"].accuracy == 0 and rows["greedy"].vs_greedy is None
    assert rows["self_consistency@2"].accuracy == 0 and rows["self_consistency@2"].vs_greedy.includes_zero
    for label in ("program_of_thought", "program_of_thought@2"):
        row = rows[label]
        assert row.accuracy == 1 and row.failures == 0
        assert (row.vs_greedy.difference, row.vs_greedy.low, row.vs_greedy.high) == (1.0, 1.0, 1.0)
        assert row.vs_baseline is not None and row.vs_baseline.low > 0
    assert rows["program_of_thought@2"].completion_tokens == 2 * rows["program_of_thought"].completion_tokens
    lines = verdicts(result)
    assert "program_of_thought: above greedy (+1.000 [+1.000, +1.000])." in lines
    assert any(line.startswith("self_consistency@2: not distinguishable from greedy") for line in lines)
    best = result.best_baseline
    assert best is not None and best.name in ("most frequent answer", "always first number")
