"""Game of 24 with tree-of-thoughts BFS, the paper's way, on a scripted backend that knows the
arithmetic: proposals are exact steps, values say "sure" only for numbers that can still make 24,
answers are written from the steps. Counts backend calls and checks the tree's shape."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from tts import FakeBackend, Problem, run
from tts.datasets import GAME24_TASK
from tts.strategies.tree_of_thoughts import TreeOfThoughts
from tts.types import Request
from tts.verifiers.program import Game24Verifier, check_game24, extract_expression

ROOT = Path(__file__).resolve().parents[1]
OPS = (("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b), ("/", lambda a, b: a / b))


def fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.2f}"


def moves(numbers: list[Fraction]) -> list[tuple[str, list[Fraction]]]:
    """Every step "a op b = c (left: ...)" on the numbers, larger operand first, in a fixed order."""
    out = []
    for i, j in itertools.combinations(range(len(numbers)), 2):
        a, b = sorted((numbers[i], numbers[j]), reverse=True)
        rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
        for sym, fn in OPS:
            if sym == "/" and (b == 0 or a % b):
                continue
            c = fn(a, b)
            left = sorted([*rest, c])
            out.append((f"{fmt(a)} {sym} {fmt(b)} = {fmt(c)} (left: {' '.join(fmt(x) for x in left)})", left))
    return out


def solvable(numbers: list[Fraction]) -> bool:
    if len(numbers) == 1:
        return numbers[0] == 24
    return any(solvable(left) for _, left in moves(numbers))


def nums(text: str) -> list[Fraction]:
    return [Fraction(x) for x in text.split()]


class Arithmetic:
    """Replies to the game24 prompt set's propose / value / answer prompts, exactly."""

    def __init__(self, proposals: int = 8) -> None:
        self.proposals = proposals
        self.seen = {"propose": 0, "value": 0, "answer": 0}

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        if "Possible next steps:" in prompt.rstrip()[-40:]:
            self.seen["propose"] += 1
            state = re.findall(r"Input: ([\d ]+)\n", prompt)[-1]
            lines = [m for m, _ in moves(nums(state))][: self.proposals]
            return "\n".join(lines), 8 * len(lines), None
        if prompt.startswith("user: Evaluate if given numbers"):
            self.seen["value"] += 1
            state = prompt.rstrip().removesuffix("assistant:").strip().splitlines()[-1]
            verdict = "sure" if solvable(nums(state)) else "impossible"
            return f"{state}\n{verdict}", 4, None
        self.seen["answer"] += 1
        return f"Answer: {self.expression(prompt)} = 24", 12, None

    @staticmethod
    def expression(prompt: str) -> str:
        """The expression the steps after the last "Steps:" build (each number stands for its history)."""
        numbers = re.findall(r"Input: ([\d ]+)\nSteps:", prompt)[-1].split()
        body = prompt.rsplit("Steps:\n", 1)[1]
        pool = list(numbers)
        exprs = {n: n for n in pool}
        built: list[tuple[str, str]] = [(n, n) for n in pool]
        for a, op, b, c in re.findall(r"(\S+) ([-+*/]) (\S+) = (\S+) \(left", body):
            ea = next(e for v, e in built if v == a)
            built.remove((a, ea))
            eb = next(e for v, e in built if v == b)
            built.remove((b, eb))
            built.append((c, f"({ea} {op} {eb})"))
        del exprs
        return built[-1][1] if len(built) == 1 else "0"


def tot(**kw: object) -> TreeOfThoughts:
    base: dict[str, object] = {
        "prompts": "game24",
        "generator": "propose",
        "evaluator": "value",
        "value_samples": 1,
        "breadth": 2,
        "samples": 8,
        "max_depth": 4,
        "verifiers": [{"name": "game24"}],
    }
    return TreeOfThoughts(**{**base, **kw})


