"""Math answers: extraction, canonical keys, equivalence (with its time limit off the main thread), the
MathVerifier, and proof runs on MATH-500 and GSM8K solutions."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tts.answers import (
    canonical,
    extract_answer,
    extract_boxed,
    first_number,
    gsm8k_reference,
    last_number,
    math_reference,
)
from tts.errors import ConfigError
from tts.types import Candidate, Problem
from tts.verifiers import _worker
from tts.verifiers.base import Verifier, VerifierCost, cost_of
from tts.verifiers.math import MathVerifier, equivalent

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is missing (CI has it)")


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{\sqrt{2}}}$.", r"\frac{1}{\sqrt{2}}"),
        (r"first \boxed{3}, finally \boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
        (r"\fbox{x^{2}}", "x^{2}"),
        (r"\boxed{4} then a cut-off \boxed{\frac{1", "4"),  # an unbalanced last box is skipped
        (r"hence \boxed 5.", "5"),
        ("no box here", None),
    ],
)
def test_extract_boxed_nested_and_last(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The total is \boxed{1,234}.", "1234"),
        (r"\boxed{18 \text{ dollars}}", "18"),
        (r"\boxed{\dfrac{3}{4}}", r"\dfrac{3}{4}"),
        ("Janet makes 9 * 2 = $18 a day.\n#### 18", "18"),
        ("#### 1,600", "1600"),
        ("So the answer is $1,234.00.", "1234"),
        ("The answer is 18 dollars.", "18"),
        ("The answer is: \\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("**Final Answer:** 42", "42"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is 5, since 2 + 3 = 5.", "5"),
        ("She grows 5 + 3 = 8 new limbs after 15 days.", "8"),  # the result of the final equation
        ("It took 3 days, then 4 more days", "4"),
        ("Temperatures fell to -5", "-5"),
        ("", None),
        ("no numbers at all", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_numbers_signs_separators_units() -> None:
    assert last_number("He paid $1,234.50 for 3 items") == "3"
    assert first_number("He paid $1,234.50 for 3 items") == "1234.5"
    assert last_number("10-4") == "4"  # a minus, not a sign
    assert last_number("10 - 4") == "4"
    assert last_number("x = -4") == "-4"
    assert last_number("x-4") == "4"
    assert last_number("costs 0.50") == "0.5"
    assert last_number("nothing") is None


def test_dataset_references() -> None:
    assert gsm8k_reference("9 * 2 = <<9*2=18>>18\n#### 1,018") == "1018"
    assert math_reference(r"so $\boxed{x=5}$.The answer is: x=5") == "x=5"
    assert math_reference(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    with pytest.raises(ConfigError, match="####"):
        gsm8k_reference("no marker")
    with pytest.raises(ConfigError, match="boxed"):
        math_reference("no answer")


# --------------------------------------------------------------------------------------------------
# Canonical keys
# --------------------------------------------------------------------------------------------------

SAME_KEY = [
    ("1,000", "1000"),
    ("1000.00", "1000"),
    (r"10,\!080", "10080"),
    ("1{,}234", "1234"),
    (r"\$18.00", "18"),
    (r"\dfrac{1}{2}", "1/2"),
    (r"\tfrac12", "0.5"),
    (".5", r"\frac{1}{2}"),
    (r"-\frac{3}{4}", r"\frac{-3}{4}"),
    (r"50\%", "50"),
    (r"90^\circ", "90"),
    (r"90^{\circ}", "90"),
    (r"5\text{ cm}", "5"),
    (r"20 \mbox{ cm}^2", "20"),
    ("18 dollars", "18"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"\{2, 1, 3\}", r"\{1,2,3\}"),
    (r"\left[ 1, 2 \right)", "[1,2)"),
    ("1, -2", "-2,1"),
    ("x = 5", "5"),
    (r"\text{Evelyn}", "evelyn"),
    (r"\text{(C)}", "C"),
    (r"\frac{\sqrt3}{2}", r"\frac{\sqrt{3}}{2}"),
    (r"$\boxed{7}$", "7"),
    (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}-1\\2\end{pmatrix}"),
]

DIFFERENT_KEY = [("(1,2)", "(2,1)"), ("[1,2)", "(1,2)"), ("1/2", "1/3"), ("2", "-2"), ("x^2", "x^3")]


@pytest.mark.parametrize(("a", "b"), SAME_KEY)
def test_canonical_shares_keys(a: str, b: str) -> None:
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_KEY)
def test_canonical_keeps_different_answers_apart(a: str, b: str) -> None:
    assert canonical(a) != canonical(b)


def test_canonical_none_and_speed() -> None:
    assert canonical(None) == ""
    answers = [a for pair in SAME_KEY for a in pair] * 40
    start = time.perf_counter()
    for a in answers:
        canonical(a)
    per_call = (time.perf_counter() - start) / len(answers)
    assert per_call < 5e-4, f"canonical takes {per_call * 1e6:.0f} us per call; it must stay string-only"


# --------------------------------------------------------------------------------------------------
# Equivalence
# --------------------------------------------------------------------------------------------------

EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    ("1/3", "0.333333"),  # math-verify's 6-digit rounding
    (r"50\%", "0.5"),
    (r"90^\circ", "90"),
    ("[1,2)", "[1, 2)"),
    (r"(-\infty, 3]", r"\left(-\infty,3\right]"),
    (r"\{1,2,3\}", r"\{3,2,1\}"),
    ("(1, 2, 3)", r"\left(1,2,3\right)"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\frac{\pi}{2}", r"\pi/2"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\frac{14}{3}", r"4\frac{2}{3}"),
    ("-2 + 7i", "7i-2"),
    (r"\cot x", r"\frac{\cos x}{\sin x}"),
]
NOT_EQUIVALENT = [
    ("1/3", "0.33"),
    ("50", "0.5"),
    ("[1,2)", "(1,2)"),
    ("(1,2)", "(2,1)"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}"),
    (r"\sqrt{8}", "3"),
    (r"\text{Evelyn}", r"\text{Devon}"),
    ("Evelyn", "Levyne"),  # as symbols, both are the same product of letters
    ("2", "2.0000001"),
    ("x^2", "x^3"),
]


def test_equivalent_pairs() -> None:
    with ThreadPoolExecutor(2) as pool:
        # a generous limit: this checks judgements, not speed, and CI machines can be loaded
        yes = list(pool.map(lambda p: equivalent(*p, timeout=15.0), EQUIVALENT))
        no = list(pool.map(lambda p: equivalent(*p, timeout=15.0), NOT_EQUIVALENT))
    assert [p for p, ok in zip(EQUIVALENT, yes, strict=True) if not ok] == []
    assert [p for p, ok in zip(NOT_EQUIVALENT, no, strict=True) if ok] == []


def test_equivalent_missing_and_bad_timeout() -> None:
    assert not equivalent(None, "1")
    assert not equivalent("", "")
    with pytest.raises(ConfigError, match="timeout"):
        equivalent("x", "y", timeout=0)


def _timed_in_thread(fn, *args: object) -> tuple[object, float]:
    box: dict[str, object] = {}

    def run() -> None:
        start = time.perf_counter()
        box["result"] = fn(*args)
        box["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the comparison hung"
    return box["result"], float(box["elapsed"])  # type: ignore[arg-type]


def test_timeout_holds_off_the_main_thread() -> None:
    """A power tower that would keep sympy busy for ages returns False within the limit, called
    from a non-main thread (where math-verify's own SIGALRM limit cannot work)."""
    assert equivalent("x+x", "2x")  # warm a worker, so start-up is not timed
    result, elapsed = _timed_in_thread(equivalent, "9^{9^{9^{9}}}", "9^{9^{9^{8}}}+1", 1.0)
    assert result is False
    assert elapsed < 2.5, f"took {elapsed:.1f}s with a 1s limit"
    assert equivalent("y+y", "2y")  # the pool still answers afterwards


def test_hard_kill_when_the_worker_ignores_its_soft_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the child's soft timer (as when sympy is stuck in C code) the parent kills the worker
    at the deadline, answers "timeout" and replaces the worker for the next call."""
    pool = _worker.SymbolicPool(workers=1)
    try:
        assert pool.compare("1", "1", 5.0) == "equal"  # start-up done
        monkeypatch.setattr(_worker, "_SOFT_FRACTION", 100.0)  # the child would stop far too late
        verdict, elapsed = _timed_in_thread(pool.compare, "10^{10^{10^{10}}}", "1", 1.0)
        assert verdict == "timeout"
        assert elapsed < 2.5, f"took {elapsed:.1f}s with a 1s limit"
        monkeypatch.undo()
        assert pool.compare(r"\frac{1}{2}", "0.5", 30.0) == "equal"  # a fresh worker answers
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------------
# MathVerifier
# --------------------------------------------------------------------------------------------------


async def test_math_verifier_scores_and_feedback() -> None:
    problem = Problem("p1", "What is 1/2 + 1/4?", reference=r"\frac{3}{4}")
    candidates = [
        Candidate(text="... so 0.75", answer="0.75"),
        Candidate(text=r"It is $\boxed{\dfrac{3}{4}}$.", answer=None),  # re-extracted from the text
        Candidate(text="The answer is 1/2.", answer="1/2"),
        Candidate(text="I am not sure.", answer=None),
    ]
    verifier = MathVerifier()
    scores = await verifier.score(problem, candidates, None)
    assert [s.value for s in scores] == [1.0, 1.0, 0.0, 0.0]
    assert [s.passed for s in scores] == [True, True, False, False]
    assert all(s.verifier == "math" for s in scores)
    assert "3}{4}" not in scores[2].feedback and "incorrect" in scores[2].feedback
    assert "No final answer" in scores[3].feedback

    revealed = await MathVerifier(reveal_reference=True).score(problem, candidates[2:3], None)
    assert revealed[0].feedback == r"expected \frac{3}{4}, got 1/2"


async def test_math_verifier_reference_forms_and_errors() -> None:
    gsm = Problem("g", "q", reference="2 + 2 = <<2+2=4>>4\n#### 4")  # a whole solution as reference
    assert [s.passed for s in await MathVerifier().score(gsm, [Candidate("4", "4")], None)] == [True]
    with pytest.raises(ConfigError, match="reference"):
        await MathVerifier().score(Problem("x", "q"), [Candidate("1", "1")], None)
    with pytest.raises(ConfigError, match="timeout"):
        MathVerifier(timeout=-1)


def test_math_verifier_protocol_and_cost() -> None:
    v = MathVerifier(timeout=3.0)
    assert isinstance(v, Verifier)
    assert cost_of(v) == VerifierCost(kind="symbolic", calls=0, max_seconds=3.0)
    assert cost_of(object()).calls == 1  # undeclared cost is never counted as free


# --------------------------------------------------------------------------------------------------
# Proof runs on dataset solutions
# --------------------------------------------------------------------------------------------------


def _read_jsonl(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _shuffled_pairs(extracted: list[str | None], refs: list[str], rounds: int) -> list[tuple[str, str | None]]:
    """(reference of j, answer extracted from i) for random i != j whose reference strings differ."""
    rng = random.Random(1234)
    pairs = []
    for _ in range(rounds):
        order = list(range(len(refs)))
        rng.shuffle(order)
        pairs += [(refs[j], extracted[i]) for i, j in enumerate(order) if refs[i] != refs[j]]
    return pairs


def _rates(extracted: list[str | None], refs: list[str], rounds: int) -> tuple[list[bool], float, int, int]:
    pairs = _shuffled_pairs(extracted, refs, rounds)
    with ThreadPoolExecutor(2) as pool:  # two threads keep both symbolic workers busy
        agree = list(pool.map(lambda p: equivalent(*p), zip(refs, extracted, strict=True)))
        false_pos = sum(pool.map(lambda p: equivalent(*p), pairs))
    return agree, sum(agree) / len(agree), false_pos, len(pairs)


def _check_agreement(name: str, extracted: list[str | None], refs: list[str]) -> None:
    """At least 98% of extracted answers equivalent to their reference; at most 1% of shuffled
    pairs with different references judged equivalent."""
    agree, rate, false_pos, n_pairs = _rates(extracted, refs, rounds=2)
    failures = [(i, extracted[i], refs[i]) for i, ok in enumerate(agree) if not ok]
    print(
        f"\n{name}: {rate:.2%} equivalent ({len(refs)} problems); "
        f"shuffled false positives {false_pos}/{n_pairs} = {false_pos / n_pairs:.2%}"
    )
    for i, got, want in failures:
        print(f"  {name} #{i}: extracted {got!r}, expected {want!r}")
    assert rate >= 0.98, f"only {rate:.2%} judged equivalent; failures: {failures}"
    assert false_pos / n_pairs <= 0.01, f"{false_pos}/{n_pairs} different answers judged equivalent"


@needs_data
def test_math500_extraction_and_equivalence() -> None:
    """Each MATH-500 solution, minus its trailing "The answer is: X", must yield an answer judged
    equivalent to X (>= 98%); answers paired with a different problem's X must not (<= 1%)."""
    rows = _read_jsonl("math500_dev.jsonl")
    refs, extracted = [], []
    for row in rows:
        solution = row["answer"]
        cut = solution.rfind("The answer is:")
        assert cut > 0, "every MATH-500 solution here ends with 'The answer is: X'"
        refs.append(solution[cut + len("The answer is:") :].strip())
        extracted.append(extract_answer(solution[:cut]))
    _check_agreement("MATH-500", extracted, refs)


@needs_data
def test_gsm8k_extraction_and_equivalence() -> None:
    """Each GSM8K solution without its "#### n" line must end on a number equivalent to n (>= 98%);
    shuffled pairs with different n must not match (<= 1%)."""
    rows = _read_jsonl("gsm8k_test.jsonl")
    refs = [gsm8k_reference(row["answer"]) for row in rows]
    extracted = [extract_answer(row["answer"].rsplit("####", 1)[0]) for row in rows]
    _check_agreement("GSM8K", extracted, refs)


@needs_data
def test_math500_answers_keep_their_key_when_respelled() -> None:
    """Usual re-spellings of every MATH-500 answer share its canonical key (no sympy needed)."""
    refs = [math_reference(row["answer"]) for row in _read_jsonl("math500_dev.jsonl")]

    def respellings(x: str) -> list[str | None]:
        return [
            f"${x}$",
            x.replace(r"\frac", r"\dfrac"),
            x.replace(" ", ""),
            x.replace(",", ", "),
            x.replace("(", r"\left(").replace(")", r"\right)"),
            extract_answer(rf"So the final result is $\boxed{{{x}}}$."),
            extract_answer(f"The answer is ${x}$."),
        ]

    misses = [(x, v) for x in refs for v in respellings(x) if canonical(v) != canonical(x)]
    assert misses == []
