"""Few-shot (and zero-shot) chain of thought from editable templates, with diverse sampling.

:class:`FewShotProposer` renders a prompt template (:mod:`tts.prompts`) with in-context examples
chosen for the question (the first k, k at random with a seed, or the k nearest by embedding) and
samples n completions. It can spread the n samples over several temperatures, or give each sample
its own seed, so one problem's samples disagree more often (diverse sampling).

:class:`FewShot` is the strategy: one answer (n=1), or a plurality vote over n samples.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tts.context import Context
from tts.prompts import (
    Example,
    ExampleSelector,
    PromptTemplate,
    SelectKind,
    load_examples,
    make_selector,
    resolve_prompt,
)
from tts.sampling import SamplingParams
from tts.strategies import vote
from tts.types import Candidate, Problem, Request, Result

__all__ = ["FewShot", "FewShotOptions", "FewShotProposer", "FewShotProposerOptions"]


class FewShotProposerOptions(BaseModel):
    """How to prompt and sample. Configuration only: files are read by the proposer, on first use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "cot"
    """``cot``/``direct`` (the task's templates), a shipped template name (``few_shot``,
    ``step_by_step``, ...), a ``.yaml``/``.txt`` template path, or a literal template with
    ``{question}``."""
    examples: str | None = None
    """Where in-context examples come from: a JSONL/CSV path or a dataset spec (``gsm8k``); ``None``:
    the template's own examples (none for zero-shot)."""
    shots: int = Field(default=4, ge=0)
    """Examples per prompt (0: zero-shot)."""
    select: SelectKind = "random"
    """``first`` (a fixed prefix), ``random``, or ``nearest`` by embedding (retrieval extra)."""
    seed: int | None = None
    """Seed of ``random`` selection: the same examples for every problem. ``None``: drawn per problem
    from the context's generator (reproducible with the run's seed)."""
    split: str = "train"
    """Hub split the examples come from (local benchmark files have one split)."""
    data_dir: str | None = None
    """Folder of local benchmark files for ``examples`` (default: ``TTS_DATA_DIR``)."""
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=256)
    temperatures: tuple[float, ...] = ()
    """Diverse sampling: spread the n samples round-robin over these temperatures (one request per
    temperature). Empty: every sample at ``sampling.temperature``."""
    distinct_seeds: bool = False
    """Diverse sampling: each sample is its own request with its own seed (base seed: ``seed``, else
    the context's, plus the sample index), reproducible and never merged; costs one prefill per
    sample where the backend has no prefix cache."""
    chat: bool = True
    priority: int = 0

    @field_validator("temperatures", mode="before")
    @classmethod
    def _tuple(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [t for t in v if t <= 0]
        if bad:
            raise ValueError(f"temperatures must all be > 0 (greedy gives one answer), got {bad[0]}.")
        return v


class FewShotProposer:
    """Candidates from a template with chosen examples; see the module docstring."""

    def __init__(self, options: FewShotProposerOptions | None = None, *,
                 selector: ExampleSelector | None = None) -> None:
        self.options = options or FewShotProposerOptions()
        self.selector = selector or make_selector(self.options.select)
        self._templates: dict[Any, PromptTemplate] = {}
        self._pool: tuple[Example, ...] | None = None

    def template(self, ctx: Context) -> PromptTemplate:
        """The resolved template (``cot``/``direct`` depend on the task; cached per task)."""
        key = ctx.task if self.options.prompt in ("cot", "direct") else None
        if key not in self._templates:
            self._templates[key] = resolve_prompt(self.options.prompt, ctx.task)
        return self._templates[key]

    def pool(self, ctx: Context) -> tuple[Example, ...]:
        """Examples to choose from: the ``examples`` source (read once), else the template's."""
        o = self.options
        if o.examples is None:
            return self.template(ctx).examples
        if self._pool is None:
            self._pool = tuple(load_examples(o.examples, split=o.split, data_dir=o.data_dir))
        return self._pool

    async def examples(self, problem: Problem, ctx: Context) -> list[Example]:
        """The examples for this problem (chosen off the event loop: embedding may take a while)."""
        o = self.options
        pool = self.pool(ctx)
        if o.shots == 0 or not pool:
            return []
        rng = random.Random(o.seed) if o.seed is not None else ctx.rng
        return await asyncio.to_thread(self.selector.select, problem.question, pool, o.shots, rng)

    def plan(self, n: int, ctx: Context) -> list[SamplingParams]:
        """The sampling parameters of each request for n samples (diverse sampling lives here)."""
        o = self.options
        temps = o.temperatures or (o.sampling.temperature,)
        if o.distinct_seeds:
            base = o.seed if o.seed is not None else (ctx.seed or 0)
            return [o.sampling.replace(n=1, temperature=temps[i % len(temps)], seed=base + i)
                    for i in range(n)]
        if not o.temperatures:
            return [o.sampling.with_n(n)]
        counts = [n // len(temps) + (1 if i < n % len(temps) else 0) for i in range(len(temps))]
        return [o.sampling.replace(n=c, temperature=t) for t, c in zip(temps, counts, strict=True) if c]

    async def requests(self, problem: Problem, ctx: Context, n: int) -> list[Request]:
        o = self.options
        template = self.template(ctx)
        shots = await self.examples(problem, ctx)
        return [template.request(params, shots, chat=o.chat, priority=o.priority, question=problem.question,
                                 instruction=ctx.task.instruction) for params in self.plan(n, ctx)]

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]:
        requests = await self.requests(problem, ctx, n)
        out = []
        for request, completions in zip(requests, await ctx.generate_many(requests), strict=True):
            for c in completions:
                cand = ctx.parse(c)
                cand.meta["temperature"] = request.params.temperature
                if request.params.seed is not None:
                    cand.meta["seed"] = request.params.seed
                out.append(cand)
        return out


class FewShotOptions(FewShotProposerOptions):
    n: int = Field(default=1, ge=1)
    """Samples; with n > 1 the plurality answer wins (ties: the earliest)."""
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=256)
    """Greedy by default (n=1); set temperature > 0 (or ``temperatures``) for n > 1."""

    @model_validator(mode="after")
    def _sampled(self) -> FewShotOptions:
        if self.n > 1 and self.sampling.greedy and not self.temperatures:
            raise ValueError(f"sampling.temperature must be > 0 when n > 1, got {self.sampling.temperature}; "
                             "or set temperatures.")
        return self


class FewShot:
    """Chain of thought with in-context examples chosen per question; n > 1 votes."""

    name: ClassVar[str] = "few_shot"
    Options = FewShotOptions

    def __init__(self, options: FewShotOptions | None = None, *, selector: ExampleSelector | None = None,
                 **kw: object) -> None:
        self.options = options or FewShotOptions(**kw)  # type: ignore[arg-type]
        fields = {f: getattr(self.options, f) for f in FewShotProposerOptions.model_fields}
        self.proposer = FewShotProposer(FewShotProposerOptions(**fields), selector=selector)

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, n=self.options.n)
        groups = vote.group(candidates)
        winner = vote.plurality(groups)
        return Result.choose(problem, candidates, winner=groups[winner][0] if winner is not None else None,
                             votes={k: len(v) for k, v in groups.items()})
