"""Monte Carlo tree search over reasoning steps: UCT selection, expansion by sampling ``samples``
next steps, a leaf valued by the evaluator (``leaf: evaluate``) or by a rollout to a finished
solution scored by the verifiers (``leaf: rollout``), and backpropagation of that value up the
path. ``parallel`` rollouts of one problem run at once: a path being explored carries a virtual
loss (counted as visited with value 0) so concurrent selections spread over the tree instead of
piling onto one path. The budget is ``rollouts`` (or a token limit, which ends the search with the
best path so far). The answer is the best finished path (rollouts included) or a value-weighted
vote (``select``). Built on the search core (:mod:`tts.strategies._search`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from tts.context import Context
from tts.sampling import Count
from tts.strategies._search import SearchOptions, SearchStrategy
from tts.types import Problem, Result

__all__ = ["MCTS", "MCTSOptions"]


class MCTSOptions(SearchOptions):
    rollouts: Count = 16
    """Selections from the root (the search budget)."""
    parallel: Count = 4
    """Rollouts in flight at once within one problem (virtual loss keeps them apart)."""
    samples: Count = 3
    """Children sampled when a node is expanded."""
    exploration: float = Field(default=1.0, ge=0)
    """UCT's exploration constant c in ``Q + c * sqrt(ln N_parent / N)``."""
    virtual_loss: float = Field(default=1.0, ge=0)
    """Visits a rollout in flight adds to its path (with no value) until it backs up."""
    leaf: Literal["evaluate", "rollout"] = "evaluate"
    """A new leaf's value: the evaluator's score of it, or a verifier's score of a rollout from it."""
    select: Literal["best", "vote"] = "best"


class MCTS(SearchStrategy[MCTSOptions]):
    """UCT search with parallel rollouts under virtual loss (see the module docstring)."""

    name: ClassVar[str] = "mcts"
    Options = MCTSOptions

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        s = self.search(problem, ctx)
        stats: dict[int, list[float]] = {}  # node -> [visits, total value, virtual visits]
        expanding: dict[int, asyncio.Future[list[list[int]]]] = {}

        def stat(n: int) -> list[float]:
            return stats.setdefault(n, [0.0, 0.0, 0.0])

        def uct(parent: int, child: int) -> float:
            visits, total, virtual = stat(child)
            seen = visits + virtual
            if seen == 0:
                return math.inf
            parent_seen = stat(parent)[0] + stat(parent)[2]
            return total / seen + o.exploration * math.sqrt(math.log(max(parent_seen, 1.0)) / seen)

        async def children(n: int) -> list[int]:
            if n not in expanding:  # one expansion per node, shared by rollouts that meet there
                expanding[n] = asyncio.ensure_future(s.expand([n], o.samples))
            return [k for ks in await asyncio.shield(expanding[n]) for k in ks]

        async def rollout() -> None:
            path, n = [0], 0
            stat(0)[2] += o.virtual_loss
            while not s.node(n)["terminal"]:
                kids = await children(n)
                if not kids:
                    break
                n = max(kids, key=lambda k: (uct(path[-1], k), -k))
                path.append(n)
                stat(n)[2] += o.virtual_loss
                if stat(n)[0] == 0:
                    break  # a new leaf
            leaf = n
            if o.leaf == "rollout" and not s.node(n)["terminal"]:
                (done,) = await s.complete([n])
                leaf = done if done is not None else n
            if s.node(leaf)["score"] is None:
                await s.evaluate([leaf])
            value = s.node(leaf)["value"] or 0.0
            for m in path:
                st = stat(m)
                st[0], st[1], st[2] = st[0] + 1, st[1] + value, st[2] - o.virtual_loss
                s.node(m)["visits"], s.node(m)["total"] = int(st[0]), st[1]

        async def body() -> None:
            started, running = 0, set[asyncio.Future[None]]()
            try:
                while started < o.rollouts or running:
                    while started < o.rollouts and len(running) < o.parallel:
                        running.add(asyncio.ensure_future(rollout()))
                        started += 1
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    errors = [exc for task in done if (exc := task.exception()) is not None]
                    if errors:
                        raise errors[0]  # a spent budget or an engine error ends the search
            finally:
                left: list[asyncio.Future[Any]] = [*running, *expanding.values()]
                for task in left:
                    if task.done() and not task.cancelled():
                        task.exception()  # retrieved: one error is enough
                    task.cancel()

        return await s.run(body, o.select)
