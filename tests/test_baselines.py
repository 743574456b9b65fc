"""Trivial baselines: computed on the actual problems, exact on small hand-made sets."""

from __future__ import annotations

import pytest

from tts.baselines import baseline_accuracies, baselines, options
from tts.datasets import BUILTIN_TASKS, load_dataset
from tts.task import Task
from tts.types import Problem

LARGER = BUILTIN_TASKS["larger"]


def larger(i: int, a: int, b: int) -> Problem:
    return Problem(f"l{i}", f"Which number is larger, {a} or {b}?", str(max(a, b)))


def test_larger_baselines_are_exact_on_four_problems() -> None:
    problems = [larger(0, 55, 31), larger(1, 70, 18), larger(2, 90, 40), larger(3, 12, 40)]
    assert options(problems[0], LARGER) == ["55", "31"]
    assert baseline_accuracies(problems, LARGER) == [
        ("chance", 0.5),  # one of two numbers at random
        ("most frequent answer", 0.25),  # 55, 70, 90, 40 once each: the first (55) is kept
        ("always first", 0.75),  # the first number is the larger in three of four
    ]
    frequent = [larger(0, 40, 31), larger(1, 70, 18), larger(2, 12, 40), larger(3, 40, 11)]
    assert dict(baseline_accuracies(frequent, LARGER))["most frequent answer"] == 0.75


def test_baselines_follow_the_problems_not_a_constant() -> None:
    ds = load_dataset("larger", limit=100, seed=0)
    acc = dict(baseline_accuracies(ds.problems, ds.task))
    # the figures of issue 10.10: "the first number" 0.49 on those 100 problems, chance 0.50
    assert acc == {"chance": 0.5, "most frequent answer": 0.04, "always first": 0.49}
    scores = baselines(ds.problems, ds.task)[2].scores
    assert len(scores) == 100 and sum(scores) == 49


def test_free_form_numeric_tasks_get_most_frequent_and_first_number() -> None:
    task = BUILTIN_TASKS["add2"]
    problems = [
        Problem("a", "What is 12 + 30?", "42"),
        Problem("b", "What is 40 + 2?", "42"),
        Problem("c", "What is 0 + 7?", "7"),
        Problem("d", "What is 11 + 1?", "12"),
    ]
    assert baseline_accuracies(problems, task) == [("most frequent answer", 0.5), ("always first number", 0.0)]
    zero_first = [*problems[:3], Problem("d", "What is 9 + 0?", "9")]
    assert dict(baseline_accuracies(zero_first, task))["always first number"] == 0.25


def test_multiple_choice_chance_is_one_over_k() -> None:
    task = Task(name="mcq", answer_format="text")
    problems = [
        Problem("a", "Pick one.", "B", {"choices": ["red", "green", "blue"]}),
        Problem("b", "Pick one.", "A", {"choices": ["one", "two", "three"]}),
        Problem("c", "Pick one.", "green", {"options": ["red", "green", "blue", "black"]}),
    ]
    found = {b.name: b for b in baselines(problems, task)}
    assert found["chance"].scores == pytest.approx((1 / 3, 1 / 3, 1 / 4))
    assert found["always first"].scores == (0.0, 1.0, 0.0)
    assert found["most frequent answer"].accuracy == pytest.approx(1 / 3)


def test_text_tasks_and_unscored_problems() -> None:
    task = BUILTIN_TASKS["capitals"]
    problems = [Problem("a", "What is the capital of France?", "Paris"), Problem("b", "Capital of Peru?", "Lima")]
    assert baseline_accuracies(problems, task) == [("most frequent answer", 0.5)]
    assert baselines([Problem("x", "What is 1 + 1?")], BUILTIN_TASKS["add1"]) == []
