"""LLM-as-judge, pairwise judge and self-verification on scripted fake-backend replies: prompts,
constraints, parsed scores, both presentation orders, P(yes) from log-probabilities, usage."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import replace
from typing import ClassVar

import pytest

from tts.backends.base import Batcher, Capabilities, Handle
from tts.backends.fake import FakeBackend, Scripted
from tts.context import Context
from tts.errors import ConfigError, UnsupportedControl
from tts.scheduler import Scheduler
from tts.types import Candidate, Completion, Problem, Request
from tts.verifiers.judge import (
    LLMJudge,
    PairwiseJudge,
    SelfVerifier,
    parse_preference,
    parse_score,
    parse_yes_no,
)

PROBLEM = Problem("q", "What is 6 times 7?", "42")


def context(backend: FakeBackend) -> Context:
    return Context(Scheduler(backend), problem=PROBLEM)


def prompts(ctx: Context) -> list[str]:
    return [e.request.messages()[-1]["content"] for e in ctx.trace.events if e.request is not None]


def requests(ctx: Context) -> list[Request]:
    return [e.request for e in ctx.trace.events if e.request is not None]


def with_constraints(backend: FakeBackend, *kinds: str) -> FakeBackend:
    backend.capabilities = replace(backend.capabilities, constraints=frozenset(kinds))
    return backend


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Score: 7", 7),
        ("The steps are right; 3 of them are clear.\nScore: 4", 4),
        ("I'd rate this 8/10.", 8),
        ("Rating - 6 out of 10", 6),
        ("[[9]]", 9),
        ("**6**", 6),
        ("10", 10),
        ("7.5 out of 10", 7.5),
        ("Final score: 12. Oops, I mean 9", 9),
        ("It is wrong.", None),
        ("", None),
        ("Score: 0", None),
    ],
)
def test_parse_score(reply: str, expected: float | None) -> None:
    assert parse_score(reply, 1, 10) == expected


def test_parse_preference_and_yes_no() -> None:
    assert parse_preference("A is clearer. [[B]] because it is right.") == "B"
    assert parse_preference("[[C]]") == "tie"
    assert parse_preference("A") == "A"
    assert parse_preference("Response B is better.") == "B"
    assert parse_preference("They are equally good.") == "tie"
    assert parse_preference("hmm") is None
    assert parse_yes_no(" Yes, it is.") is True and parse_yes_no("**No**") is False
    assert parse_yes_no("Correct.") is True and parse_yes_no("maybe") is None


# --------------------------------------------------------------------------------------------------
# Rubric judge
# --------------------------------------------------------------------------------------------------


async def test_judge_prompt_parsing_and_usage_without_constraints() -> None:
    backend = FakeBackend.scripted(
        by_prompt={"is 42": "Correct product. Score: 9", "is 41": "Off by one. 2/10", "is 40": "I cannot tell."}
    )
    ctx = context(backend)
    judge = LLMJudge(rubric="Grade the arithmetic.")
    candidates = [Candidate("6*7 is 42.", "42"), Candidate("6*7 is 41.", "41"), Candidate("6*7 is 40.", "40")]
    scores = await ctx.verify(candidates, judge)
    assert [s.value for s in scores] == pytest.approx([8 / 9, 1 / 9, 0.0])
    assert [s.passed for s in scores] == [True, False, False]
    assert scores[0].feedback == "Judge score 9/10: Correct product. Score: 9"
    assert "no score" in scores[2].feedback
    first = prompts(ctx)[0]
    assert first.startswith("Grade the arithmetic.\n\n[Question]\nWhat is 6 times 7?\n\n[Response]\n6*7 is 42.")
    assert "end with a final line 'Score: N'" in first
    params = requests(ctx)[0].params
    assert params.constraint is None and params.temperature == 0 and params.max_tokens == 256
    # one verifier call per judged candidate; the judge's requests are charged as verifier tokens
    assert ctx.usage.calls == 3 and ctx.usage.verifier_calls == 3 and backend.requests == 3
    assert ctx.usage.verifier_prompt_tokens > 0 and ctx.usage.prompt_tokens == 0
    assert [c.scores[-1].verifier for c in candidates] == ["judge"] * 3
    assert judge.cost.kind == "llm" and judge.cost.calls == 1


async def test_judge_constrains_the_score_where_the_backend_can() -> None:
    backend = with_constraints(FakeBackend.scripted(default="7"), "regex")
    ctx = context(backend)
    [score] = await LLMJudge().score(PROBLEM, [Candidate("42", "42")], ctx)
    assert score.value == pytest.approx(6 / 9)
    [request] = requests(ctx)
    constraint = request.params.constraint
    assert constraint is not None and constraint.kind == "regex" and request.params.max_tokens == 3
    assert all(re.fullmatch(constraint.pattern or "", str(i)) for i in range(1, 11))
    assert not any(re.fullmatch(constraint.pattern or "", s) for s in ("0", "11", "7 ", "Score: 7"))
    assert "Reply with the score only" in prompts(ctx)[0]

    choice_ctx = context(with_constraints(FakeBackend.scripted(default="3"), "choice", "regex"))
    await LLMJudge(low=1, high=5).score(PROBLEM, [Candidate("42", "42")], choice_ctx)
    assert requests(choice_ctx)[0].params.constraint.choices == ("1", "2", "3", "4", "5")  # type: ignore[union-attr]

    free_ctx = context(with_constraints(FakeBackend.scripted(default="Score: 3"), "regex"))
    await LLMJudge(constrained="never").score(PROBLEM, [Candidate("42", "42")], free_ctx)
    assert requests(free_ctx)[0].params.constraint is None
    with pytest.raises(UnsupportedControl, match="constraints"):
        await LLMJudge(constrained="always").score(PROBLEM, [Candidate("42", "42")], context(FakeBackend()))


async def test_judge_averages_several_sampled_judgements() -> None:
    backend = FakeBackend.scripted(by_prompt={"[Response]": ["Score: 10", "Score: 7", "Score: 4"]})
    ctx = context(backend)
    [score] = await LLMJudge(samples=3, temperature=0.7).score(PROBLEM, [Candidate("42", "42")], ctx)
    assert score.value == pytest.approx((9 + 6 + 3) / 3 / 9)
    assert backend.requests == 1 and backend.completions_generated == 3
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        LLMJudge(samples=3)
    with pytest.raises(ConfigError, match="high must be > low"):
        LLMJudge(low=5, high=5)
    with pytest.raises(ConfigError, match=r"unknown placeholder \{nope\}"):
        await LLMJudge(template="{rubric} {nope}").score(PROBLEM, [Candidate("42", "42")], context(FakeBackend()))
    # one template engine: LaTeX braces in a template and braces in the filled text stay as written
    latex_ctx = context(FakeBackend.scripted(default="Score: 9"))
    template = "{rubric} Answers look like \\boxed{{}}. {question} {solution} {instruction}"
    await LLMJudge(template=template).score(PROBLEM, [Candidate("so \\boxed{42} {question}", "42")], latex_ctx)
    assert "Answers look like \\boxed{{}}." in prompts(latex_ctx)[0]
    assert "so \\boxed{42} {question}" in prompts(latex_ctx)[0]


# --------------------------------------------------------------------------------------------------
# Pairwise judge
# --------------------------------------------------------------------------------------------------


def biased_judge(prompt: str) -> str:
    """Prefers the response that says 42; otherwise always picks the first one shown (position bias)."""
    a = prompt.split("[Response A]\n")[1].split("\n\n[Response B]")[0]
    b = prompt.split("[Response B]\n")[1].split("\n\n")[0]
    if "42" in a and "42" not in b:
        return "Response A is right. [[A]]"
    if "42" in b and "42" not in a:
        return "Response B is right. [[B]]"
    return "[[A]]"


async def test_pairwise_asks_both_orders_and_cancels_position_bias() -> None:
    backend = FakeBackend(Scripted(default=biased_judge))
    ctx = context(backend)
    judge = PairwiseJudge()
    candidates = [Candidate("It is 41.", "41"), Candidate("It is 42.", "42"), Candidate("It is 40.", "40")]
    scores = await judge.score(PROBLEM, candidates, ctx)
    assert [s.value for s in scores] == pytest.approx([0.25, 1.0, 0.25])
    assert scores[1].feedback == "won 2 of 2 pairwise comparisons"
    shown = [
        (re.search(r"\[Response A\]\n(.*)\n", p).group(1), re.search(r"\[Response B\]\n(.*)\n", p).group(1))  # type: ignore[union-attr]
        for p in prompts(ctx)
    ]
    assert len(shown) == 6 and backend.requests == 6
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        a, b = candidates[i].text, candidates[j].text
        assert (a, b) in shown and (b, a) in shown
    assert "[[A]] if Response A is better" in prompts(ctx)[0]

    fresh = context(FakeBackend(Scripted(default=biased_judge)))
    assert await judge.compare(PROBLEM, candidates[0], candidates[2], fresh) == 0.5  # bias alone cancels out
    assert await judge.compare(PROBLEM, candidates[1], candidates[0], fresh) == 1.0
    assert judge.cost.calls == 2


async def test_pairwise_ring_of_opponents_and_constraint() -> None:
    assert PairwiseJudge(opponents=1).pairs(4) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert PairwiseJudge(opponents=5).pairs(3) == [(0, 1), (0, 2), (1, 2)]
    backend = with_constraints(FakeBackend.scripted(default="B"), "choice")
    ctx = context(backend)
    scores = await PairwiseJudge(threshold=0.5).score(PROBLEM, [Candidate("x", "1"), Candidate("y", "2")], ctx)
    assert [s.value for s in scores] == [0.5, 0.5] and [s.passed for s in scores] == [True, True]
    assert all(r.params.constraint is not None and r.params.constraint.choices == ("A", "B") for r in requests(ctx))
    [alone] = await PairwiseJudge().score(PROBLEM, [Candidate("x", "1")], context(FakeBackend()))
    assert alone.value == 1.0


# --------------------------------------------------------------------------------------------------
# Self-verification
# --------------------------------------------------------------------------------------------------


class TopLogprobBackend:
    """Wraps the fake engine so the first generated token carries top log-probabilities, as vLLM
    and OpenAI-compatible servers give them."""

    name: ClassVar[str] = "top-logprobs"

    def __init__(self, tops: dict[str, dict[str, float]]) -> None:
        self.inner = FakeBackend(
            Scripted(default=lambda p: "Yes" if "42" in p.split("[Proposed solution]")[1] else "No")
        )
        self.capabilities = self.inner.capabilities
        self.clock = self.inner.clock
        self.tops = tops
        self._batcher = Batcher(self._run)

    def submit(self, request: Request) -> Handle:
        return self._batcher.submit(request)

    async def _run(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        outputs = await asyncio.gather(*(self.inner.submit(r) for r in requests))
        for out in outputs:
            for c in out:
                key = next(k for k in self.tops if k in (c.prompt_text or ""))
                c.top_logprobs = [{t: math.log(p) for t, p in self.tops[key].items()}]
        return list(outputs)


async def test_self_verification_reads_p_yes_from_top_logprobs() -> None:
    backend = TopLogprobBackend(
        {
            "is 42": {" Yes": 0.6, "YES": 0.2, " No": 0.15, "Maybe": 0.05},
            "is 41": {" No": 0.7, " Yes": 0.1, "yes": 0.1, "Hmm": 0.1},
        }
    )
    ctx = Context(Scheduler(backend), problem=PROBLEM)
    verifier = SelfVerifier()
    scores = await ctx.verify([Candidate("6*7 is 42.", "42"), Candidate("6*7 is 41.", "41")], verifier)
    assert [s.value for s in scores] == pytest.approx([0.8 / 0.95, 0.2 / 0.9])
    assert [s.passed for s in scores] == [True, False]
    [request, _] = requests(ctx)
    assert request.params.logprobs == 5 and request.params.temperature == 0 and request.params.constraint is None
    assert prompts(ctx)[0].endswith("Is the final answer of the proposed solution (42) correct? Answer Yes or No.")
    assert ctx.usage.verifier_calls == 2 and ctx.usage.calls == 2 and backend.inner.requests == 2


async def test_self_verification_falls_back_to_the_chosen_token_or_the_verdict() -> None:
    backend = with_constraints(
        FakeBackend.scripted(by_prompt={"(42)": "Yes", "(41)": "No", "(40)": "Perhaps"}), "choice"
    )
    ctx = context(backend)
    candidates = [Candidate("42", "42"), Candidate("41", "41"), Candidate("40", "40")]
    scores = await SelfVerifier().score(PROBLEM, candidates, ctx)
    p = math.exp(-0.5)  # the fake engine's chosen-token log-probability
    assert [s.value for s in scores] == pytest.approx([p, 1 - p, 0.0])
    assert "not yes or no" in scores[2].feedback
    assert requests(ctx)[0].params.constraint.choices == ("Yes", "No")  # type: ignore[union-attr]

    ctx = context(FakeBackend.scripted(by_prompt={"(42)": "Yes", "(41)": "No"}))
    scores = await SelfVerifier(use_logprobs=False).score(PROBLEM, candidates[:2], ctx)
    assert [s.value for s in scores] == [1.0, 0.0]
    assert all(r.params.logprobs is None for r in requests(ctx))

    no_logprobs = FakeBackend.scripted(default="Yes")
    no_logprobs.capabilities = Capabilities(logprobs=False)
    ctx = context(no_logprobs)
    [score] = await SelfVerifier().score(PROBLEM, candidates[:1], ctx)
    assert score.value == 1.0 and requests(ctx)[0].params.logprobs is None


async def test_judges_reach_the_engine_only_through_the_context() -> None:
    """The judge reads capabilities from ``ctx.capabilities`` and generates with ``ctx``; a context
    without a scheduler (nothing to reach into) is enough."""

    class BareContext:
        capabilities = replace(Capabilities(), constraints=frozenset({"choice"}))

        def __init__(self) -> None:
            self.requests: list[Request] = []

        async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
            self.requests += requests
            return [[Completion(text="8", token_count=1)] for _ in requests]

    ctx = BareContext()
    [score] = await LLMJudge().score(PROBLEM, [Candidate("42", "42")], ctx)
    assert score.value == pytest.approx(7 / 9)
    constraint = ctx.requests[0].params.constraint
    assert constraint is not None and constraint.kind == "choice"
