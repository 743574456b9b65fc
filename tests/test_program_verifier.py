"""ProgramVerifier (code answers run against unit tests in the sandbox) and Game24Verifier (expressions
checked with ast + Fraction, never executed) on puzzles of the shared Game of 24 file."""

from __future__ import annotations

import itertools
import os
import secrets
from fractions import Fraction
from pathlib import Path

import pytest

from tts.datasets import load_dataset
from tts.errors import ConfigError
from tts.types import Candidate, Problem
from tts.verifiers.base import Verifier, cost_of
from tts.verifiers.program import (
    Game24Verifier,
    ProgramVerifier,
    check_game24,
    extract_code,
    extract_expression,
    game24_numbers,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]


def cand(text: str, answer: str | None = None) -> Candidate:
    return Candidate(text=text, answer=answer)


async def score_one(verifier, problem: Problem, text: str):
    [score] = await verifier.score(problem, [cand(text)])
    return score


# --------------------------------------------------------------------------------------------------
# Code extraction
# --------------------------------------------------------------------------------------------------


def test_extract_code_prefers_the_last_python_block() -> None:
    reply = (
        "First a sketch:\n```\nnot this\n```\nThen:\n```python\ndef f():\n    return 1\n```\n"
        "Final:\n```python\ndef f():\n    return 2\n```\nDone."
    )
    assert extract_code(reply) == "def f():\n    return 2\n"
    assert extract_code("text\n```\nx = 1\n```") == "x = 1\n"
    assert extract_code("print(1)") == "print(1)"  # no fence: the whole answer
    assert extract_code("```py\nx = 1\nprint(x)") == "x = 1\nprint(x)\n"  # cut off at max_tokens


# --------------------------------------------------------------------------------------------------
# ProgramVerifier
# --------------------------------------------------------------------------------------------------


def test_program_verifier_is_a_verifier_with_a_program_cost() -> None:
    verifier = ProgramVerifier(timeout=2.0)
    assert isinstance(verifier, Verifier)
    assert cost_of(verifier).kind == "program" and cost_of(verifier).max_seconds == 2.0
    with pytest.raises(ConfigError, match="max_concurrency must be >= 1"):
        ProgramVerifier(max_concurrency=0)


async def test_unit_tests_pass_and_fail() -> None:
    problem = Problem("add", "Write add(a, b).", metadata={"tests": ADD_TESTS})
    verifier = ProgramVerifier(timeout=3.0)
    good = f"Here is the function:\n```python\n{ADD}```\nIt adds."
    buggy = "```python\ndef add(a, b):\n    return a - b if isinstance(a, int) else a + b\n```"
    scores = await verifier.score(problem, [cand(good), cand(buggy)])
    assert [s.verifier for s in scores] == ["program", "program"]
    assert (scores[0].value, scores[0].passed, scores[0].feedback) == (1.0, True, "all 3 tests passed")
    assert scores[1].value == pytest.approx(1 / 3) and scores[1].passed is False
    assert "1/3 tests passed" in scores[1].feedback
    assert "assert add(1, 2) == 3" in scores[1].feedback and "AssertionError" in scores[1].feedback


async def test_constructor_tests_override_and_a_crashing_solution_fails_every_test() -> None:
    verifier = ProgramVerifier(["assert add(2, 2) == 4"], timeout=3.0)
    problem = Problem("add", "Write add.", metadata={"tests": ["assert False"]})
    assert (await score_one(verifier, problem, ADD)).passed is True
    crashed = await score_one(verifier, problem, "import nonexistent_module_xyz\n" + ADD)
    assert crashed.value == 0.0 and crashed.passed is False
    assert "ModuleNotFoundError" in crashed.feedback and "before any test ran" in crashed.feedback


async def test_humaneval_check_with_entry_point() -> None:
    check = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"
    problem = Problem("he", "Complete add.", metadata={"tests": check, "entry_point": "add"})
    verifier = ProgramVerifier(timeout=3.0)
    assert (await score_one(verifier, problem, ADD)).passed is True
    assert (await score_one(verifier, problem, "def add(a, b):\n    return a * b\n")).passed is False


