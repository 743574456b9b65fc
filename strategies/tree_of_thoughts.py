"""Tree of thoughts (Yao et al., 2023): search over reasoning steps, states judged by the model.

- ``search: bfs``: each level expands every kept state (``samples`` continuations or proposals
  each), scores the new states and keeps the ``breadth`` best (and, with ``threshold``, only those
  worth at least that); finished paths stay candidates. All kept states of a level go to the
  scheduler at once.
- ``search: dfs``: the best child first, children worth less than ``threshold`` pruned,
  backtracking when a subtree is exhausted, until a path passes (a finished path no verifier
  failed) or ``max_expansions`` nodes were expanded.

When no path finished (every state pruned), a prompt set with an answer step (``game24``) writes
the answer from the best state reached, so a weak model's search still ends in an answer.

Generators ``sample`` / ``propose``, evaluators ``value`` / ``vote`` / ``verifier`` and the tree
itself live in the search core (:mod:`tts.strategies._search`); ``prompts: game24`` is the paper's
Game of 24 setup.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from tts.context import Context
from tts.sampling import Count
from tts.strategies._search import SearchOptions, SearchStrategy
from tts.types import Problem, Result

__all__ = ["TreeOfThoughts", "TreeOfThoughtsOptions"]


class TreeOfThoughtsOptions(SearchOptions):
    search: Literal["bfs", "dfs"] = "bfs"
    """``bfs``: level by level, the ``breadth`` best kept; ``dfs``: best child first, with backtracking."""
    evaluator: Literal["value", "vote", "verifier"] = "value"
    """How states are judged: the ``value`` prompt (sure / likely / impossible), a ``vote``, or verifiers."""
    breadth: Count = 5
    """States kept per level (BFS's b)."""
    samples: Count = 5
    """Continuations (``sample``) or proposals kept (``propose``) per expanded state."""
    max_depth: Count = 4
    threshold: float | None = None
    """States worth less are pruned (BFS: besides the breadth cut; DFS: the backtracking rule)."""
    max_expansions: Count = 100
    """DFS: most states expanded before giving up."""


class TreeOfThoughts(SearchStrategy[TreeOfThoughtsOptions]):
    """BFS or DFS over partial reasoning paths (see the module docstring)."""

    name: ClassVar[str] = "tree_of_thoughts"
    Options = TreeOfThoughtsOptions

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        s = self.search(problem, ctx)

        def worthy(nodes: list[int]) -> list[int]:
            low = [n for n in s.open(nodes) if o.threshold is not None and s.value(n) < o.threshold]
            s.prune(low)
            return [n for n in nodes if n not in low]

        async def bfs() -> None:
            frontier = [0]
            while frontier:
                kids = [k for ks in await s.expand(frontier, o.samples) for k in ks]
                await s.evaluate(kids)
                frontier = s.top(worthy(s.open(kids)), o.breadth)

        async def dfs(node: int, budget: list[int]) -> bool:
            if budget[0] >= o.max_expansions:
                return False
            budget[0] += 1
            (kids,) = await s.expand([node], o.samples)
            await s.evaluate(kids)
            for kid in sorted(worthy(kids), key=lambda n: (-s.value(n), n)):
                info = s.node(kid)
                if info["terminal"] and info["answer"] is not None and info.get("passed") is not False:
                    return True
                if info["terminal"]:
                    continue  # a failed answer stays a candidate
                if await dfs(kid, budget):
                    return True
                s.prune([kid], finished=False)  # backtrack: this subtree is exhausted
            return False

        async def body() -> None:
            if o.search == "bfs":
                await bfs()
            else:
                await dfs(0, [0])
            if not s.finished() and s.prompts.answer:  # no path finished: answer from the best state reached
                (kids,) = await s.expand([s.deepest()], 1, answer=True)
                await s.evaluate(kids)

        return await s.run(body)
