"""Ensemble: pooled voting, answer voting and reciprocal-rank fusion of members, members on other
member specs, member failures; usage and traces gathered from every member; one run on hf."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tts import (
    ConfigError,
    FakeBackend,
    Greedy,
    Problem,
    SamplingParams,
    SelfConsistency,
    load_dataset,
    run,
    solve,
)
from tts.context import Context
from tts.strategies import _select
from tts.strategies.ensemble import Ensemble, Member
from tts.types import Result

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def scripted() -> FakeBackend:
    # the cot prompt (self-consistency) says "step by step"; the direct prompt (greedy) does not
    return FakeBackend.scripted(
        by_prompt={
            "step by step": ["The answer is 7.", "The answer is 7.", "The answer is 42."],
            "6 times 7": "The answer is 42.",
        }
    )


def ensemble(combine: str, greedy_weight: float = 1.0) -> tuple[FakeBackend, Result]:
    backend = scripted()
    strategy = Ensemble(members=[SelfConsistency(n=3), Member(Greedy(), weight=greedy_weight)], combine=combine)
    return backend, asyncio.run(solve(strategy, PROBLEM, backend))


def test_pooled_vote_counts_every_candidate_with_its_member_weight() -> None:
    backend, result = ensemble("pool")
    # 7 x2 (self-consistency) against 42 x1 + 42 x1 (greedy): a tie, 7 was sampled first
    assert result.answer == "7" and result.meta["totals"] == {"7": 2.0, "42": 2.0}
    assert result.meta["members"] == {"0:self_consistency": "7", "1:greedy": "42"}
    assert result.winner == 0 and len(result.candidates) == 4
    assert [c.meta["member"] for c in result.candidates] == ["0:self_consistency"] * 3 + ["1:greedy"]
    assert backend.calls == 1 and backend.requests == 2, "members run concurrently: one engine batch"
    assert result.usage.completions == 4 and result.usage.calls == 2
    assert result.usage.completion_tokens == backend.completion_tokens
    assert [e.note for e in result.trace.events] == ["member 0:self_consistency", "member 1:greedy"]
    _, result = ensemble("pool", greedy_weight=2.0)
    assert result.answer == "42" and result.winner == 3, "greedy's own pick represents its answer"


def test_answer_vote_and_rrf_combine_member_answers() -> None:
    _, result = ensemble("vote")
    assert result.answer == "7" and result.meta["totals"] == {"7": 1.0, "42": 1.0}
    _, result = ensemble("vote", greedy_weight=1.5)
    assert result.answer == "42"
    # RRF: self-consistency ranks [7, 42], greedy ranks [42]: 42 gets 1/62 + 1/61 > 7's 1/61
    _, result = ensemble("rrf")
    assert result.answer == "42"
    assert result.meta["totals"] == pytest.approx({"7": 1 / 61, "42": 1 / 62 + 1 / 61})


def test_rrf_and_rank_keys_are_pure() -> None:
    fused = _select.rrf([["a", "b"], ["b", "c"]], k=60)
    assert list(fused) == ["a", "b", "c"]
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    assert _select.rrf([["a"], ["b"]], weights=[1.0, 3.0])["b"] == pytest.approx(3 / 61)
    from tts.types import Candidate

    cands = [Candidate("", k, key=k) for k in ("x", "y", "y", "z", "z")]
    assert _select.rank_keys(cands) == ["y", "z", "x"]
    assert _select.rank_keys(cands, first="x") == ["x", "y", "z"]


def test_members_are_component_specs_and_old_shapes_are_refused() -> None:
    spec = Ensemble(members=[{"name": "self_consistency", "n": 3}, {"name": "greedy", "weight": 2.0, "label": "big"}])
    home = scripted()
    result = asyncio.run(solve(spec, PROBLEM, home))
    assert result.answer == "42" and result.meta["members"]["big"] == "42"
    assert home.requests == 2 and home.completions_generated == 4, "every member runs on the problem's context"
    assert result.usage.completions == 4 and result.usage.calls == 2
    with pytest.raises(
        ConfigError,
        match=r"members\[0\]\.strategy is the old shape; write the member as one "
        r"component: \{name: greedy, weight: 1.0, \.\.\.options\}",
    ) as err:
        Ensemble(members=[{"strategy": "greedy", "options": {}}])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="backend is not supported"):
        Ensemble(members=[{"name": "greedy", "backend": "nowhere"}])
    with pytest.raises(ConfigError, match="at least one"):
        Ensemble()


class Broken:
    name = "broken"

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        raise RuntimeError("engine on fire")


def test_failed_members_are_recorded_and_left_out() -> None:
    backend = scripted()
    result = asyncio.run(solve(Ensemble(members=[Broken(), Greedy()]), PROBLEM, backend))
    assert result.answer == "42" and result.meta["errors"] == {"0:broken": "RuntimeError: engine on fire"}
    report = run(Ensemble(members=[Broken()]), [PROBLEM], backend)
    assert report.results[0].error == "RuntimeError: engine on fire"


@pytest.fixture(scope="module")
def hf_backend() -> Any:
    from tts.backends.hf import HFBackend

    return HFBackend()


@pytest.mark.hf
def test_ensemble_on_hf(hf_backend: Any) -> None:
    data = load_dataset("add1:2")
    short = SamplingParams(temperature=0.8, max_tokens=24)
    strategy = Ensemble(
        members=[
            SelfConsistency(n=2, proposer={"name": "few_shot", "sampling": short}),
            Greedy(proposer={"name": "few_shot", "sampling": SamplingParams(temperature=0, max_tokens=24)}),
        ],
        combine="rrf",
    )
    report = run(strategy, data.problems, hf_backend, task=data.task)
    assert len(report.results) == 2
    for r in report.results:
        assert r.error is None and len(r.candidates) == 3
        assert r.usage.completions == 3 and r.usage.calls == 2 and r.usage.completion_tokens > 0
        assert len(r.trace.events) == 2
    assert report.usage.completions == 6
