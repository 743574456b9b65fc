"""Diverse verifier tree search (Beeching et al., 2024): ``n // beam_width`` independent subtrees,
each greedy: every step it samples ``beam_width`` continuations of its one path and keeps the
best by the verifiers. Subtrees never share a path after the root, so the answers stay diverse;
the finished paths compete at the end (``select``: the best, or a value-weighted vote). All
subtrees of all problems expand together through the search core (:mod:`tts.strategies._search`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from tts.context import Context
from tts.sampling import Count
from tts.strategies._search import SearchOptions, SearchStrategy
from tts.types import Problem, Result

__all__ = ["DVTS", "DVTSOptions"]


class DVTSOptions(SearchOptions):
    n: Count = 16
    """Continuations per step over all subtrees (subtrees: ``n // beam_width``, at least one)."""
    beam_width: Count = 4
    """Continuations per subtree per step (the best is kept)."""
    select: Literal["best", "vote"] = "best"
    """The answer: the best finished path, or the answer with the most value over finished paths."""


class DVTS(SearchStrategy[DVTSOptions]):
    """Independent greedy subtrees under one verifier (see the module docstring)."""

    name: ClassVar[str] = "dvts"
    Options = DVTSOptions

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        s = self.search(problem, ctx)

        async def body() -> None:
            heads = [0] * max(o.n // o.beam_width, 1)  # every subtree starts at the root
            while heads:
                groups = await s.expand(heads, o.beam_width)
                await s.evaluate([k for ks in groups for k in ks])
                heads = [best for ks in groups if ks for best in s.top(ks, 1) if not s.node(best)["terminal"]]

        return await s.run(body, o.select)
