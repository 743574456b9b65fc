"""Tasks: one template engine (``\\boxed{}`` and unknown braces are text), and every built-in task's
references right with a correct free-form reply scored correct (and a wrong one wrong)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tts.datasets import BUILTIN_TASKS, _capital_pairs, load_dataset
from tts.task import Task
from tts.types import Candidate
from tts.verifiers.program import Game24Verifier

# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def test_render_keeps_latex_and_unknown_braces_as_text() -> None:
    task = Task(
        instruction="Put the final answer in \\boxed{}.",
        direct_template="Solve: {question} Write \\boxed{} or {unknown}. {instruction}",
    )
    assert task.render("1 + {x}", "direct") == (
        "Solve: 1 + {x} Write \\boxed{} or {unknown}. Put the final answer in \\boxed{}."
    )
    literal = "Q: {question}\nAnswer in \\boxed{} (e.g. $\\frac{1}{2}$). {0} {}"
    assert task.render("2 + 2", literal) == "Q: 2 + 2\nAnswer in \\boxed{} (e.g. $\\frac{1}{2}$). {0} {}"
    assert Task().render("Q?", "cot") == "Q?\nLet's think step by step. " + Task().instruction


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_builtin_task_prompts_render(name: str) -> None:
    task = BUILTIN_TASKS[name]
    for style in ("direct", "cot"):
        prompt = task.render("What is 2 + 2?", style)
        assert prompt.startswith("What is 2 + 2?") and "{" not in prompt


# --------------------------------------------------------------------------------------------------
# Built-in generated tasks: references and free-form replies
# --------------------------------------------------------------------------------------------------


def scored(task: Task, reply: str, reference: str | None) -> bool:
    return task.equivalent(task.extract(reply), reference)


def test_larger() -> None:
    data = load_dataset("larger:50:1")
    assert set(BUILTIN_TASKS) >= {"larger"} and data.task is BUILTIN_TASKS["larger"]
    for p in data:
        a, b = p.metadata["a"], p.metadata["b"]
        assert p.question == f"Which number is larger, {a} or {b}?" and p.reference == str(max(a, b))
        big, small = max(a, b), min(a, b)
        for reply in (f"{big}", f"{big}.", f"The larger number is {big}.", f"{big} is larger than {small}."):
            assert scored(data.task, reply, p.reference), reply
        assert not scored(data.task, f"{small} is larger.", p.reference)


@pytest.mark.parametrize("name", ["add1", "add2"])
def test_addition(name: str) -> None:
    data = load_dataset(f"{name}:50:2")
    lo, hi = (1, 9) if name == "add1" else (10, 99)
    for p in data:
        a, b = p.metadata["a"], p.metadata["b"]
        assert lo <= a <= hi and lo <= b <= hi
        assert p.question == f"What is {a} + {b}?" and p.reference == str(a + b)
        for reply in (
            f"{a + b}",
            f"{a} + {b} = {a + b}",
            f"{a} plus {b} is {a + b}.",
            f"First add the ones. {a} + {b} = {a + b}. The answer is {a + b}.",
        ):
            assert scored(data.task, reply, p.reference), reply
        assert not scored(data.task, f"{a} + {b} = {a + b + 1}", p.reference)


def test_capitals_questions_and_references_are_whole_names() -> None:
    pairs = _capital_pairs()
    countries = [c for c, _ in pairs]
    assert len(pairs) == len(set(countries)) > 90
    assert ("India", "New Delhi") in pairs and ("New Zealand", "Wellington") in pairs
    assert all(re.fullmatch(r"[A-Z][A-Za-z ]+", c) for c in countries)
    data = load_dataset("capitals")
    assert len(data) == len(pairs)
    for p in data:
        country = re.fullmatch(r"What is the capital of ([A-Za-z ]+)\?", p.question)
        assert country is not None and country.group(1) in countries, p.question
        assert p.reference == dict(pairs)[country.group(1)]


def test_capitals_free_form_replies() -> None:
    data = load_dataset("capitals")
    task = data.task
    for p in data:
        assert p.reference is not None
        country = p.question.removeprefix("What is the capital of ").removesuffix("?")
        city = p.reference.split("|")[0]
        for reply in (
            city,
            f"{city}.",
            f"The capital of {country} is {city}.",
            f"{city} is the capital of {country}.",
            f"The answer is {city}.",
            f"It is {city}.",
        ):
            assert scored(task, reply, p.reference), (reply, p.reference)
        assert not scored(task, f"The capital of {country} is Atlantis.", p.reference)
    by_country = {p.question: p.reference for p in data}
    assert scored(task, "Kiev", by_country["What is the capital of Ukraine?"])  # accepted alternatives
    assert scored(task, "Brasília", by_country["What is the capital of Brazil?"])  # accents folded


# --------------------------------------------------------------------------------------------------
# Benchmark tasks: references read from solutions
# --------------------------------------------------------------------------------------------------


def test_benchmark_tasks(tmp_path: Path) -> None:
    gsm = tmp_path / "gsm8k_test.jsonl"
    gsm.write_text(json.dumps({"question": "How many?", "answer": "2 * 617 = <<2*617=1234>>1234\n#### 1,234"}) + "\n")
    math = tmp_path / "math500_dev.jsonl"
    math.write_text(json.dumps({"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}) + "\n")
    (tmp_path / "game24.csv").write_text("Rank,Puzzles\n1,4 6 1 11\n")

    [g] = load_dataset("gsm8k", data_dir=tmp_path)
    task = load_dataset("gsm8k", data_dir=tmp_path).task
    assert g.reference == "1234"
    assert scored(task, "617 + 617 = 1,234 apples. The answer is 1,234.", g.reference)
    assert not scored(task, "The answer is 1,243.", g.reference)

    data = load_dataset("math500", data_dir=tmp_path)
    [m] = data
    assert m.reference == "\\frac{1}{2}"
    assert "\\boxed{}" in data.task.render(m.question, "direct")
    assert scored(data.task, "So the result is $\\boxed{0.5}$.", m.reference)
    assert scored(data.task, "The answer is 1/2.", m.reference)

    hub_like = tmp_path / "hub_rows.jsonl"  # the hub's MATH-500 rows: a solution and a bare final answer
    solution = "$r = 3$, so the point is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$."
    hub_like.write_text(
        json.dumps({"problem": "Convert (0,3).", "solution": solution, "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"})
        + "\n"
    )
    [h] = load_dataset(str(hub_like), format="math500")
    assert h.reference == "\\left( 3, \\frac{\\pi}{2} \\right)" and h.metadata["solution"] == solution
    assert scored(data.task, "The point is $(3, \\frac{\\pi}{2})$. The answer is (3,\\frac{\\pi}{2}).", h.reference)

    data = load_dataset("game24", data_dir=tmp_path)
    [q] = data
    assert q.reference is None and q.question == "Numbers: 4 6 1 11"
    reply = "(6 - 4) * (1 + 11) = 24. The answer is (6 - 4) * (1 + 11)."
    answer = data.task.extract(reply)
    assert answer == "(6 - 4) * (1 + 11)"


async def test_game24_reply_scored_by_its_verifier(tmp_path: Path) -> None:
    (tmp_path / "game24.csv").write_text("Rank,Puzzles\n1,4 6 1 11\n")
    data = load_dataset("game24", data_dir=tmp_path)
    [q] = data
    good, bad = "The answer is (6 - 4) * (1 + 11).", "The answer is 4 * 6 * 1 * 11."
    scores = await Game24Verifier().score(q, [Candidate(r, data.task.extract(r)) for r in (good, bad)])
    assert [s.passed for s in scores] == [True, False]