async def test_exiting_early_or_faking_the_summary_does_not_pass() -> None:
    problem = Problem("add", "Write add.", metadata={"tests": ADD_TESTS})
    verifier = ProgramVerifier(timeout=3.0)
    spoofs = [
        "import os\nos._exit(0)",
        "import sys\nsys.exit(0)",
        "print('\\n' + 'a' * 32 + ' 3')\nimport os\nos._exit(0)",
    ]
    for spoof in spoofs:
        score = await score_one(verifier, problem, spoof)
        assert score.passed is False and score.value == 0.0, spoof


async def test_io_tests_compare_stdout() -> None:
    cases = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": "10"}]
    problem = Problem("sum", "Read two ints, print their sum.", metadata={"io_tests": cases})
    verifier = ProgramVerifier(timeout=3.0)
    right = await score_one(verifier, problem, "a, b = map(int, input().split())\nprint(a + b)   ")
    assert right.passed is True and right.value == 1.0
    wrong = await score_one(verifier, problem, "a, b = map(int, input().split())\nprint(a * b)")
    assert wrong.passed is False and wrong.value == 0.0  # 1*2 != 3 and 5*5 != 10
    assert "expected:\n3" in wrong.feedback and "got:\n2" in wrong.feedback
    with pytest.raises(ConfigError, match="needs 'input' and 'output'"):
        await verifier.score(Problem("x", "q", metadata={"io_tests": [{"in": "1"}]}), [cand("print(1)")])


async def test_without_tests_a_program_passes_when_it_runs_cleanly() -> None:
    verifier = ProgramVerifier(timeout=1.0)
    problem = Problem("pot", "Compute 6*7 with a program.")
    scores = await verifier.score(
        problem,
        [
            cand("```python\nprint(6 * 7)\n```"),
            cand("print(undefined_name)"),
            cand("while True:\n    pass"),
            cand(""),
        ],
    )
    assert [s.passed for s in scores] == [True, False, False, False]
    assert scores[0].feedback == "42"
    assert "NameError" in scores[1].feedback and "exit code 1" in scores[1].feedback
    assert scores[2].feedback.startswith("timed out after 1 s")
    assert scores[3].feedback == "No code found."


# --------------------------------------------------------------------------------------------------
# Game of 24
# --------------------------------------------------------------------------------------------------


def solve24(numbers: list[int]) -> str | None:
    """Brute force: an expression over ``numbers`` equal to 24, or None."""

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == 24 else None
        for i, j in itertools.permutations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            options = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                options.append((a / b, f"({ea} / {eb})"))
            for value, expr in options:
                found = search([*rest, (value, expr)])
                if found:
                    return found
        return None

    return search([(Fraction(n), str(n)) for n in numbers])


@pytest.fixture(scope="module")
def tot_puzzles() -> list[Problem]:
    """Ten puzzles of the Tree-of-Thoughts evaluation range (ranks 901-1000) of the shared file."""
    problems = load_dataset("game24", data_dir=DATA).problems
    chosen = [p for p in problems if 901 <= int(p.id) <= 1000][:10]
    assert len(chosen) == 10
    return chosen


async def test_known_solvable_puzzles_accept_a_solution_and_reject_a_wrong_one(tot_puzzles) -> None:
    verifier = Game24Verifier()
    for problem in tot_puzzles:
        numbers = game24_numbers(problem)
        solution = solve24(numbers)
        assert solution is not None, problem.question
        wrong = solution.replace("+", "-", 1) if "+" in solution else solution.replace("*", "+", 1)
        if check_game24(wrong, numbers)[0]:  # the swap happened to keep 24: change a number's place instead
            wrong = f"{wrong} + 1 - 1"
        scores = await verifier.score(
            problem,
            [
                cand(f"Let me try.\nThe answer is {solution} = 24."),
                cand("", answer=f"{solution} = 24"),
                cand(f"Answer: {wrong} = 24"),
            ],
        )
        assert [s.passed for s in scores] == [True, True, False], (problem.question, solution, wrong)
        assert [s.value for s in scores] == [1.0, 1.0, 0.0]


