"""The step-level search core and the strategies on it (step beam search, DVTS, MCTS, particle
filtering, tree-of-thoughts budgets) on the fake backend: backend calls, tree shapes, priorities,
cancellation of pruned branches, budgets ending in ``status="cut"``, the tree in the trace."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence

import pytest

from tts import FakeBackend, Problem, run, solve
from tts.context import Context
from tts.limits import Limits
from tts.scheduler import Scheduler
from tts.strategies._search import Search, SearchOptions, aggregate
from tts.strategies.dvts import DVTS
from tts.strategies.mcts import MCTS
from tts.strategies.particle_filtering import ParticleFiltering
from tts.strategies.step_beam_search import StepBeamSearch
from tts.strategies.tree_of_thoughts import TreeOfThoughts
from tts.task import Task
from tts.types import Candidate, Request, Score

TASK = Task(answer_format="text")
PROBLEM = Problem("q", "Walk three steps.")
DEPTH = 3


class Walker:
    """One step per request: "sN-i good|bad"; the third step states an answer (1 if good, else 2)."""

    def __init__(self, p_good: float = 0.5) -> None:
        self.p_good = p_good
        self.count = 0
        self.prompts: list[str] = []

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        self.count += 1
        self.prompts.append(prompt)
        depth = prompt.split("assistant:", 1)[1].count("\n\n")
        good = rng.random() < self.p_good
        text = f"s{depth + 1}-{self.count} {'good' if good else 'bad'}"
        if depth + 1 >= DEPTH:
            text += f" The answer is {1 if good else 2}."
        return text, 4, None


class StepJudge:
    """A process verifier: each step is worth 1 when it says good, else 0.1."""

    name = "judge"

    def __init__(self) -> None:
        self.calls = 0
        self.judged = 0

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: object = None) -> list[Score]:
        self.calls += 1
        self.judged += len(candidates)
        out = []
        for c in candidates:
            steps = tuple(1.0 if "good" in s else 0.1 for s in c.steps or [c.text])
            out.append(Score(steps[-1], passed=None, verifier=self.name, steps=steps))
        return out


def depths(result) -> list[int]:  # type: ignore[no-untyped-def]
    g = result.trace.graph
    top = max(g.nodes[n]["depth"] for n in g.nodes)
    return [sum(1 for n in g.nodes if g.nodes[n]["depth"] == d) for d in range(top + 1)]


def test_aggregate_rules() -> None:
    assert aggregate([0.5, 0.2, 0.8], "last") == 0.8 and aggregate([0.5, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.5, 0.2], "product") == pytest.approx(0.1) and aggregate([0.5, 0.2], "mean") == 0.35


def test_step_beam_search_keeps_the_beam_and_scores_every_candidate() -> None:
    model, judge = Walker(), StepJudge()
    backend = FakeBackend(model)
    result = asyncio.run(
        solve(StepBeamSearch(beam_width=2, n=3, max_depth=DEPTH), PROBLEM, backend, task=TASK, verifier=judge)
    )
    assert result.error is None and result.status == "ok"
    # the beam starts full: root x2 -> 6 (one merged n=6 engine request); two kept beams -> 6;
    # two kept beams -> 6 finished (the third step states the answer)
    assert depths(result) == [1, 6, 6, 6]
    assert backend.requests == 1 + 2 + 2 and backend.completions_generated == 18 == model.count
    assert judge.calls == 3 and judge.judged == 18 and result.usage.verifier_calls == 18
    g = result.trace.graph
    expanded = [n for n in g.nodes if g.out_degree(n)]
    assert all(not g.nodes[n]["pruned"] for n in expanded)
    assert sum(g.nodes[n]["pruned"] for n in g.nodes) == 4 + 4  # the beam cut at depths 1 and 2
    best = max((n for n in g.nodes if g.nodes[n]["terminal"]), key=lambda n: (g.nodes[n]["value"], -n))
    assert result.answer == g.nodes[best]["answer"] and len(result.candidates) == 6


def test_step_requests_share_the_prefix_and_deeper_is_served_first() -> None:
    backend = FakeBackend(Walker())
    result = asyncio.run(
        solve(StepBeamSearch(beam_width=2, n=2, max_depth=DEPTH), PROBLEM, backend, task=TASK, verifier=StepJudge())
    )
    events = [e for e in result.trace.events if e.kind == "generate"]
    for e in events:
        assert e.request is not None
        depth = e.request.assistant_prefix.count("\n\n")
        assert e.request.priority == -depth and e.request.params.stop == ("\n\n",) and e.request.params.n == 2
    # siblings' requests differ only after the shared prompt: the same rendered prefix, token for token
    rendered = [e.completions[0].prompt_text for e in events]
    assert all(r.startswith(rendered[0].split("assistant:")[0]) for r in rendered)


def test_lookahead_rolls_greedy_steps_that_are_judged_not_kept() -> None:
    model, judge = Walker(), StepJudge()
    backend = FakeBackend(model)
    result = asyncio.run(
        solve(
            StepBeamSearch(beam_width=1, n=2, lookahead=1, max_depth=DEPTH), PROBLEM, backend, task=TASK, verifier=judge
        )
    )
    # depth 1: 2 candidates + 2 greedy lookaheads; depth 2: 2 + 2; depth 3: 2 finished (no lookahead)
    assert model.count == 10 and depths(result) == [1, 2, 2, 2]
    assert result.trace.graph.out_degree(0) == 2
    greedy = [e for e in result.trace.events if e.request is not None and e.request.params.temperature == 0.0]
    assert len(greedy) == 4


def test_dvts_grows_independent_greedy_subtrees() -> None:
    model, judge = Walker(), StepJudge()
    backend = FakeBackend(model)
    result = asyncio.run(solve(DVTS(n=6, beam_width=3, max_depth=DEPTH), PROBLEM, backend, task=TASK, verifier=judge))
    g = result.trace.graph
    # two subtrees of three samples per step; the root's two requests are one n=6 engine request
    assert depths(result) == [1, 6, 6, 6]
    assert backend.requests == 1 + 2 + 2 and model.count == 18
    for d in (1, 2):  # greedy: one kept node per subtree per level
        kept = [n for n in g.nodes if g.nodes[n]["depth"] == d and not g.nodes[n]["pruned"]]
        assert len(kept) == 2 and all(g.out_degree(n) == 3 for n in kept)
    assert len(result.candidates) == 2  # one finished path per subtree


def test_particle_filtering_resamples_by_weight() -> None:
    model, judge = Walker(p_good=0.3), StepJudge()
    backend = FakeBackend(model)
    strategy = ParticleFiltering(particles=4, temperature=0.1, max_depth=DEPTH)
    result = run(strategy, [PROBLEM], backend, task=TASK, verifier=judge, seed=3).results[0]
    assert result.error is None
    assert model.count == 12  # four particles, one step each, three steps
    g = result.trace.graph
    # survivors of each resampling are the parents of the next level's nodes
    for d in (1, 2):
        level = [n for n in g.nodes if g.nodes[n]["depth"] == d]
        parents = {next(g.predecessors(n)) for n in g.nodes if g.nodes[n]["depth"] == d + 1}
        assert parents <= set(level)
        assert all(g.nodes[n]["pruned"] for n in set(level) - parents)
        # with temperature 0.1, the best value outweighs a tenth of it by e^9: only the best survive
        best = max(g.nodes[n]["value"] for n in level)
        assert all(g.nodes[n]["value"] == best for n in parents)
    again = run(strategy, [PROBLEM], FakeBackend(Walker(p_good=0.3)), task=TASK, verifier=StepJudge(), seed=3).results[
        0
    ]
    assert again.answer == result.answer and depths(again) == depths(result)


def test_mcts_runs_parallel_rollouts_with_virtual_loss() -> None:
    model, judge = Walker(), StepJudge()
    backend = FakeBackend(model)
    result = asyncio.run(
        solve(MCTS(rollouts=8, parallel=4, samples=2, max_depth=DEPTH), PROBLEM, backend, task=TASK, verifier=judge)
    )
    assert result.error is None
    g = result.trace.graph
    assert g.nodes[0]["visits"] == 8
    # the four first rollouts wait on one root expansion, then spread over both children
    assert g.out_degree(0) == 2 and all(g.nodes[k]["visits"] >= 2 for k in g.successors(0))
    expansions = [n for n in g.nodes if g.out_degree(n)]
    assert backend.requests == len(expansions) <= 8
    assert max(backend.batch_sizes) >= 2  # sibling expansions went to the engine together
    for n in g.nodes:  # backpropagation: a node's visits are its children's plus its own leaf visits
        kids = sum(g.nodes[k].get("visits", 0) for k in g.successors(n))
        assert g.nodes[n].get("visits", 0) >= kids


def test_mcts_rollout_leaves_finish_and_are_verified() -> None:
    class Finisher(Walker):
        def reply(self, request, prompt, index, rng):  # type: ignore[no-untyped-def]
            if "\n\n" not in request.params.stop:
                self.count += 1
                return "s2 good\n\ns3 good The answer is 1.", 8, None
            return super().reply(request, prompt, index, rng)

    model, judge = Finisher(), StepJudge()
    result = asyncio.run(
        solve(
            MCTS(rollouts=4, parallel=2, samples=2, leaf="rollout", max_depth=DEPTH),
            PROBLEM,
            FakeBackend(model),
            task=TASK,
            verifier=judge,
        )
    )
    g = result.trace.graph
    rollouts = [n for n in g.nodes if g.nodes[n].get("rollout")]
    assert rollouts and all(g.nodes[n]["terminal"] and g.nodes[n]["score"] == 1.0 for n in rollouts)
    assert result.answer == "1"


def test_token_budget_cuts_the_search_with_its_best_path() -> None:
    model, judge = Walker(), StepJudge()
    backend = FakeBackend(model)
    strategy = TreeOfThoughts(evaluator="verifier", breadth=2, samples=3, max_depth=DEPTH)
    report = run(strategy, [PROBLEM], backend, task=TASK, verifier=judge, limits=Limits(max_completion_tokens=20))
    result = report.results[0]
    assert result.status == "cut" and result.error is None and result.ok
    assert result.usage.completion_tokens <= 20 + 4 * 2  # within one decode round of the limit
    assert result.candidates and result.winner is not None  # the best open path so far
    assert report.summary().cut_rate == 1.0


def test_pruning_cancels_queued_requests() -> None:
    async def go() -> tuple[Search, FakeBackend, Context]:
        backend = FakeBackend(Walker())
        ctx = Context(Scheduler(backend), TASK, problem=PROBLEM, verifier=StepJudge())
        s = Search(PROBLEM, ctx, SearchOptions(max_depth=DEPTH))
        a, b = s.add(0, "s1 good", 4), s.add(0, "s1 bad", 4)
        pending = asyncio.ensure_future(s.expand([a, b], 2))
        await asyncio.sleep(0)  # the requests are submitted, not yet sent
        s.prune([b])
        kids = await pending
        assert kids[1] == [] and len(kids[0]) == 2
        return s, backend, ctx

    s, backend, ctx = asyncio.run(go())
    assert backend.requests == 1 and ctx.usage.cancelled == 1 and ctx.usage.calls == 1
    assert s.node(2)["pruned"] and not s.node(1)["pruned"]
    notes = [e.note for e in ctx.trace.events if e.note]
    assert notes == ["Cancelled: request cancelled"]


def test_tree_is_exported_with_the_trace() -> None:
    result = asyncio.run(
        solve(
            StepBeamSearch(beam_width=2, n=2, max_depth=DEPTH),
            PROBLEM,
            FakeBackend(Walker()),
            task=TASK,
            verifier=StepJudge(),
        )
    )
    data = json.loads(json.dumps(result.to_dict()))["trace"]["tree"]
    assert len(data["nodes"]) == result.trace.graph.number_of_nodes() and data["edges"]
    node = next(n for n in data["nodes"] if n["id"] == 1)
    assert set(node) >= {"text", "score", "value", "pruned", "tokens", "terminal", "answer", "depth"}
    assert node["tokens"] == 4


def test_options_refuse_nonsense_in_one_line() -> None:
    from tts.errors import ConfigError

    with pytest.raises(ConfigError, match="prompts must be one of game24, generic"):
        TreeOfThoughts(prompts="chess")
    with pytest.raises(ConfigError, match="strategy step_beam_search: beam_width"):
        StepBeamSearch(beam_width=0)
    failed = asyncio.run(solve(StepBeamSearch(), PROBLEM, FakeBackend(Walker()), task=TASK))
    assert failed.status == "failed" and "step_beam_search needs a verifier" in (failed.error or "")


def test_mcts_budget_cancels_rollouts_in_flight() -> None:
    model = Walker()
    backend = FakeBackend(model)
    strategy = MCTS(rollouts=64, parallel=4, samples=2, max_depth=DEPTH)
    report = run(strategy, [PROBLEM], backend, task=TASK, verifier=StepJudge(), limits=Limits(max_completion_tokens=16))
    result = report.results[0]
    assert result.status == "cut" and result.error is None
    assert result.trace.graph.nodes[0]["visits"] < 64  # stopped long before its rollout budget
    assert result.usage.completion_tokens <= 16 + 4 * 2 * 4  # one round of parallel expansions past the limit
    assert result.candidates and result.winner is not None


def test_vote_evaluator_keeps_the_voted_state() -> None:
    class Voter(Walker):
        def reply(self, request, prompt, index, rng):  # type: ignore[no-untyped-def]
            if "Which partial solution is most promising?" in prompt:
                choices = prompt.count("Choice ")
                return f"The best choice is {choices}", 6, None  # always the last choice
            return super().reply(request, prompt, index, rng)

    model = Voter()
    backend = FakeBackend(model)
    strategy = TreeOfThoughts(evaluator="vote", value_samples=2, breadth=1, samples=3, max_depth=DEPTH)
    result = asyncio.run(solve(strategy, PROBLEM, backend, task=TASK))
    g = result.trace.graph
    for d in (1, 2):
        level = sorted(n for n in g.nodes if g.nodes[n]["depth"] == d)
        assert [g.nodes[n]["score"] for n in level] == [0.0, 0.0, 1.0]  # two votes of two for the last
        assert [g.out_degree(n) for n in level] == [0, 0, 3]
    # per level (the finished third one too: no verifier): one n=3 step request, one n=2 vote call
    assert backend.requests == 3 + 3 and backend.completions_generated == 9 + 3 * 2
    assert result.winner is not None and result.candidates[result.winner].meta["node"] == max(g.nodes)
