"""Reasoning models: think sections parsed apart from answers, the thinking budget (cut and forced
answer) and budget forcing (``Wait`` extensions), with the tokens each costs.

The fake backend counts a reply's words as its tokens, so every count below is the sum of the
scripted segments' words.
"""

from __future__ import annotations

import asyncio

import pytest

from tts import FakeBackend, Problem, SamplingParams, solve
from tts.context import Context
from tts.registry import REGISTRY
from tts.scheduler import Scheduler
from tts.strategies.thinking import Thinking, parse_thinking, split_thinking
from tts.types import Completion

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def words(text: str) -> int:
    return len(text.split())


def test_split_thinking_forms() -> None:
    assert split_thinking("<think>6*7=42, not 41</think>\nThe answer is 42.") == ("6*7=42, not 41", "The answer is 42.")
    # the chat template opened the section: only the closing tag is in the text
    assert split_thinking("6*7 is 42\n</think> The answer is 42.") == ("6*7 is 42", "The answer is 42.")
    # cut inside the section: all reasoning, no answer
    assert split_thinking("<think>6*7 is 4") == ("6*7 is 4", "")
    assert split_thinking("The answer is 42.") == (None, "The answer is 42.")
    # a server's separate reasoning content wins over the text
    assert split_thinking("The answer is 42.", "server reasoning") == ("server reasoning", "The answer is 42.")


def test_answers_come_from_the_answer_part_only() -> None:
    ctx = Context(Scheduler(FakeBackend()), problem=PROBLEM)
    cand = parse_thinking(ctx, Completion("<think>Maybe 41? No: 42.</think>I am not sure.", 9))
    assert cand.answer is None and cand.meta["reasoning"] == "Maybe 41? No: 42."
    cand = parse_thinking(ctx, Completion("The answer is 42.", 4, reasoning="41 or 42"))
    assert cand.answer == "42" and cand.meta["reasoning"] == "41 or 42" and cand.text == "The answer is 42."


def test_without_a_budget_one_call_is_split() -> None:
    reply = "<think>6 * 7 = 42. Could it be 41? No.</think>The answer is 42."
    backend = FakeBackend.scripted(default=reply)
    result = asyncio.run(solve(Thinking(), PROBLEM, backend))
    assert result.answer == "42"
    assert result.candidates[0].meta["reasoning"] == "6 * 7 = 42. Could it be 41? No."
    assert backend.requests == 1 and result.usage.completion_tokens == words(reply)


