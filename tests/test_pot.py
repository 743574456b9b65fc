"""Program of thought: programs written by the model run in the sandbox; printed outputs vote."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from tts import FakeBackend, Problem, SamplingParams, solve
from tts.datasets import BUILTIN_TASKS
from tts.registry import REGISTRY
from tts.strategies.program_of_thought import ProgramOfThought, extract_code, output_answer

PROBLEM = Problem(
    "eggs",
    "Janet's ducks lay 16 eggs a day. She eats 3 and bakes with 4. She sells the "
    "rest at $2 each. How many dollars does she make?",
    "18",
)


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is the program:\n```{lang}\n{code}\n```\nIt prints the answer."


GOOD = "eggs = 16 - 3 - 4\nprint('eggs left', eggs)\nprint(eggs * 2)"
ALSO_GOOD = "print(2 * (16 - 7))"
WRONG = "print(16 * 2)"
CRASH = "print(1 / 0)"
SLOW = "while True:\n    pass"


def test_extract_code_and_output_answer() -> None:
    assert extract_code(fenced(GOOD)) == GOOD
    assert extract_code("```\nprint(1)\n```") == "print(1)"
    assert extract_code("```text\nout\n```\n```py\nprint(2)\n```") == "print(2)"  # python blocks first
    assert extract_code("```python\nx = 1\nprint(x") == "x = 1\nprint(x"  # cut by max_tokens
    assert extract_code("The answer is 18.") is None
    assert output_answer("eggs left 9\n18\n\n") == "18"
    assert output_answer("  \n") is None


@dataclass
class Ran:
    ok: bool
    stdout: str
    stderr: str = ""
    exit_code: int | None = 0
    timed_out: bool = False


class CannedRunner:
    """A stand-in for the sandbox: canned results by program text; records what it was asked."""

    def __init__(self, results: dict[str, Ran]) -> None:
        self.results = results
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, code: str, timeout: float) -> Ran:
        self.calls.append((code, timeout))
        return self.results[code]


def test_executed_outputs_vote_and_failed_programs_do_not() -> None:
    replies = [fenced(WRONG), fenced(CRASH), fenced(GOOD), "I would say 32.", fenced(ALSO_GOOD), fenced(SLOW)]
    backend = FakeBackend.scripted(by_prompt={"Janet": replies})
    runner = CannedRunner(
        {
            GOOD: Ran(True, "eggs left 9\n18\n"),
            ALSO_GOOD: Ran(True, "18\n"),
            WRONG: Ran(True, "32\n"),
            CRASH: Ran(False, "", "ZeroDivisionError", 1),
            SLOW: Ran(False, "", "", None, timed_out=True),
        }
    )
    strategy = ProgramOfThought(
        n=6,
        proposer={
            "name": "program_of_thought",
            "sampling": SamplingParams(temperature=0.8, max_tokens=128),
            "timeout": 2.0,
        },
        runner=runner,
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    # "32" from one program against "18" from two: the crash, the time-out and the prose never vote
    assert result.answer == "18" and result.correct is True and result.meta["votes"] == {"32": 1, "18": 2}
    assert result.winner == 2 and result.meta["failed"] == 3
    assert backend.requests == 1 and backend.completions_generated == 6
    # every program ran once; the reply without code ran nothing
    assert sorted(c for c, _ in runner.calls) == sorted([WRONG, CRASH, GOOD, ALSO_GOOD, SLOW])
    assert {t for _, t in runner.calls} == {2.0}
    errors = [c.meta.get("error") for c in result.candidates]
    assert errors == [None, "error exit", None, "no code block", None, "timed out"]
    executed = [e for e in result.trace.events if e.kind == "execute"]
    assert len(executed) == 5 and json.loads(executed[0].to_dict()["note"])["code"] in runner.results
    generate = [e for e in result.trace.events if e.kind == "generate"]
    assert len(generate) == 1 and "```python" in generate[0].request.messages()[-1]["content"]  # type: ignore[union-attr]


def test_a_printed_sentence_is_read_with_the_task_answer_format() -> None:
    # SmolLM2's programs print "The final answer is: 109"; the whole line never equals "109"
    add2 = BUILTIN_TASKS["add2"]
    code = 'print(f"The final answer is: {61 + 48}")'
    backend = FakeBackend.scripted(default=fenced(code))
    runner = CannedRunner({code: Ran(True, "The final answer is: 109\n")})
    problem = Problem("add2-3", "What is 61 + 48?", "109")
    result = asyncio.run(solve(ProgramOfThought(runner=runner), problem, backend, task=add2))
    assert result.answer == "109" and result.correct is True
    larger = BUILTIN_TASKS["larger"]
    runner = CannedRunner({code: Ran(True, "55 is larger than 31\n")})
    problem = Problem("l", "Which number is larger, 31 or 55?", "55")
    assert asyncio.run(solve(ProgramOfThought(runner=runner), problem, backend, task=larger)).answer == "55"
    runner = CannedRunner({code: Ran(True, "no number here\n")})  # nothing to read: the whole line
    assert asyncio.run(solve(ProgramOfThought(runner=runner), problem, backend, task=add2)).answer == "no number here"


def test_single_greedy_program_and_registry() -> None:
    backend = FakeBackend.scripted(default=fenced(GOOD))
    runner = CannedRunner({GOOD: Ran(True, "eggs left 9\n18\n")})
    result = asyncio.run(solve(ProgramOfThought(runner=runner), PROBLEM, backend))
    assert result.answer == "18" and len(runner.calls) == 1
    assert result.trace.events[0].request is not None and result.trace.events[0].request.params.greedy
    assert REGISTRY.get("strategy", "program_of_thought") is ProgramOfThought
    with pytest.raises(ValueError, match=r"sampling\.temperature must be > 0 when n > 1"):
        ProgramOfThought(n=3)


def test_programs_run_in_the_real_sandbox() -> None:
    replies = [fenced(GOOD), fenced(CRASH), fenced(ALSO_GOOD), fenced(SLOW)]
    backend = FakeBackend.scripted(by_prompt={"Janet": replies})
    strategy = ProgramOfThought(
        n=4, proposer={"name": "program_of_thought", "sampling": SamplingParams(temperature=0.8), "timeout": 1.0}
    )
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "18" and result.meta["votes"] == {"18": 2}
    good, crash, _, slow = result.candidates
    assert good.meta["stdout"] == "eggs left 9\n18\n" and good.meta["exit_code"] == 0
    assert crash.answer is None and "ZeroDivisionError" in crash.meta["stderr"]
    assert slow.answer is None and slow.meta["timed_out"] is True


@pytest.fixture(scope="module")
def hf_backend():
    from tts.backends.hf import HFBackend

    return HFBackend(seed=0)


@pytest.mark.hf
def test_program_of_thought_on_the_real_backend(hf_backend) -> None:
    strategy = ProgramOfThought(
        proposer={
            "name": "program_of_thought",
            "sampling": SamplingParams(temperature=0, max_tokens=32),
            "timeout": 2.0,
        }
    )
    result = asyncio.run(solve(strategy, Problem("add", "What is 2 + 3?", "5"), hf_backend))
    assert result.error is None and len(result.candidates) == 1
    events = result.trace.to_dict()["events"]
    assert events[0]["kind"] == "generate"
    assert "Write a short Python program" in events[0]["rendered_prompt"]
    assert "What is 2 + 3?" in events[0]["rendered_prompt"]
    cand = result.candidates[0]
    # a program was run exactly when the reply held a fenced block
    assert len([e for e in events if e["kind"] == "execute"]) == (cand.meta["code"] is not None)
