"""The ``outcome`` stop rule (a Dirichlet-multinomial posterior over the vote's final outcome) and
``stop: auto``: the posterior against exact enumeration, settled and hopeless votes stopped where
the leader-has-won rules keep drawing, the documented parameters, and the default that stays
fixed n."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tts import FakeBackend, Problem, SelfConsistency, solve
from tts.strategies import _select, _stop

PROBLEM = Problem("q1", "What is 6 times 7?", "42")


def replies(*answers: str) -> list[str]:
    return [f"The answer is {a}." for a in answers]


def exact_same(counts: list[int], remaining: int) -> float:
    """P(the vote after ``remaining`` more samples keeps the current leader), by enumerating every
    sequence of the Polya urn that Dirichlet(counts + 1, unseen 1) predicts (the tie rule: the
    leader, first among the largest, wins ties)."""
    alpha = [c + 1.0 for c in counts] + [1.0]
    lead = counts.index(max(counts))
    total = 0.0
    for seq in itertools.product(range(len(alpha)), repeat=remaining):
        weights = list(alpha)
        p = 1.0
        for k in seq:
            p *= weights[k] / sum(weights)
            weights[k] += 1
        final = [*counts, 0]
        for k in seq:
            final[k] += 1
        if final.index(max(final)) == lead:
            total += p
    return total


@pytest.mark.parametrize("counts,remaining", [([2, 1], 3), ([3], 4), ([1, 1, 1], 3), ([4, 2, 1], 4)])
def test_outcome_matches_the_exact_dirichlet_multinomial(counts: list[int], remaining: int) -> None:
    got = _stop.outcome(counts, remaining).same
    assert got == pytest.approx(exact_same(counts, remaining), abs=0.015)


def test_outcome_curve_ends_where_outcome_does_and_starts_at_the_leader() -> None:
    curve = _stop.outcome_curve([3, 1], 6)
    assert len(curve) == 7 and curve[0][1] == 1.0, "no more samples: the leader stays"
    assert curve[-1][1] == pytest.approx(exact_same([3, 1], 6), abs=0.04)
    assert curve[-1][0] > curve[0][0], "more samples find the mode more often"


def test_outcome_stops_settled_and_hopeless_votes_that_the_leader_rules_keep_drawing() -> None:
    # settled: 9 of 11 with 3 left cannot be overturned in practice; beta at 0.99 still draws
    settled = _select.Tally()
    for key in ["a"] * 9 + ["b"] * 2:
        settled.add(key)
    assert _stop.beta_confidence(9, 2) < 0.99
    assert not _stop.should_stop("beta", settled, [], 0.99)
    assert _stop.should_stop("outcome", settled, [], 0.99, remaining=3)
    # hopeless: five answers near level and two samples left; the winner may still change (no rule
    # of the leader fires, P(leader kept) < 0.91) but no answer is likely enough for it to matter
    spread = _select.Tally()
    for key, count in zip("abcde", (8, 7, 7, 7, 5), strict=True):
        for _ in range(count):
            spread.add(key)
    o = _stop.outcome(list(spread.counts.values()), 2)
    assert o.same < 0.91 and 0 < o.gain <= 0.002, o
    assert not _stop.should_stop("beta", spread, [], 0.91)
    assert not _stop.should_stop("outcome", spread, [], 0.91, remaining=2, epsilon=0.0)
    assert _stop.should_stop("outcome", spread, [], 0.91, remaining=2, epsilon=0.002)
    # the same spread with a large budget left: more samples raise the winner's probability
    assert _stop.outcome(list(spread.counts.values()), 30).gain > 0.002
    # contested with budget left: keep drawing
    contested = _select.Tally()
    for key in "abab":
        contested.add(key)
    assert not _stop.should_stop("outcome", contested, [], 0.91, remaining=28, epsilon=0.002)
    assert _stop.should_stop("outcome", contested, [], 0.91, remaining=0), "no budget left: stop"


def test_stop_auto_brings_the_validated_parameters_and_given_options_win() -> None:
    o = SelfConsistency(n=32, stop="auto").options
    assert (o.threshold, o.epsilon, o.pilot, o.window, o.lookahead) == (0.91, 0.002, 3, 1, "auto")
    assert _stop.AUTO == {"threshold": 0.91, "epsilon": 0.002, "pilot": 3, "window": 1}
    o = SelfConsistency(n=32, stop="auto", window=4, lookahead=0).options
    assert (o.threshold, o.window, o.lookahead) == (0.91, 4, 0)


def test_default_stays_fixed_n_in_one_request() -> None:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*["42"] * 8)})
    result = asyncio.run(solve(SelfConsistency(), PROBLEM, backend))
    assert SelfConsistency().options.stop == "none"
    assert backend.requests == 1 and backend.completions_generated == 8 and result.usage.completions == 8
    assert "samples" not in result.meta


def test_stop_auto_stops_a_unanimous_vote_after_the_pilot() -> None:
    # pilot of 3 agreeing samples: P(the 32-sample vote keeps 42) > 0.91; look-ahead had one more
    # sample in the same engine batch, generated and charged, then the vote stopped
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*["42"] * 32)})
    result = asyncio.run(solve(SelfConsistency(n=32, stop="auto", lookahead=0), PROBLEM, backend))
    assert _stop.outcome([3], 29).same > 0.91 > _stop.outcome([2], 30).same
    assert result.answer == "42" and result.meta["samples"] == 3 and result.meta["stopped"] is True
    assert backend.requests == 1 and backend.completions_generated == 3 and result.usage.completions == 3


def test_stop_auto_draws_on_while_the_vote_is_contested() -> None:
    answers = ["42", "7", "42", "7", "9", *["42"] * 27]
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*answers)})
    result = asyncio.run(solve(SelfConsistency(n=32, stop="auto", lookahead=0), PROBLEM, backend))
    samples = result.meta["samples"]
    assert 5 < samples < 32 and result.answer == "42"
    # it stopped at the first sample where the rule fires, and not before
    tally = _select.Tally()
    fired = []
    for i, a in enumerate(answers[:samples], 1):
        tally.add(a)
        if i >= 3:
            fired.append(_stop.should_stop("outcome", tally, [], 0.91, remaining=32 - i, epsilon=0.002))
    assert fired[-1] and not any(fired[:-1])
    assert backend.requests == 1 + samples - 3 and backend.completions_generated == samples


def test_outcome_rule_is_a_plain_option_too() -> None:
    backend = FakeBackend.scripted(by_prompt={"6 times 7": replies(*["42"] * 16)})
    sc = SelfConsistency(n=16, stop="outcome", window=2, threshold=0.99, epsilon=0.0)
    result = asyncio.run(solve(sc, PROBLEM, backend))
    k = result.meta["samples"]
    assert k % 2 == 0 and 2 < k < 16
    assert _stop.outcome([k], 16 - k).same >= 0.99 > _stop.outcome([k - 2], 18 - k).same
