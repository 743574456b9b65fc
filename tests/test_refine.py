"""Refine: generate, verify, revise with the verifier's feedback until it passes or k rounds."""

from __future__ import annotations

import asyncio

import pytest

from tts import FakeBackend, Problem, SamplingParams, Score, solve
from tts.registry import REGISTRY
from tts.strategies.refine import Refine
from tts.verifiers.math import MathVerifier

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def revise_prompts(result) -> list[str]:
    return [e.request.messages()[-1]["content"] for e in result.trace.events if e.kind == "generate"][1:]


def test_revises_with_feedback_until_the_verifier_passes() -> None:
    backend = FakeBackend.scripted(
        by_prompt={"Feedback on that attempt": "6*7 = 42. The answer is 42."}, queue=["6*7 = 41. The answer is 41."]
    )
    result = asyncio.run(solve(Refine(verifier=MathVerifier()), PROBLEM, backend))
    assert result.answer == "42" and result.correct is True
    assert [c.answer for c in result.candidates] == ["41", "42"] and result.winner == 1
    assert [c.meta["round"] for c in result.candidates] == [0, 1]
    assert [s.passed for c in result.candidates for s in c.scores] == [False, True]
    assert result.meta == {"rounds": 1, "passed": True}
    assert backend.requests == 2 and result.usage.verifier_calls == 2
    (revise,) = revise_prompts(result)
    assert "A previous attempt:\n6*7 = 41. The answer is 41." in revise
    assert "Feedback on that attempt: The answer 41 is incorrect." in revise
    assert revise.startswith(PROBLEM.question) and revise.endswith(
        "End your reply with 'The answer is N.' where N is the final answer."
    )
    assert all(e.completions[0].prompt_text for e in result.trace.events if e.kind == "generate")


class Graded:
    """A verifier with graded scores and feedback that names the round, never passing."""

    name = "graded"

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls = 0

    async def score(self, problem, candidates, ctx):
        self.calls += 1
        value = self.values[self.calls - 1]
        return [Score(value=value, passed=False, feedback=f"round {self.calls} scored {value}")]


def test_stops_after_k_rounds_and_picks_last_or_best() -> None:
    replies = ["The answer is 40.", "The answer is 41.", "The answer is 43."]
    for pick, expected in (("last", 2), ("best", 1)):
        backend = FakeBackend.scripted(queue=list(replies))
        verifier = Graded([0.2, 0.9, 0.5])
        result = asyncio.run(solve(Refine(rounds=2, pick=pick, verifier=verifier), PROBLEM, backend))
        assert len(result.candidates) == 3 and verifier.calls == 3 and backend.requests == 3
        assert result.winner == expected and result.meta == {"rounds": 2, "passed": False}
        assert [c.score for c in result.candidates] == [0.2, 0.9, 0.5]
        first, second = revise_prompts(result)
        assert "Feedback on that attempt: round 1 scored 0.2" in first and "The answer is 40." in first
        assert "Feedback on that attempt: round 2 scored 0.9" in second and "The answer is 41." in second


def test_zero_rounds_only_verifies_and_empty_feedback_gets_a_default() -> None:
    class Silent:
        async def score(self, problem, candidates, ctx):
            return [Score(value=0.0, passed=False)]

    backend = FakeBackend.scripted(queue=["The answer is 1.", "The answer is 2."])
    result = asyncio.run(solve(Refine(rounds=0, verifier=Silent()), PROBLEM, backend))
    assert len(result.candidates) == 1 and backend.requests == 1 and result.winner == 0
    result = asyncio.run(
        solve(
            Refine(rounds=1, verifier=Silent()),
            PROBLEM,
            FakeBackend.scripted(queue=["The answer is 1.", "The answer is 2."]),
        )
    )
    assert "gave no details" in revise_prompts(result)[0]


def test_verifier_by_registry_name_and_a_missing_verifier() -> None:
    backend = FakeBackend.scripted(queue=["The answer is 42."])
    strategy = Refine(verifier="math", revise_sampling=SamplingParams(temperature=0.5))
    assert isinstance(strategy.verifier, MathVerifier)
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and backend.requests == 1
    assert REGISTRY.get("strategy", "refine") is Refine
    result = asyncio.run(solve(Refine(), PROBLEM, FakeBackend.scripted(default="The answer is 1.")))
    assert result.error is not None and "needs a verifier" in result.error


@pytest.fixture(scope="module")
def hf_backend():
    from tts.backends.hf import HFBackend

    return HFBackend(seed=0)


@pytest.mark.hf
def test_refine_on_the_real_backend(hf_backend) -> None:
    strategy = Refine(
        rounds=1,
        proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0, max_tokens=24)},
        verifier=MathVerifier(),
    )
    result = asyncio.run(solve(strategy, Problem("add", "What is 2 + 3?", "5"), hf_backend))
    assert result.error is None and 1 <= len(result.candidates) <= 2
    events = [e for e in result.trace.to_dict()["events"] if e["kind"] == "generate"]
    verified = [e for e in result.trace.to_dict()["events"] if e["kind"] == "verify"]
    assert len(events) == len(result.candidates) == len(verified)
    assert result.usage.verifier_calls == len(result.candidates)
    assert "What is 2 + 3?" in events[0]["rendered_prompt"]
    if len(events) == 2:  # the first answer failed: the revision prompt shows it and the feedback
        assert "Feedback on that attempt: " in events[1]["rendered_prompt"]
        assert result.candidates[0].text.strip()[:20] in events[1]["rendered_prompt"]
