"""bench/adaptive_engine.py's verdicts, on hand-made runs (no engine): which task qualifies, when
``stop: auto`` is non-inferior (interval or agreement), and the ratios it prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_adaptive_engine", ROOT / "bench" / "adaptive_engine.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


LABELS = {"greedy": "greedy", "fixed": "fixed n=8", "auto": "stop: auto"}


def _runs(problems: list[Any], **spec: tuple[list[int], list[str], float, float]) -> dict[str, Any]:
    """The bench's runs (labels as it prints them) from (correct, answers, wall, engine tokens)."""
    runs = {}
    ids = [p.id for p in problems]
    for name, (correct, answers, wall, tokens) in spec.items():
        runs[LABELS[name]] = {
            "correct": dict(zip(ids, map(float, correct), strict=True)),
            "answers": dict(zip(ids, answers, strict=True)),
            "wall": wall,
            "engine_tokens": tokens,
            "tts_tokens": int(tokens),
            "samples": 0,
        }
    return runs


def _data(count: int) -> tuple[list[Any], Any]:
    from tts.datasets import load_dataset

    data = load_dataset(f"add1:{count}", seed=0)
    return data.problems, data.task


def test_fixed_must_beat_greedy_and_the_best_baseline() -> None:
    bench = _bench()
    problems, task = _data(100)
    answers = [p.reference for p in problems]
    fixed = [1] * 80 + [0] * 20
    level = _runs(problems, greedy=(fixed, answers, 1.0, 100.0), fixed=(fixed, answers, 8.0, 800.0))
    _, f = bench.summarize({"problems": problems, "task": task, "runs": level})
    assert f["fixed_vs_greedy_lo"] == 0.0  # the same answers: no gain, no qualification
    better = _runs(problems, greedy=([0] * 50 + [1] * 50, answers, 1.0, 100.0), fixed=(fixed, answers, 8.0, 800.0))
    _, f = bench.summarize({"problems": problems, "task": task, "runs": better})
    assert f["fixed_vs_greedy_lo"] > 0 and f["fixed_vs_baseline_lo"] > 0
    assert "noninferior" not in f  # no adaptive run before the choice


def test_noninferior_by_interval_or_by_agreement_and_the_ratios() -> None:
    bench = _bench()
    problems, task = _data(200)
    right = [p.reference for p in problems]
    fixed = [1] * 100 + [0] * 100
    base = {"greedy": ([0] * 200, ["0"] * 200, 1.0, 100.0), "fixed": (fixed, right, 10.0, 1000.0)}
    # adaptive loses 10 of fixed's right answers (another answer each): the interval's lower bound
    # is below -0.03 and agreement is 0.95, exactly the bar
    lost = [0] * 10 + [1] * 90 + [0] * 100
    lost_answers = ["x"] * 10 + right[10:]
    runs = _runs(problems, **base, auto=(lost, lost_answers, 7.0, 550.0))
    lines, f = bench.summarize({"problems": problems, "task": task, "runs": runs})
    assert f["noninferior"] == 1.0 and f["wall_ratio"] == 0.7 and f["token_ratio"] == 0.55
    assert any(line.startswith("auto - fixed: -0.050") and "agreement_with_fixed=0.950" in line for line in lines)
    # one more lost answer: agreement 0.945 and the lower bound below -0.03: inferior
    worse = _runs(problems, **base, auto=([0] * 11 + [1] * 89 + [0] * 100, ["x"] * 11 + right[11:], 7.0, 550.0))
    _, f = bench.summarize({"problems": problems, "task": task, "runs": worse})
    assert f["noninferior"] == 0.0