def test_budget_cuts_reasoning_and_forces_the_answer() -> None:
    reasoning = "first I multiply six by seven which gives forty two so"  # 11 words, budget 6
    backend = FakeBackend.scripted(queue=[reasoning, " 42."])
    strategy = Thinking(
        proposer={"name": "thinking", "max_think": 6, "sampling": SamplingParams(temperature=0, max_tokens=20)}
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.correct is True
    cand = result.candidates[0]
    assert cand.meta["budget_cut"] is True and cand.meta["reasoning_tokens"] == 6 and cand.meta["waits"] == 0
    assert cand.meta["reasoning"] == "first I multiply six by seven"
    first, second = (e.request for e in result.trace.events)
    assert first is not None and second is not None
    assert first.params.max_tokens == 6 and first.params.stop == ("</think>",)
    assert first.assistant_prefix == "<think>\n"
    assert second.assistant_prefix == "<think>\nfirst I multiply six by seven\n</think>\nThe answer is"
    assert second.params.max_tokens == 20
    # tokens: the 6 budgeted reasoning tokens plus the 1-word answer, counted once each
    assert result.usage.completion_tokens == 6 + 1 == backend.completion_tokens
    assert result.usage.calls == backend.requests == 2
    assert all(e.completions[0].prompt_text for e in result.trace.events)


def test_reasoning_that_ends_early_is_extended_with_wait() -> None:
    segments = ["Six sevens are 42.", "Check: 7+7+7+7+7+7 = 42 indeed.", "42 again."]
    backend = FakeBackend.scripted(by_prompt={"</think>": "42."}, queue=segments)
    strategy = Thinking(
        proposer={
            "name": "thinking",
            "min_think": 8,
            "max_waits": 3,
            "sampling": SamplingParams(temperature=0, max_tokens=50),
        }
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    cand = result.candidates[0]
    assert result.answer == "42"
    # 4 words < 8: one "Wait"; then 4 + 5 = 9 >= 8: the answer (the third segment is never asked for)
    assert cand.meta["waits"] == 1
    assert cand.meta["reasoning_tokens"] == words(segments[0]) + words(segments[1])
    requests = [e.request for e in result.trace.events]
    assert len(requests) == 3 and backend.requests == 3
    assert requests[1] is not None and requests[1].assistant_prefix == "<think>\nSix sevens are 42.\nWait"
    assert requests[2] is not None and requests[2].assistant_prefix.endswith(
        "Wait" + segments[1] + "\n</think>\nThe answer is"
    )
    assert result.usage.completion_tokens == words(segments[0]) + words(segments[1]) + 1
    assert backend.model.queue == segments[2:]  # type: ignore[attr-defined]


def test_wait_extensions_stop_after_k_and_the_budget_still_caps() -> None:
    backend = FakeBackend.scripted(queue=["Hmm.", "Hmm.", "Hmm.", "Hmm.", "42."])
    strategy = Thinking(
        proposer={
            "name": "thinking",
            "min_think": 100,
            "max_think": 200,
            "max_waits": 2,
            "sampling": SamplingParams(temperature=0, max_tokens=50),
        }
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    cand = result.candidates[0]
    assert cand.meta["waits"] == 2 and cand.meta["budget_cut"] is False
    assert backend.requests == 4  # three reasoning segments (two extensions) and the answer
    assert result.usage.completion_tokens == 3 + 1
    assert [e.request.params.max_tokens for e in result.trace.events if e.request] == [200, 199, 198, 50]

    # a budget reached during an extension cuts it and forces the answer
    backend = FakeBackend.scripted(queue=["Hmm.", "a b c d e f g h", "42."])
    strategy = Thinking(
        proposer={
            "name": "thinking",
            "min_think": 5,
            "max_think": 5,
            "max_waits": 3,
            "sampling": SamplingParams(temperature=0, max_tokens=9),
        }
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    cand = result.candidates[0]
    assert cand.meta["budget_cut"] is True and cand.meta["waits"] == 1 and cand.meta["reasoning_tokens"] == 5
    assert result.usage.completion_tokens == 1 + 4 + 1 and result.answer == "42"


def test_n_chains_run_concurrently_and_vote() -> None:
    backend = FakeBackend.scripted(by_prompt={"</think>": [" 42.", " 41.", " 42."]}, default="a b c d e f")
    strategy = Thinking(
        n=3, proposer={"name": "thinking", "max_think": 4, "sampling": SamplingParams(temperature=0.7, max_tokens=8)}
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.meta["votes"] == {"42": 2, "41": 1}
    assert result.usage.completion_tokens == 3 * 4 + 3
    # the 3 first segments merge into one n=3 request; the 3 answer requests share a prompt and merge too
    assert backend.requests == 1 + 1


def test_options_and_registry() -> None:
    assert REGISTRY.get("strategy", "thinking") is Thinking
    with pytest.raises(ValueError, match="min_think must be <= max_think"):
        Thinking(proposer={"name": "thinking", "min_think": 10, "max_think": 5})


@pytest.fixture(scope="module")
def hf_backend():
    from tts.backends.hf import HFBackend

    return HFBackend(seed=0)


@pytest.mark.hf
def test_budget_forcing_on_the_real_backend(hf_backend) -> None:
    strategy = Thinking(
        proposer={"name": "thinking", "max_think": 8, "sampling": SamplingParams(temperature=0, max_tokens=12)}
    )
    result = asyncio.run(solve(strategy, Problem("add", "What is 2 + 3?", "5"), hf_backend))
    assert result.error is None
    events = result.trace.to_dict()["events"]
    assert len(events) == 2
    assert events[0]["rendered_prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert "</think>\nThe answer is" in events[1]["rendered_prompt"]
    reasoning_tokens = events[0]["completions"][0]["token_count"]
    assert reasoning_tokens <= 8 and result.candidates[0].meta["reasoning_tokens"] == reasoning_tokens
    assert result.usage.completion_tokens == sum(e["completions"][0]["token_count"] for e in events)