def test_expressions_must_use_each_number_exactly_once() -> None:
    numbers = [1, 1, 4, 6]
    assert check_game24("4 * 6 * 1 * 1", numbers)[0]
    assert check_game24("(1 + 1) * 6 + 4 * 3", numbers)[0] is False  # 3 is not given
    ok, why = check_game24("(6 + 6) * (1 + 1)", numbers)
    assert not ok and "exactly once" in why  # 6 twice, 4 never
    ok, why = check_game24("4 * 6", numbers)
    assert not ok and "exactly once" in why
    ok, why = check_game24("(4 + 6) * 1 * 1", numbers)
    assert not ok and "not 24" in why
    assert not check_game24("4 / (1 - 1) + 6", numbers)[0]  # division by zero is an error, not 24


def test_non_arithmetic_code_is_rejected_without_running_it() -> None:
    marker = Path(f"/tmp/game24-executed-{secrets.token_hex(4)}")
    hostile = [
        f"__import__('os').system('touch {marker}') or 24",
        f"open('{marker}', 'w').write('x') and 24",
        "(lambda: 24)()",
        "[24][0]",
        "2 ** 3 * 3",
        "24.0",
        "True * 24",
        "x := 24",
        "1" * 500,
    ]
    for expression in hostile:
        ok, why = check_game24(expression, [2, 3, 3, 24])
        assert not ok, expression
        assert "arithmetic" in why or "longer than" in why, why
    assert not marker.exists()


def test_expression_extraction_and_numbers() -> None:
    assert extract_expression("Steps...\nThe answer is (6 - 4) * (1 + 11) = 24.") == "(6 - 4) * (1 + 11)"
    assert extract_expression("Answer: 24 = 4 × 6 × 1 ÷ 1") == "4 * 6 * 1 / 1"
    assert extract_expression("so \\boxed{(1 + 1) \\times 12}") == "(1 + 1) * 12"
    assert extract_expression("") is None
    assert game24_numbers(Problem("p", "Numbers: 4 5 6 10")) == [4, 5, 6, 10]
    assert game24_numbers(Problem("p", "Use them", metadata={"numbers": [1, 2, 3, 4]})) == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="four numbers"):
        game24_numbers(Problem("p", "Numbers: 1 2 3"))


def test_game24_verifier_is_a_free_rule() -> None:
    verifier = Game24Verifier()
    assert isinstance(verifier, Verifier)
    assert cost_of(verifier).kind == "rule" and cost_of(verifier).calls == 0
    assert os.path.exists(DATA / "game24.csv")


FORGERIES = {
    "the caller's frame": (
        "import inspect, os, re, sys\n"
        "for frame in [sys._getframe(i) for i in range(1, 4)] + [f.frame for f in inspect.stack()]:\n"
        "    for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
        "        if isinstance(value, str) and re.fullmatch('[0-9a-f]{32}', value):\n"
        "            print(); print(value, 3); sys.stdout.flush(); os._exit(0)\n"
    ),
    "the harness on disk": (
        "import os, re, sys\n"
        "for path in ['main.py', '/proc/self/fd/0', '/proc/%d/fd/0' % os.getppid(), '../stdin']:\n"
        "    try:\n"
        "        text = open(path).read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    for nonce in re.findall('[0-9a-f]{32}', text):\n"
        "        print(); print(nonce, 3)\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    ),
    "an early normal exit": "import sys\nsys.exit(0)\n",
    "a re-created posix._exit": (
        "import _imp, importlib.machinery\n"
        "_imp.create_builtin(importlib.machinery.ModuleSpec('posix', None))._exit(0)\n"
    ),
    "the parent's memory": ("import os\nwith open('/proc/%d/mem' % os.getppid(), 'rb') as f:\n    pass\nos._exit(0)\n"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_forged_verdicts_do_not_pass(forgery) -> None:
    """10.11: the solution cannot see the harness's nonce nor end its test process as a pass."""
    verifier = ProgramVerifier(ADD_TESTS)
    score = await score_one(verifier, Problem("p", "add"), "```python\n" + FORGERIES[forgery] + ADD + "```")
    assert score.value == 0 and not score.passed, score.feedback
    honest = await score_one(verifier, Problem("p", "add"), "```python\n" + ADD + "```")
    assert honest.value == 1 and honest.passed, honest.feedback
