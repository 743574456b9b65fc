"""Particle filtering over reasoning steps (Puri et al., 2025; the method its_hub ships): sequential
Monte Carlo with ``particles`` partial paths. Each step extends every unfinished particle by one
sampled step, weighs it by its process-reward value (``aggregate`` of its step scores) and
resamples all particles in proportion to ``exp(value / temperature)``: strong paths multiply,
weak ones die out (their nodes are pruned). Finished particles carry on as they are until every
particle has finished; the answer is the best finished path or a value-weighted vote (``select``).
Built on the search core (:mod:`tts.strategies._search`); resampling uses the problem's generator.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from tts.context import Context
from tts.sampling import Count
from tts.strategies._search import SearchOptions, SearchStrategy
from tts.types import Problem, Result

__all__ = ["ParticleFiltering", "ParticleFilteringOptions"]


class ParticleFilteringOptions(SearchOptions):
    particles: Count = 8
    """Partial paths carried from step to step."""
    temperature: float = Field(default=1.0, gt=0)
    """Resampling weights are ``exp(value / temperature)``: lower concentrates on the best paths."""
    select: Literal["best", "vote"] = "best"


class ParticleFiltering(SearchStrategy[ParticleFilteringOptions]):
    """Sequential Monte Carlo over steps with verifier weights (see the module docstring)."""

    name: ClassVar[str] = "particle_filtering"
    Options = ParticleFilteringOptions

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        s = self.search(problem, ctx)

        async def body() -> None:
            particles = [0] * o.particles
            while s.open(particles):
                live = s.open(particles)
                kids = await s.expand(live, 1)
                new = iter(k[0] if k else None for k in kids)
                moved = [n if s.node(n)["terminal"] else next(new) for n in particles]
                particles = [p for p in moved if p is not None]
                await s.evaluate(sorted({p for p in particles if s.node(p)["score"] is None}))
                if not particles:
                    return
                values = [s.node(p)["value"] or 0.0 for p in particles]
                weights = [math.exp((v - max(values)) / o.temperature) for v in values]
                chosen = ctx.rng.choices(particles, weights=weights, k=o.particles)
                s.prune([p for p in set(particles) - set(chosen) if not s.node(p)["terminal"]])
                particles = sorted(chosen)

        return await s.run(body, o.select)
