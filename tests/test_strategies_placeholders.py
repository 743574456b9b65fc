"""Answers that are not answers (issue 11.9): the instruction's placeholder copied as the answer
("The answer is N.") and empty extractions never vote, in every strategy that parses replies."""

from __future__ import annotations

import asyncio

from tts import FakeBackend, Problem, SamplingParams, SelfConsistency, solve
from tts.datasets import BUILTIN_TASKS, GAME24_TASK, GSM8K_TASK
from tts.strategies._select import drop_non_answer, placeholders, task_placeholders
from tts.strategies.greedy import Greedy
from tts.task import Task
from tts.types import Candidate

PROBLEM = Problem("q1", "Tom has 40 apples and buys 2 more. How many apples does he have?", "42")


def test_a_copied_placeholder_never_wins_a_vote() -> None:
    # GSM8K's instruction: "End your reply with 'The answer is N.' where N is a number."
    texts = ["The answer is N.", "So the answer is N.", "The answer is $N$.", "The answer is 42.", "The answer is 42."]
    backend = FakeBackend.scripted(by_prompt={"Tom": texts})
    sc = SelfConsistency(n=5, proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0.7)})
    result = asyncio.run(solve(sc, PROBLEM, backend, task=GSM8K_TASK))
    assert result.answer == "42" and result.correct is True  # before: "N" won with 3 votes to 2
    assert result.meta["votes"] == {"42": 2}
    assert [c.meta.get("not_an_answer") for c in result.candidates[:3]] == ["N", "N", "N"]


def test_greedy_copying_the_placeholder_has_no_answer() -> None:
    backend = FakeBackend.scripted(by_prompt={"Tom": "The answer is N."})
    result = asyncio.run(solve(Greedy(), PROBLEM, backend, task=GSM8K_TASK))
    assert result.answer is None and result.candidates[0].key is None


def test_placeholders_of_the_builtin_instructions() -> None:
    assert task_placeholders(GSM8K_TASK) == {"N"}
    assert task_placeholders(GAME24_TASK) == {"E"}
    assert task_placeholders(Task()) == {"N"}
    assert task_placeholders(BUILTIN_TASKS["add2"]) == {"N"}  # its chain-of-thought template says 'The answer is N.'
    assert task_placeholders(BUILTIN_TASKS["larger"]) == frozenset()
    # the letters of a multiple-choice instruction are answers, not placeholders; its X is one
    assert placeholders("Reply with the letter of the correct option, as 'Answer: X'.") == {"X"}
    assert placeholders("Answer: A, B, C or D.") == frozenset()


def test_empty_and_placeholder_answers_are_dropped_real_ones_kept() -> None:
    marks = frozenset({"N"})
    kept = drop_non_answer(Candidate("The answer is 7.", "7", "7"), marks)
    assert (kept.answer, kept.key) == ("7", "7")
    for answer in ("N", "(N)", " ", ""):
        c = drop_non_answer(Candidate("...", answer, answer.lower()), marks)
        assert c.answer is None and c.key is None and c.meta["not_an_answer"] == answer
    letter = drop_non_answer(Candidate("The answer is B.", "B", "b"), frozenset({"X"}))
    assert letter.answer == "B"
