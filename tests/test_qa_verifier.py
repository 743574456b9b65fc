"""Short answers and multiple choice: SQuAD normalisation, EM, F1, choice letters, aliases, verifiers."""

from __future__ import annotations

from typing import Any

import pytest

from tts.answers import normalize_answer
from tts.errors import ConfigError
from tts.types import Candidate, Problem
from tts.verifiers.base import Verifier, cost_of
from tts.verifiers.qa import (
    ChoiceVerifier,
    QAVerifier,
    exact_match,
    extract_choice,
    f1_score,
    references_of,
)


def test_normalize_answer_is_squad_style() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # only whole-word articles go


def test_exact_match_with_aliases() -> None:
    assert exact_match("the eiffel tower.", "Eiffel Tower")
    assert exact_match("City of Paris", ["Paris", "city of paris"])
    assert not exact_match("Lyon", ["Paris", "City of Paris"])
    assert not exact_match(None, "Paris")
    with pytest.raises(ConfigError, match="non-empty list"):
        exact_match("Paris", [])


def test_f1_takes_the_best_reference() -> None:
    assert f1_score("the big eiffel tower", "Eiffel Tower") == pytest.approx(0.8)
    assert f1_score("Paris France", ["Lyon", "Paris"]) == pytest.approx(2 / 3)
    assert f1_score("Berlin", "Paris") == 0.0
    assert f1_score("", "") == 1.0
    assert f1_score(None, "Paris") == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(B)", "B"),
        ("Answer: b", "B"),
        ("The correct option is C.", "C"),
        ("The answer is (D) because the others fail.", "D"),
        ("b.", "B"),
        ("**Answer:** C", "C"),
        (r"so the final answer is $\boxed{c}$", "C"),
        ("I think the answer is B", "B"),
        ("A good approach rules out two options, so the answer is C", "C"),
        ("The answer is a bit tricky, but I choose (B)", "B"),
        ("Option A is wrong. The answer is option D.", "D"),
        ("Between A and B, I pick B", "B"),
        ("I would say D is right", "D"),
        ("The answer is E", None),  # not an option
        ("I have no idea", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_extract_choice_other_letters() -> None:
    assert extract_choice("Answer: e", letters="ABCDE") == "E"
    with pytest.raises(ConfigError, match="distinct option letters"):
        extract_choice("A", letters="AA1")


def test_references_of_merges_reference_and_metadata_aliases() -> None:
    p = Problem(
        "q", "Capital of France?", reference="Paris|City of Paris", metadata={"aliases": ["Paris", "Ville de Paris"]}
    )
    assert references_of(p) == ["Paris", "City of Paris", "Ville de Paris"]
    assert references_of(p, separator=None) == ["Paris|City of Paris", "Paris", "Ville de Paris"]
    assert references_of(Problem("q", "?", metadata={"aliases": "Rome"})) == ["Rome"]


async def test_qa_verifier_em_and_f1() -> None:
    p = Problem("q", "Capital of France?", reference="Paris|City of Paris")
    cands = [Candidate("...", "the City of Paris"), Candidate("Lyon", None), Candidate("Paris France", "Paris France")]
    em = await QAVerifier().score(p, cands, None)
    assert [s.value for s in em] == [1.0, 0.0, 0.0]
    assert [s.passed for s in em] == [True, False, False]
    assert "Paris" not in em[1].feedback  # the reference stays hidden by default
    f1 = await QAVerifier("f1", threshold=0.6).score(p, cands, None)
    assert f1[2].value == pytest.approx(2 / 3) and f1[2].passed
    shown = await QAVerifier(reveal_reference=True).score(p, cands[1:2], None)
    assert shown[0].feedback == "expected Paris or City of Paris, got Lyon"


async def test_choice_verifier() -> None:
    p = Problem("q", "Pick one", reference="(B)", metadata={"aliases": ["D"]})
    cands = [
        Candidate("The answer is (B).", None),
        Candidate("...", "d"),
        Candidate("Answer: C", "C"),
        Candidate("no idea", None),
    ]
    scores = await ChoiceVerifier().score(p, cands, None)
    assert [s.passed for s in scores] == [True, True, False, False]
    assert scores[3].feedback == "No answer found."
    with pytest.raises(ConfigError, match="must name one of the letters"):
        await ChoiceVerifier().score(Problem("q", "?", reference="Paris"), cands, None)


async def test_verifiers_need_a_reference() -> None:
    with pytest.raises(ConfigError, match="reference"):
        await QAVerifier().score(Problem("q", "?"), [Candidate("x", "x")], None)


def test_protocol_and_cost() -> None:
    for v in (QAVerifier(), ChoiceVerifier()):
        assert isinstance(v, Verifier)
        assert cost_of(v).kind == "rule" and cost_of(v).calls == 0
    bad_metric: Any = "bleu"  # what a YAML file could hold; the type checker would refuse the literal
    with pytest.raises(ConfigError, match="metric"):
        QAVerifier(bad_metric)
