"""Verifier operations: weighted sum, all-must-pass, cheap-to-expensive cascade (call counts and
what the expensive stage saw), the score cache, prune / rerank, declared costs."""

from __future__ import annotations

import pytest

from tts.backends.fake import FakeBackend
from tts.context import Context
from tts.errors import ConfigError
from tts.scheduler import Scheduler
from tts.types import Candidate, Problem, Score
from tts.verifiers.base import VerifierCost
from tts.verifiers.combine import (
    AllPass,
    CachedVerifier,
    Cascade,
    Stage,
    WeightedSum,
    candidate_hash,
    combined_cost,
    prune,
    rerank,
    verify_and_prune,
    verify_and_rerank,
)
from tts.verifiers.judge import LLMJudge

PROBLEM = Problem("q", "What is 6 times 7?", "42")


class Lookup:
    """Scores candidates from a table by answer; counts calls and the candidates it saw."""

    def __init__(
        self,
        name: str,
        table: dict[str | None, float],
        *,
        kind: str = "rule",
        calls: int = 0,
        pass_at: float | None = None,
    ) -> None:
        self.name = name
        self.table = table
        self.pass_at = pass_at
        self.cost = VerifierCost(kind=kind, calls=calls)
        self.calls = 0
        self.seen: list[str | None] = []

    async def score(self, problem, candidates, ctx=None):
        self.calls += 1
        self.seen += [c.answer for c in candidates]
        out = []
        for c in candidates:
            v = self.table.get(c.answer, 0.0)
            verdict = None if self.pass_at is None else v >= self.pass_at
            out.append(Score(v, verdict, f"{self.name} says {v}", self.name))
        return out


def cands(*answers: str | None) -> list[Candidate]:
    return [Candidate(f"The answer is {a}.", a) for a in answers]


async def test_weighted_sum_combines_values_and_feedback() -> None:
    rule = Lookup("rule", {"42": 1.0, "41": 0.0, "40": 1.0})
    model = Lookup("rm", {"42": 0.9, "41": 0.6, "40": 0.3}, kind="model", calls=1)
    combo = WeightedSum({rule: 1.0, model: 3.0}, threshold=0.5)
    scores = await combo.score(PROBLEM, cands("42", "41", "40"), None)
    assert [s.value for s in scores] == pytest.approx([0.925, 0.45, 0.475])
    assert [s.passed for s in scores] == [True, False, False]
    assert scores[0].feedback == "rule=1: rule says 1.0\nrm=0.9: rm says 0.9"
    assert rule.calls == model.calls == 1
    assert combo.cost == VerifierCost(kind="model", calls=1)
    assert [s.value for s in await WeightedSum([rule, model]).score(PROBLEM, cands("41"), None)] == [0.3]
    with pytest.raises(ConfigError, match="one entry per verifier"):
        WeightedSum([rule, model], [1.0])
    with pytest.raises(ConfigError, match="positive sum"):
        WeightedSum([rule], [0.0])
    with pytest.raises(ConfigError, match="not a verifier"):
        WeightedSum([object()])


async def test_all_pass_requires_every_verifier() -> None:
    a = Lookup("format", {"42": 1.0, "41": 1.0, "40": 0.0}, pass_at=1.0)
    b = Lookup("rm", {"42": 0.8, "41": 0.3, "40": 0.9})  # no verdict: passes at 0.5
    scores = await AllPass([a, b]).score(PROBLEM, cands("42", "41", "40"), None)
    assert [s.passed for s in scores] == [True, False, False]
    assert [s.value for s in scores] == [0.8, 0.3, 0.0]
    assert scores[1].feedback == "rm failed: rm says 0.3"
    assert a.seen == b.seen == ["42", "41", "40"]  # every verifier sees every candidate


async def test_cascade_spares_the_expensive_verifier() -> None:
    cheap = Lookup("format", {"42": 1.0, "41": 1.0, "7": 1.0}, pass_at=1.0)
    expensive = Lookup("judge", {"42": 0.9, "41": 0.2, "7": 0.6}, kind="llm", calls=1)
    cascade = Cascade([cheap, expensive])
    answers = ["42", "x", "41", None, "y", "7", "z", "w"]
    scores = await cascade.score(PROBLEM, cands(*answers), None)
    assert cheap.calls == 1 and cheap.seen == answers
    assert expensive.calls == 1 and expensive.seen == ["42", "41", "7"]
    assert [s.value for s in scores] == [0.9, 0.0, 0.2, 0.0, 0.0, 0.6, 0.0, 0.0]
    assert scores[1].passed is False and scores[1].feedback == "rejected by stage 1 (format): format says 0.0"
    assert scores[0].verifier == "judge" and scores[1].verifier == "cascade"
    assert cascade.cost == VerifierCost(kind="llm", calls=1)

    # a threshold and top_k per stage; nothing reaches the last stage when nothing passes
    judge = Lookup("judge", {"42": 0.9, "41": 0.2, "7": 0.6})
    top = Cascade([Stage(Lookup("rm", {"42": 0.7, "41": 0.9, "7": 0.8, "x": 0.95}), threshold=0.75, top_k=2), judge])
    await top.score(PROBLEM, cands("42", "41", "7", "x"), None)
    assert judge.seen == ["41", "x"]
    last = Lookup("last", {})
    none_pass = await Cascade([Lookup("rm", {}), last]).score(PROBLEM, cands("1", "2"), None)
    assert last.calls == 0 and [s.passed for s in none_pass] == [False, False]
    with pytest.raises(ConfigError, match="top_k"):
        Stage(judge, top_k=0)


