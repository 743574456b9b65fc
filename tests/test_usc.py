"""Universal self-consistency: n free-text samples, one selection call, the selected answer."""

from __future__ import annotations

import asyncio

import pytest

from tts import FakeBackend, Problem, SamplingParams, Task, solve
from tts.registry import REGISTRY
from tts.strategies.universal_self_consistency import UniversalSelfConsistency, parse_selection

TEXT_TASK = Task(name="summary", instruction="Answer in one sentence.", answer_format="text")
PROBLEM = Problem("why", "Why is the sky blue?")
RESPONSES = [
    "Because of dust in the air.",
    "Rayleigh scattering: short blue wavelengths scatter most.",
    "Blue light is scattered more by air molecules (Rayleigh scattering).",
]


@pytest.mark.parametrize(
    ("reply", "n", "expected"),
    [
        ("The most consistent response is Response 3.", 3, 2),
        ("The most consistent response is response #2 because ...", 3, 1),
        ("After comparing Response 1 with the others, the most consistent is 2.", 3, 1),
        ("Response 2 agrees with Response 3.", 3, 1),
        ("  3. ", 3, 2),
        ("The most consistent response is Response 7; otherwise Response 1.", 3, 0),
        ("Response 0", 3, None),
        ("They all differ.", 3, None),
    ],
)
def test_parse_selection(reply: str, n: int, expected: int | None) -> None:
    assert parse_selection(reply, n) == expected


def backend_for(selection: str) -> FakeBackend:
    # the selection prompt also holds the question, so its key comes first
    return FakeBackend.scripted(by_prompt={"most consistent response": selection, "sky blue": RESPONSES})


def test_the_selected_response_wins_after_one_extra_call() -> None:
    backend = backend_for("The most consistent response is Response 3.")
    result = asyncio.run(solve(UniversalSelfConsistency(n=3), PROBLEM, backend, task=TEXT_TASK))
    assert result.winner == 2 and result.answer == TEXT_TASK.extract(RESPONSES[2])
    assert result.meta["parse_failed"] is False
    assert backend.requests == 2 and backend.completions_generated == 4
    sample, select = (e.request for e in result.trace.events)
    assert sample is not None and sample.params.n == 3
    assert select is not None and select.params.greedy and select.params.n == 1
    prompt = select.messages()[-1]["content"]
    assert prompt.startswith("I have generated the following responses to the question: Why is the sky blue?")
    for i, text in enumerate(RESPONSES, 1):
        assert f"Response {i}: {text}" in prompt
    assert result.trace.events[1].completions[0].prompt_text is not None


def test_an_unparsable_selection_falls_back_to_the_first_response() -> None:
    backend = backend_for("All of them are fine.")
    result = asyncio.run(solve(UniversalSelfConsistency(n=3), PROBLEM, backend, task=TEXT_TASK))
    assert result.winner == 0 and result.answer == TEXT_TASK.extract(RESPONSES[0])
    assert result.meta["parse_failed"] is True and result.meta["selection"] == "All of them are fine."


def test_one_response_needs_no_selection_and_long_responses_are_cut() -> None:
    backend = backend_for("The most consistent response is Response 1.")
    result = asyncio.run(solve(UniversalSelfConsistency(n=1), PROBLEM, backend, task=TEXT_TASK))
    assert result.winner == 0 and backend.requests == 1

    long = "word " * 100
    backend = FakeBackend.scripted(by_prompt={"most consistent response": "Response 2", "sky blue": [long, "Short."]})
    result = asyncio.run(solve(UniversalSelfConsistency(n=2, max_chars=20), PROBLEM, backend, task=TEXT_TASK))
    select = result.trace.events[1].request
    assert select is not None
    assert "Response 1: " + long.strip()[:20] + " ...\n" in select.messages()[-1]["content"]
    assert result.winner == 1


def test_options_and_registry() -> None:
    assert REGISTRY.get("strategy", "universal_self_consistency") is UniversalSelfConsistency
    with pytest.raises(ValueError, match=r"sampling\.temperature must be > 0"):
        UniversalSelfConsistency(n=4, proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0)})


@pytest.fixture(scope="module")
def hf_backend():
    from tts.backends.hf import HFBackend

    return HFBackend(seed=0)


@pytest.mark.hf
def test_usc_on_the_real_backend(hf_backend) -> None:
    strategy = UniversalSelfConsistency(
        n=2,
        proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0.8, max_tokens=16)},
        select_sampling=SamplingParams(temperature=0, max_tokens=16),
    )
    result = asyncio.run(
        solve(strategy, Problem("capital", "What is the capital of France?", "Paris"), hf_backend, task=TEXT_TASK)
    )
    assert result.error is None and result.winner in (0, 1) and len(result.candidates) == 2
    events = result.trace.to_dict()["events"]
    assert len(events) == 2
    assert "What is the capital of France?" in events[0]["rendered_prompt"]
    selection_prompt = events[1]["rendered_prompt"]
    assert "Response 1: " in selection_prompt and "Response 2: " in selection_prompt
    assert result.usage.completion_tokens == sum(c["token_count"] for e in events for c in e["completions"])
