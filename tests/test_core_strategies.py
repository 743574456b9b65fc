"""First strategies on scripted replies: greedy, cot, self-consistency and the voting tie rule."""

from __future__ import annotations

import asyncio

from tts import CoT, FakeBackend, Greedy, Problem, SelfConsistency, Task, run, solve
from tts.strategies import _select
from tts.types import Candidate

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def test_majority_vote_picks_the_most_frequent_answer() -> None:
    replies = [
        "The answer is 41.",
        "6*7 = 42. The answer is 42.",
        "The answer is 42.",
        "I think 40.",
        "The answer is 42.",
    ]
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies})
    result = asyncio.run(solve(SelfConsistency(n=5), PROBLEM, backend))
    assert result.answer == "42" and result.correct is True
    assert result.meta["votes"] == {"41": 1, "42": 3, "40": 1}
    assert result.winner == 1  # the first candidate of the winning group
    assert backend.requests == 1 and backend.completions_generated == 5


def test_tie_goes_to_the_answer_sampled_first() -> None:
    replies = ["The answer is 7.", "The answer is 42.", "The answer is 42.", "The answer is 7."]
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies})
    result = asyncio.run(solve(SelfConsistency(n=4), PROBLEM, backend))
    assert result.answer == "7" and result.correct is False


def test_no_answer_candidates_do_not_vote() -> None:
    cands = [
        Candidate("?", None),
        Candidate("x", "3", key="3"),
        Candidate("?", None),
        Candidate("y", "4", key="4"),
        Candidate("z", "4", key="4"),
    ]
    assert _select.majority(cands) == 3
    assert _select.majority([Candidate("?", None)]) is None
    assert _select.plurality(_select.group(cands), weights=[0, 5.0, 0, 1.0, 1.0]) == "3"


def test_equivalent_spellings_group_together() -> None:
    replies = ["The answer is 1,000.", "The answer is 1000.00", "The answer is 999."]
    backend = FakeBackend.scripted(by_prompt={"thousand": replies})
    result = asyncio.run(solve(SelfConsistency(n=3), Problem("t", "A thousand?", "1000"), backend))
    assert result.correct is True and result.meta["votes"] == {"1000": 2, "999": 1}


def test_greedy_and_cot_prompts_and_params() -> None:
    backend = FakeBackend.scripted(default="The answer is 42.")
    task = Task(instruction="Reply with a number.")
    g = asyncio.run(solve(Greedy(), PROBLEM, backend, task=task))
    c = asyncio.run(solve(CoT(), PROBLEM, backend, task=task))
    assert g.correct and c.correct
    g_req = g.trace.events[0].request
    c_req = c.trace.events[0].request
    assert g_req is not None and c_req is not None
    assert g_req.params.temperature == 0 and g_req.params.n == 1
    assert "step by step" in c_req.messages()[-1]["content"]
    assert "step by step" not in g_req.messages()[-1]["content"]
    assert "Reply with a number." in g.trace.events[0].completions[0].prompt_text  # type: ignore[operator]


def test_trace_records_every_request_and_rendered_prompt() -> None:
    backend = FakeBackend.scripted(default="The answer is 42.")
    report = run(SelfConsistency(n=3), [PROBLEM], backend)
    trace = report.results[0].to_dict()["trace"]
    assert len(trace["events"]) == 1
    event = trace["events"][0]
    assert event["request"]["params"]["n"] == 3 and len(event["completions"]) == 3
    assert "What is 6 times 7?" in event["rendered_prompt"]