async def test_cascade_through_the_engine_counts_only_surviving_judge_calls() -> None:
    backend = FakeBackend.scripted(default="Score: 8")
    ctx = Context(Scheduler(backend), problem=PROBLEM)
    cheap = Lookup("format", {"42": 1.0, "41": 1.0}, pass_at=1.0)
    candidates = cands("42", "x", "41", "y", "z")
    scores = await ctx.verify(candidates, Cascade([cheap, LLMJudge()]))
    # two judge requests (the survivors), charged as verifier tokens; one verifier call per judged candidate
    assert backend.requests == 2 and ctx.usage.calls == 2 and ctx.usage.verifier_calls == 5
    assert ctx.usage.verifier_completion_tokens > 0
    assert [round(s.value, 3) for s in scores] == [0.778, 0.0, 0.778, 0.0, 0.0]


async def test_cache_scores_each_candidate_once() -> None:
    inner = Lookup("rm", {"42": 0.9, "41": 0.1}, kind="model", calls=1)
    cache: dict[str, Score] = {}
    cached = CachedVerifier(inner, cache)
    first = await cached.score(PROBLEM, cands("42", "41", "42"), None)
    assert inner.seen == ["42", "41"] and cached.misses == 2 and cached.hits == 1
    second = await cached.score(PROBLEM, cands("41", "42"), None)
    assert inner.calls == 1 and cached.hits == 3 and [s.value for s in second] == [0.1, 0.9]
    assert [s.value for s in first] == [0.9, 0.1, 0.9] and len(cache) == 2
    other = Problem("q2", "Another question?")
    await cached.score(other, cands("42"), None)
    assert inner.calls == 2  # same text, other problem: scored again
    assert candidate_hash(PROBLEM, Candidate("t", "1")) != candidate_hash(PROBLEM, Candidate("t", "2"))
    assert candidate_hash(PROBLEM, Candidate("t", "1")) != candidate_hash(PROBLEM, Candidate("t", "1"), salt="v2")
    assert cached.cost == inner.cost


def scored(values: list[float | None]) -> list[Candidate]:
    out = []
    for i, v in enumerate(values):
        c = Candidate(f"c{i}", str(i))
        if v is not None:
            c.scores.append(Score(v))
        out.append(c)
    return out


def test_prune_and_rerank_use_the_latest_score() -> None:
    cs = scored([0.2, 0.9, None, 0.6, 0.9])
    assert [c.answer for c in prune(cs, 0.5)] == ["1", "3", "4"]
    assert [c.answer for c in prune(cs, 0.95)] == []
    assert [c.answer for c in prune(cs, 0.95, keep_at_least=2)] == ["1", "4"]
    assert [c.answer for c in rerank(cs)] == ["1", "4", "3", "0", "2"]
    verdicts = scored([0.2, 0.1])
    verdicts[0].scores[-1] = Score(0.2, passed=True)
    assert [c.answer for c in prune(verdicts, None)] == ["0"]  # no threshold: the verifier's own verdict


async def test_verify_and_prune_or_rerank_go_through_ctx_verify() -> None:
    ctx = Context(Scheduler(FakeBackend()), problem=PROBLEM)
    rm = Lookup("rm", {"42": 0.9, "41": 0.4, "40": 0.7})
    candidates = cands("41", "42", "40")
    kept = await verify_and_prune(ctx, candidates, rm, 0.6)
    assert [c.answer for c in kept] == ["42", "40"] and ctx.usage.verifier_calls == 3  # one per candidate
    ranked = await verify_and_rerank(ctx, candidates, rm)
    assert [c.answer for c in ranked] == ["42", "40", "41"] and len(candidates[0].scores) == 2


def test_combined_cost_takes_the_most_expensive_kind_and_sums() -> None:
    parts = [Lookup("a", {}), Lookup("b", {}, kind="model", calls=1), Lookup("c", {}, kind="llm", calls=2)]
    assert combined_cost(parts) == VerifierCost(kind="llm", calls=3)

    class Undeclared:
        async def score(self, problem, candidates, ctx):
            return []

    assert combined_cost([Undeclared()]) == VerifierCost(kind="llm", calls=1)
