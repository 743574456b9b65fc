"""Study curves follow the strategies' own selection rules (tts.strategies._select), ties included:
a property test on random inputs, and studies whose last curve point is the strategy as it ran."""

from __future__ import annotations

import itertools
import math
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from pydantic import BaseModel, ConfigDict

from tts.registry import REGISTRY
from tts.strategies import _select
from tts.study import StudyRunner, load_study
from tts.study.analysis import compute_metrics
from tts.study.curves import candidates_of, curves, select_winners, subsample_problem, vote_weight
from tts.study.store import Store
from tts.types import Candidate, Score

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="hypothesis-"))  # its caches go to a temporary folder, not the checkout

KEYS = (None, "", "a", "b", "c", "d")
SCORES = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, 0.5, 1.0, -1.0, 0.1, 0.2, 0.3, 0.6]),
    st.floats(-1e3, 1e3, allow_nan=False),
)


@st.composite
def stored_samples(draw: Any) -> tuple[list[dict[str, Any]], str]:
    """One problem's sample rows as the store holds them, and what scores them."""
    n = draw(st.integers(1, 9))
    right = {k: draw(st.booleans()) for k in KEYS if k}
    rows = []
    for i in range(n):
        key = draw(st.sampled_from(KEYS))
        rows.append(
            {
                "idx": i,
                "answer": key,
                "key": key,
                "correct": right.get(key or "", False),
                "score": draw(SCORES),
                "passed": draw(st.sampled_from([None, 0, 1])),
                "logprob": draw(st.one_of(st.none(), st.floats(-5, 0))),
            }
        )
    return rows, draw(st.sampled_from(["score", "logprob"]))


def _code(candidates: list[Candidate], index: int | None) -> int:
    """The answer code (order of first appearance of non-empty keys) of a picked candidate."""
    if index is None:
        return -1
    return list(_select.group(candidates)).index(candidates[index].key)


