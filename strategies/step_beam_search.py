"""Step-level beam search: keep the ``beam_width`` best partial paths, each extended by ``n``
sampled steps, scored by a process reward model or any verifier (Snell et al., 2024). The beam
starts full (``beam_width`` copies of the root), so every step generates ``beam_width * n`` steps:
with ``beam_width * n`` equal to best-of-N's N, both spend the same tokens on a fixed-length path.

A path's value aggregates its step scores (``aggregate``: last, min, product, mean); with
``lookahead`` each candidate is rolled ``lookahead`` greedy steps further before it is scored (the
rollout is judged, not kept). Finished paths leave the beam (which shrinks by one for each) and
compete at the end. Not to be confused with ``beam`` (token-level beam decoding). The tree and
its mechanics are the search core's (:mod:`tts.strategies._search`).
"""

from __future__ import annotations

from typing import ClassVar

from tts.context import Context
from tts.sampling import Count, CountOrZero
from tts.strategies._search import SearchOptions, SearchStrategy
from tts.types import Problem, Result

__all__ = ["StepBeamSearch", "StepBeamSearchOptions"]


class StepBeamSearchOptions(SearchOptions):
    beam_width: Count = 4
    """Partial paths kept after each step."""
    n: Count = 4
    """Candidate next steps sampled per kept path."""
    lookahead: CountOrZero = 0
    """Greedy steps rolled out past each candidate before it is scored (0: score it as it is)."""


class StepBeamSearch(SearchStrategy[StepBeamSearchOptions]):
    """Beam search over reasoning steps, scored by verifiers (see the module docstring)."""

    name: ClassVar[str] = "step_beam_search"
    Options = StepBeamSearchOptions

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        s = self.search(problem, ctx)

        async def body() -> None:
            beams = [0] * o.beam_width  # the beam starts full, every path at the root
            while beams:
                kids = [k for ks in await s.expand(beams, o.n) for k in ks]
                await s.evaluate(kids, await s.lookahead(kids, o.lookahead) if o.lookahead else None)
                beams = s.top(s.open(kids), max(o.beam_width - len(s.finished()), 0))

        return await s.run(body)