def test_bfs_solves_the_paper_way_and_prunes_impossible_states() -> None:
    model = Arithmetic()
    backend = FakeBackend(model)
    problem = Problem("p", "Numbers: 4 4 6 8")
    report = run(tot(threshold=0.5), [problem], backend, task=GAME24_TASK)
    result = report.results[0]
    assert result.error is None and result.status == "ok"
    ok, why = check_game24(extract_expression(result.answer), [4, 4, 6, 8])
    assert ok, why
    g = result.trace.graph
    depth = {d: [n for n in g.nodes if g.nodes[n]["depth"] == d] for d in range(5)}
    # three proposal levels, then one answer per kept state
    assert len(depth[0]) == 1 and len(depth[4]) >= 1
    expanded = [n for n in g.nodes if g.out_degree(n) > 0]
    per_level = {d: [n for n in expanded if g.nodes[n]["depth"] == d] for d in range(4)}
    assert len(per_level[0]) == 1 and all(len(per_level[d]) <= 2 for d in (1, 2, 3))
    # every expanded state below the root was judged "sure" (20); impossible ones were pruned
    assert all(g.nodes[n]["score"] == 20.0 for d in (1, 2, 3) for n in per_level[d])
    impossible = [n for n in g.nodes if g.nodes[n]["score"] == 0.001]
    assert impossible and all(g.nodes[n]["pruned"] and g.out_degree(n) == 0 for n in impossible)
    # backend calls: one propose per expanded state at depths 0-2, one answer per kept state at
    # depth 3, one value request per distinct state of each level's new states
    props = sum(len(per_level[d]) for d in (0, 1, 2))
    assert model.seen["propose"] == props and model.seen["answer"] == len(per_level[3])
    distinct = sum(len({json.dumps(g.nodes[n]["text"].split("left: ")[-1]) for n in depth[d]}) for d in (1, 2, 3))
    assert model.seen["value"] == distinct
    assert backend.requests == props + len(per_level[3]) + distinct == result.usage.calls
    # the answers are checked by the Game24 rule, never evaluated as code
    finished = [n for n in g.nodes if g.nodes[n]["terminal"]]
    assert finished and all(g.nodes[n].get("passed") is True for n in finished)
    assert {n for n in depth[4]} == set(finished)


def test_tree_shape_is_exact_for_a_pinned_puzzle() -> None:
    model = Arithmetic(proposals=3)
    backend = FakeBackend(model)
    result = run(tot(samples=3, breadth=1), [Problem("p", "Numbers: 1 1 4 6")], backend, task=GAME24_TASK).results[0]
    g = result.trace.graph
    # 1 + 3 + 3 + 3 + 1 nodes: the root, three proposals per level for depths 1-3, one answer
    assert [sum(1 for n in g.nodes if g.nodes[n]["depth"] == d) for d in range(5)] == [1, 3, 3, 3, 1]
    assert [g.out_degree(n) for n in sorted(g.nodes) if g.out_degree(n)] == [3, 3, 3, 1]
    assert model.seen == {"propose": 3, "value": result.usage.calls - 4, "answer": 1}
    data = result.to_dict()["trace"]["tree"]
    assert len(data["nodes"]) == 11 and len(data["edges"]) == 10
    assert {"text", "score", "pruned", "tokens", "depth"} <= set(data["nodes"][1])
    json.dumps(data)


def test_rows_901_to_910_load_from_the_recipe_copy() -> None:
    from tts import load_dataset

    data = load_dataset(str(ROOT / "recipes" / "data" / "game24_901_1000.csv"))
    assert len(data.problems) == 100 and data.problems[0].question.startswith("Numbers: ")


@pytest.mark.parametrize("search", ["bfs", "dfs"])
def test_game24_verifier_prunes_wrong_answers(search: str) -> None:
    class Wrong(Arithmetic):
        @staticmethod
        def expression(prompt: str) -> str:
            return "4 * 6"  # uses two numbers only: the rule fails it

    model = Wrong()
    result = asyncio.run(_solve(tot(search=search, threshold=0.5), model))
    assert result.answer is not None and "4 * 6" in result.answer  # the best there is, failed
    assert result.candidates and all(c.scores[-1].passed is False for c in result.candidates)
    assert model.seen["answer"] == len(result.candidates) >= 2
    if search == "dfs":  # DFS backtracked through every "sure" state without finding a passing path
        g = result.trace.graph
        assert all(g.nodes[n]["pruned"] != g.nodes[n]["terminal"] for n in g.nodes if n != 0)


async def _solve(strategy: TreeOfThoughts, model: Arithmetic):  # type: ignore[no-untyped-def]
    from tts import solve

    return await solve(
        strategy, Problem("p", "Numbers: 4 4 6 8"), FakeBackend(model), task=GAME24_TASK, verifier=Game24Verifier()
    )