@settings(max_examples=300, deadline=None, database=None)
@given(stored_samples(), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_vectorised_curves_pick_what_the_selection_module_picks(
    problem: tuple[list[dict[str, Any]], str], subsets: int, seed: int
) -> None:
    rows, kind = problem
    cands = candidates_of(rows, kind)
    # what a strategy holds: the stored key, and the score (verifier's, with pass/fail, or exp(mean logprob))
    for c, r in zip(cands, rows, strict=True):
        assert c.key == r["key"]
        if kind == "score":
            assert c.scores == (
                [Score(r["score"], None if r["passed"] is None else bool(r["passed"]))]
                if r["score"] is not None
                else []
            )
        else:
            assert c.scores == ([Score(math.exp(r["logprob"]))] if r["logprob"] is not None else [])
    weights = [vote_weight(c) for c in cands]
    order = list(_select.group(cands))
    keys = np.array([order.index(c.key) if c.key else -1 for c in cands], dtype=np.int64)
    usable = [_select.usable_score(c) for c in cands]
    scores = np.array([math.nan if v is None else v for v in usable])
    perms = np.random.default_rng(seed).permuted(np.tile(np.arange(len(rows)), (subsets, 1)), axis=1)
    found = select_winners(keys, perms, len(rows), weights=np.array(weights), scores=scores)
    for s in range(subsets):
        for j in range(len(rows)):
            subset = sorted(perms[s, : j + 1])  # a strategy sees its samples in the order drawn
            sub = [cands[i] for i in subset]
            expected = {
                "majority": _select.majority(sub),
                "weighted": _select.weighted_vote(sub, [weights[i] for i in subset]),
                "best_of_n": _select.best_score(sub, fallback="majority"),
            }
            for method, pick in expected.items():
                picked = found[method][s, j]
                assert picked == (-1 if pick is None else keys[subset[pick]]), (method, s, j)


def test_vote_totals_are_summed_in_sample_order_as_the_strategy_sums_them() -> None:
    # b: 0.6; a: 0.1 + 0.2 + 0.3, which is 0.6000000000000001 in sample order but 0.6 (a tie, won by
    # b, seen first) when summed in the order 0.3, 0.2, 0.1
    cands = [
        Candidate(text="", answer=k, key=k, scores=[Score(w)])
        for k, w in (("b", 0.6), ("a", 0.1), ("a", 0.2), ("a", 0.3))
    ]
    weights = [vote_weight(c) for c in cands]
    assert _select.weighted_vote(cands, weights) == 3  # the highest-weight "a"
    perms = np.array([list(p) for p in itertools.permutations(range(4))])
    found = select_winners(np.array([0, 1, 1, 1]), perms, 4, weights=np.array(weights))
    assert (found["weighted"][:, 3] == 1).all()


def test_best_of_n_ties_go_to_the_earliest_sample_as_in_the_strategy() -> None:
    # two answers tie on the top score; the majority holds the later one: the earliest sample wins
    rows = [
        {"answer": k, "key": k, "score": v, "passed": None, "logprob": None, "correct": k == "a"}
        for k, v in (("a", 1.0), ("b", 1.0), ("b", 0.5))
    ]
    cands = candidates_of(rows, "score")
    assert _select.best_score(cands) == 0
    out = subsample_problem(cands, [True, False], 3, 50, np.random.default_rng(0))
    assert out["best_of_n"][2] == 1.0 and out["majority"][2] == 0.0
    # every candidate fails its check: best-of-n falls back to the majority, as the strategy does
    failed = [{**r, "passed": 0} for r in rows]
    cands = candidates_of(failed, "score")
    assert _select.best_score(cands) == 1
    assert subsample_problem(cands, [True, False], 3, 50, np.random.default_rng(0))["best_of_n"][2] == 0.0


def _study(tmp_path: Path, strategy: str, n: int = 8) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: ties
        dataset: {{name: add2, limit: 40}}
        backend: {{name: fake, oracle: {{p_correct: [0.2, 0.4, 0.6], length: [10, 30]}}}}
        pipelines: [{{label: s, strategy: {strategy}}}]
        n_values: [{n}]
        out: {tmp_path / "out"}
        report: false
        allocation: null
        """).lstrip()
    )
    return path


class TiedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool | None = None


class Tied:
    """Scores every candidate 1.0: all tie (``passed: false`` fails them all, so best-of-N votes)."""

    name = "tied"
    Options = TiedOptions

    def __init__(self, options: TiedOptions | None = None, **kw: Any) -> None:
        self.options = options or TiedOptions(**kw)

    async def score(self, problem: Any, candidates: Any, ctx: Any = None) -> list[Score]:
        return [Score(1.0, self.options.passed) for _ in candidates]


@pytest.fixture
def tied(monkeypatch: pytest.MonkeyPatch) -> None:
    REGISTRY.get("verifier", "math")  # load the built-ins first
    monkeypatch.setitem(REGISTRY._items["verifier"], "tied", Tied)


@pytest.mark.usefixtures("tied")
@pytest.mark.parametrize(
    ("strategy", "method"),
    [
        ("{name: self_consistency}", "majority"),
        ("{name: self_consistency, weight: mean_logprob}", "weighted"),
        ("{name: best_of_n, verifiers: [math]}", "best_of_n"),
        ("{name: best_of_n, verifiers: [tied]}", "best_of_n"),
        ("{name: best_of_n, verifiers: [{name: tied, passed: false}]}", "best_of_n"),
    ],
)
def test_last_curve_point_is_the_strategy_as_it_ran(tmp_path: Path, strategy: str, method: str) -> None:
    """At n = N every subset is all the samples in the order drawn: the curve must give, problem by
    problem, exactly what the strategy chose."""
    study = load_study(_study(tmp_path, strategy))
    StudyRunner(study).run()
    with Store(study.store_path, readonly=True) as store:
        found = {c.method: c for c in curves(store, subsets=3)}
        ran = {r["problem_id"]: float(r["correct"]) for r in store.results()}
        metrics = compute_metrics(store)[0]
    curve = found[method]
    assert curve.n[-1] == 8
    assert dict(zip(curve.problem_ids, curve.per_problem[:, -1].tolist(), strict=True)) == ran
    assert curve.accuracy[-1] == pytest.approx(metrics.accuracy)
    majority = found["majority"].per_problem[:, -1].tolist()
    if "passed" in strategy:  # every candidate fails: best-of-N is the vote
        assert curve.per_problem[:, -1].tolist() == majority
    elif "tied" in strategy:  # every score ties: the first sample, which the vote is not
        assert curve.per_problem[:, -1].tolist() != majority
