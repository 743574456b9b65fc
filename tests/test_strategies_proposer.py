"""One proposer behind every sampling strategy: literal braces in prompts, the assistant prefix sent
and parsed the same way everywhere, self-consistency with early stopping over every proposer (from
YAML), old option shapes refused in one line, and the one selection tie rule."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tts import FakeBackend, Problem, Task, solve
from tts.config.build import build_strategy
from tts.config.spec import load_pipeline
from tts.errors import ConfigError
from tts.strategies import _select
from tts.strategies._program import ProgramOfThoughtProposerOptions
from tts.strategies._select import Tally, decided
from tts.strategies.best_of_n import BestOfN
from tts.strategies.cot import CoT
from tts.strategies.ensemble import Ensemble
from tts.strategies.few_shot import FewShot
from tts.strategies.greedy import Greedy
from tts.strategies.least_to_most import LeastToMost
from tts.strategies.program_of_thought import ProgramOfThought
from tts.strategies.refine import Refine
from tts.strategies.self_consistency import SelfConsistency
from tts.strategies.thinking import Thinking
from tts.strategies.universal_self_consistency import UniversalSelfConsistency
from tts.types import Candidate, Score

PROBLEM = Problem("q1", "What is 6 times 7?", "42")
BOXED = "{question}\nPut the final answer in \\boxed{}, e.g. \\boxed{7}. {instruction}"
HOT = {"temperature": 0.7, "max_tokens": 32}


async def evaluate(code: str, timeout: float) -> SimpleNamespace:
    """A stand-in sandbox for programs that only print an arithmetic expression."""
    expr = code.strip().removeprefix("print(").removesuffix(")")
    out = f"{eval(expr, {'__builtins__': {}})}\n"
    return SimpleNamespace(ok=True, stdout=out, stderr="", exit_code=0, timed_out=False)


class Passes:
    name = "passes"

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: Any = None) -> list[Score]:
        return [Score(1.0, passed=True) for _ in candidates]


def sampling_strategies(prompt: str) -> dict[str, Any]:
    few = {"name": "few_shot", "prompt": prompt}
    return {
        "greedy": Greedy(proposer={**few, "sampling": {"temperature": 0}}),
        "cot": CoT(proposer=few),
        "few_shot": FewShot(proposer=few),
        "self_consistency": SelfConsistency(n=2, proposer=few),
        "best_of_n": BestOfN(n=2, select="majority", proposer=few),
        "universal_self_consistency": UniversalSelfConsistency(n=2, proposer=few),
        "refine": Refine(verifier=Passes(), proposer=few),
        "thinking": Thinking(proposer={"name": "thinking", "prompt": prompt}),
        "program_of_thought": ProgramOfThought(
            proposer={"name": "program_of_thought", "prompt": prompt}, runner=evaluate
        ),
    }


def user_texts(result: Any) -> list[str]:
    return [e.request.messages()[-1]["content"] for e in result.trace.events if e.kind == "generate"]


# ------------------------------------------------------------------------------------ templates


@pytest.mark.parametrize("name", list(sampling_strategies(BOXED)))
def test_a_boxed_literal_in_the_prompt_of_every_sampling_strategy(name: str) -> None:
    strategy = sampling_strategies(BOXED)[name]
    backend = FakeBackend.scripted(default="```python\nprint(6*7)\n```\nThe answer is \\boxed{42}.")
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.error is None and result.answer == "42"
    first = user_texts(result)[0]
    assert first == (
        "What is 6 times 7?\nPut the final answer in \\boxed{}, e.g. \\boxed{7}. End your reply "
        "with 'The answer is N.' where N is the final answer."
    )


# ------------------------------------------------------------------------------------ assistant prefix

PREFIXED = Task(assistant_prefix="The answer is 4")  # the reply "2." completes "The answer is 42."


@pytest.mark.parametrize("name", [n for n in sampling_strategies("cot") if n != "program_of_thought"])
def test_the_assistant_prefix_is_sent_and_parsed_the_same_way_by_every_strategy(name: str) -> None:
    strategy = sampling_strategies("cot")[name]
    backend = FakeBackend.scripted(default="2.", by_prompt={"most consistent": "Response 1"})
    result = asyncio.run(solve(strategy, PROBLEM, backend, task=PREFIXED))
    assert result.answer == "42", "the prefix is part of the parsed reply"
    sampled = [
        e.request
        for e in result.trace.events
        if e.kind == "generate" and "most consistent" not in e.request.messages()[-1]["content"]
    ]
    assert sampled and all(r.assistant_prefix.startswith("The answer is 4") for r in sampled)
    assert all(c.answer == "42" for c in result.candidates)


def test_program_of_thought_continues_the_prefix_too() -> None:
    task = Task(assistant_prefix="```python\nprint(6*")
    backend = FakeBackend.scripted(default="7)\n```")
    result = asyncio.run(solve(ProgramOfThought(runner=evaluate), PROBLEM, backend, task=task))
    assert result.answer == "42" and result.candidates[0].meta["code"] == "print(6*7)"
    (event,) = [e for e in result.trace.events if e.kind == "generate"]
    assert event.request.assistant_prefix == "```python\nprint(6*"


def test_least_to_most_and_ensemble_send_the_prefix_where_replies_are_parsed() -> None:
    backend = FakeBackend.scripted(by_prompt={"simpler": "1. What is 6 times 7?"}, default="2.")
    result = asyncio.run(solve(LeastToMost(), PROBLEM, backend, task=PREFIXED))
    assert result.answer == "42"
    requests = [e.request for e in result.trace.events if e.kind == "generate"]
    assert requests[0].assistant_prefix == "" and requests[-1].assistant_prefix == "The answer is 4"
    backend = FakeBackend.scripted(default="2.")
    result = asyncio.run(solve(Ensemble(members=[Greedy(), CoT()]), PROBLEM, backend, task=PREFIXED))
    assert result.answer == "42" and result.meta["totals"] == {"42": 2.0}


# ------------------------------------------------------------------------------------ early stopping, from YAML


def load_strategy(tmp_path: Path, strategy_yaml: str) -> Any:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"strategy:\n{strategy_yaml}backend: {{name: fake}}\n", encoding="utf-8")
    return build_strategy(load_pipeline(path).strategy)


STOP = "  name: self_consistency\n  n: 8\n  stop: beta\n  window: 2\n  threshold: 0.9\n"
# beta after 2 agreeing samples: P = 7/8 < 0.9; after 4: 31/32 > 0.9, so 2 windows of the 4 are drawn


def test_self_consistency_stops_early_over_few_shot_with_three_shots(tmp_path: Path) -> None:
    examples = tmp_path / "shots.jsonl"
    examples.write_text(
        "".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n" for i in range(1, 6)),
        encoding="utf-8",
    )
    strategy = load_strategy(
        tmp_path,
        STOP + f"  proposer: {{name: few_shot, shots: 3, select: first, "
        f"prompt: few_shot, examples: {examples}, sampling: {HOT}}}\n",
    )
    backend = FakeBackend.scripted(default="The answer is 42.")
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.meta["samples"] == 4 and result.meta["stopped"] is True
    assert backend.requests == 2 and backend.completions_generated == 4
    assert result.usage.completions == 4
    first = next(e.request for e in result.trace.events if e.kind == "generate")
    shown = " ".join(m["content"] for m in first.messages())
    assert all(f"What is {i} plus {i}?" in shown for i in (1, 2, 3)) and "What is 4 plus 4?" not in shown


def test_self_consistency_stops_early_over_program_of_thought(tmp_path: Path) -> None:
    strategy = load_strategy(tmp_path, STOP + f"  proposer: {{name: program_of_thought, sampling: {HOT}}}\n")
    strategy.proposer.runner = evaluate
    backend = FakeBackend.scripted(default="```python\nprint(6*7)\n```")
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.meta["samples"] == 4 and result.meta["stopped"] is True
    assert backend.requests == 2 and backend.completions_generated == 4
    assert len([e for e in result.trace.events if e.kind == "execute"]) == 4, "programs of drawn windows only"


def test_self_consistency_stops_early_over_thinking_with_a_budget(tmp_path: Path) -> None:
    strategy = load_strategy(tmp_path, STOP + f"  proposer: {{name: thinking, max_think: 4, sampling: {HOT}}}\n")
    backend = FakeBackend.scripted(by_prompt={"</think>": " 42."}, default="a b c d e f")
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.meta["samples"] == 4 and result.meta["stopped"] is True
    # each chain: one reasoning segment cut at the budget (4 tokens), then the forced answer
    assert backend.completions_generated == 8 and result.usage.completions == 8
    assert all(c.meta["budget_cut"] for c in result.candidates)
    assert result.usage.completion_tokens == 4 * 4 + 4 * 1


def test_a_plain_self_consistency_without_a_stop_rule_draws_all_n(tmp_path: Path) -> None:
    strategy = load_strategy(tmp_path, "  name: self_consistency\n  n: 8\n")
    backend = FakeBackend.scripted(default="The answer is 42.")
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert backend.requests == 1 and backend.completions_generated == 8 and result.answer == "42"


# ------------------------------------------------------------------------------------ old shapes


@pytest.mark.parametrize(
    ("yaml_strategy", "message"),
    [
        (
            "{name: self_consistency, n: 8, sampling: {temperature: 0.5}}",
            "strategy.sampling is not a known field here: it belongs to the proposer now; write proposer: "
            "{name: few_shot, sampling: ...}",
        ),
        (
            "{name: best_of_n, prompt: cot}",
            "strategy.prompt is not a known field here: it belongs to the proposer now; write proposer: "
            "{name: few_shot, prompt: ...}",
        ),
        (
            "{name: thinking, max_think: 5}",
            "strategy.max_think is not a known field here: it belongs to the proposer now; write proposer: "
            "{name: thinking, max_think: ...}",
        ),
        (
            "{name: best_of_n, verifier: math, verifier_options: {timeout: 3}}",
            "strategy.verifier_options is the old shape; write the verifier as one component: verifiers: [{name: math",
        ),
    ],
)
def test_old_yaml_shapes_are_refused_in_one_line(tmp_path: Path, yaml_strategy: str, message: str) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(f"strategy: {yaml_strategy}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_old_python_shapes_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        SelfConsistency(n=8, sampling={"temperature": 0.5})
    assert str(err.value) == (
        "strategy self_consistency: sampling is not a known field here: it belongs to the "
        "proposer now; write proposer: {name: few_shot, sampling: ...}"
    )
    with pytest.raises(ConfigError) as err:
        ProgramOfThought(timeout=2.0)
    assert "write proposer: {name: program_of_thought, timeout: ...}" in str(err.value)
    with pytest.raises(ConfigError) as err:
        SelfConsistency(n=4, proposer={"name": "few_shot", "sampling": {"temperature": 0}})
    assert str(err.value) == (
        "strategy self_consistency: proposer.sampling.temperature must be > 0 when n > 1, "
        "got 0.0; or set proposer.temperatures."
    )
    with pytest.raises(ConfigError, match=r"n must be >= 1, got 0\.") as err:
        SelfConsistency(n=0)
    assert "\n" not in str(err.value)


def test_proposer_options_merge_over_the_strategy_defaults() -> None:
    greedy = Greedy(proposer={"name": "few_shot", "shots": 2})
    assert greedy.proposer.options.prompt == "direct" and greedy.proposer.options.sampling.greedy
    assert greedy.proposer.options.shots == 2
    pot = ProgramOfThought(proposer={"name": "program_of_thought", "timeout": 2.0})
    assert pot.proposer.options.sampling.max_tokens == 512 and pot.proposer.options.timeout == 2.0
    as_object = SelfConsistency(n=2, proposer=ProgramOfThoughtProposerOptions(timeout=1.0))  # same code path
    assert type(as_object.proposer).__name__ == "ProgramOfThoughtProposer" and as_object.proposer.options.timeout == 1.0
    other = SelfConsistency(n=2, proposer={"name": "thinking"})  # another proposer: its own defaults
    assert type(other.proposer).__name__ == "ThinkingProposer" and other.proposer.options.sampling.temperature == 0.6


# ------------------------------------------------------------------------------------ the tie rule


def cands(*keys: str | None) -> list[Candidate]:
    return [Candidate(text=str(k), answer=k, key=k) for k in keys]


def scored(*pairs: tuple[str | None, float | None]) -> list[Candidate]:
    out = cands(*(k for k, _ in pairs))
    for c, (_, v) in zip(out, pairs, strict=True):
        if v is not None:
            c.scores.append(Score(v))
    return out


def test_vote_ties_go_to_the_answer_whose_first_candidate_came_earliest() -> None:
    assert _select.majority(cands("b", "a", "a", "b")) == 0
    assert _select.majority(cands("a", "b", "b", "a")) == 0
    assert _select.weighted_vote(cands("b", "a"), [1.0, 1.0]) == 0
    assert _select.weighted_vote(cands("a", "b", "a"), [0.5, 1.0, 0.5]) == 0  # 1.0 each: a came first
    assert _select.rank_keys(cands("c", "b", "b", "c", "a")) == ["c", "b", "a"]


def test_best_score_ties_go_to_the_earliest_candidate() -> None:
    # the tied best scores are 0.9 at indices 1 (a) and 2 (b); b has the majority among the tied: no matter
    pool = scored(("c", 0.1), ("a", 0.9), ("b", 0.9), ("b", 0.9))
    assert _select.best_score(pool) == 1
    assert _select.first_max([None, 0.5, float("nan"), 0.5]) == 1
    assert _select.best_score(scored((None, 1.0), ("a", None), ("b", 0.2))) == 2
    assert _select.best_score(scored(("a", None), ("b", None), ("b", None))) == 1  # fallback: majority
    assert _select.best_score(scored(("a", None)), fallback="none") is None


def test_placeholders_and_empty_extractions_never_vote() -> None:
    pool = cands("", None, "7", "", None, "")
    assert _select.group(pool) == {"7": [2]}
    assert _select.majority(pool) == 2
    assert _select.majority(cands("", None)) is None
    tally = Tally()
    for c in pool:
        tally.add(c.key)
    assert tally.counts == {"7": 1} and tally.total == 1.0


def test_decided_follows_the_same_tie_rule() -> None:
    tally = Tally()
    for key in ("a", "b", "b", "a"):
        tally.add(key)
    assert decided(tally, 0), "a 2-2 tie goes to a, seen first"
    assert not decided(tally, 1)
