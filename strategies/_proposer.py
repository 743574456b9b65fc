"""The proposer: how a strategy gets candidates. Few-shot with zero shots is the plain prompt.

:class:`FewShotProposer` (``few_shot``) renders a prompt template with :mod:`tts.prompts` (the one
template engine: ``{question}``, ``{instruction}`` and ``{examples}`` are filled, every other brace
such as ``\\boxed{}`` is text), with in-context examples chosen for the question (the first k, k at
random with a seed, or the k nearest by embedding), and samples n completions. It can spread the
n samples over several temperatures, or give each sample its own seed (diverse sampling).

**Assistant prefix.** Every request is sent with ``task.assistant_prefix`` followed by the
template's own prefix, and every reply is parsed with that same text in front of it
(:meth:`FewShotProposer.parse`), so the answer the model continues is the answer extracted.

**Components.** A strategy that samples holds ``proposer: ProposerSpec`` (``{name, options...}``),
built by :func:`build_proposer` through the registry: ``few_shot`` (here),
``program_of_thought`` (:mod:`._program`) and ``thinking`` (:mod:`._thinking`) all share this
shape and :class:`SampledOptions` (the strategy's own defaults merged under what the user writes;
the old top-level ``prompt``/``sampling``/... refused with the new shape;
:func:`check_sampled`: the one "temperature > 0 when n > 1" rule).

**Windows.** Besides ``propose(problem, ctx, n)``, a proposer gives ``drawer(problem, ctx)``: a
function ``(size, priority) -> Draw`` that starts ``size`` more samples now; a :class:`Draw` is
awaited for its candidates or cancelled (the scheduler then withdraws queued work and charges only
what was generated). Early stopping (:func:`tts.strategies._stop.sample_windows`) draws through it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tts.config.components import ProposerSpec, build_component
from tts.context import Context
from tts.errors import ConfigError
from tts.prompts import (
    Example,
    ExampleSelector,
    PromptTemplate,
    SelectKind,
    load_examples,
    make_selector,
    resolve_prompt,
)
from tts.sampling import CountOrZero, SamplingParams
from tts.strategies._select import drop_non_answer, task_placeholders
from tts.types import Candidate, Completion, Problem, Request

__all__ = [
    "Draw",
    "Drawer",
    "FewShotProposer",
    "FewShotProposerOptions",
    "ProposerSpec",
    "SampledOptions",
    "TaskDraw",
    "build_proposer",
    "check_sampled",
    "proposer",
    "proposer_fields",
]


# ------------------------------------------------------------------------------------ draws


class Draw:
    """Samples started now: ``await draw.result()`` for the candidates, ``draw.cancel()`` to withdraw."""

    def __init__(
        self, handles: list[Any], finish: Callable[[list[list[Completion]]], Awaitable[list[Candidate]]]
    ) -> None:
        self._handles = handles
        self._finish = finish

    async def result(self) -> list[Candidate]:
        return await self._finish([await h for h in self._handles])

    def cancel(self) -> None:
        for h in self._handles:
            h.cancel()


class TaskDraw(Draw):
    """A draw that is a running coroutine (several requests per sample, e.g. budget forcing)."""

    def __init__(self, coro: Awaitable[list[Candidate]]) -> None:
        self._task = asyncio.ensure_future(coro)

    async def result(self) -> list[Candidate]:
        return await self._task

    def cancel(self) -> None:
        self._task.cancel()


Drawer = Callable[[int, int], Draw]
"""``(size, priority) -> Draw``: starts ``size`` samples at ``priority``."""


# ------------------------------------------------------------------------------------ few-shot


class FewShotProposerOptions(BaseModel):
    """How to prompt and sample. Configuration only: files are read by the proposer, on first use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "cot"
    """``cot``/``direct`` (the task's templates), a shipped template name (``few_shot``,
    ``step_by_step``, ...), a ``.yaml``/``.txt`` template path, or a literal template with
    ``{question}`` (other braces, ``\\boxed{}``, are text)."""
    examples: str | None = None
    """Where in-context examples come from: a JSONL/CSV path or a dataset spec (``gsm8k``); ``None``:
    the template's own examples."""
    shots: CountOrZero = 0
    """Examples per prompt (0: zero-shot, the plain prompt)."""
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
    the context's, plus the sample index), reproducible and never merged."""
    chat: bool = True
    """Send chat messages (rendered with the model's chat template) rather than raw text."""
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

    name: ClassVar[str] = "few_shot"
    Options: ClassVar[type[FewShotProposerOptions]] = FewShotProposerOptions

    def __init__(
        self, options: FewShotProposerOptions | None = None, *, selector: ExampleSelector | None = None, **kw: Any
    ) -> None:
        from tts.errors import parse_options

        self.options = options or parse_options(self.Options, kw, where=f"proposer {self.name}")
        self.selector = selector or make_selector(self.options.select)
        self._templates: dict[Any, PromptTemplate] = {}
        self._last: tuple[Any, PromptTemplate] | None = None
        self._last_plan: tuple[SamplingParams, int, SamplingParams] | None = None
        self._pool: tuple[Example, ...] | None = None

    @property
    def greedy(self) -> bool:
        """Whether every sample is the same (temperature 0 and no diverse temperatures)."""
        return self.options.sampling.greedy and not self.options.temperatures

    def with_logprobs(self) -> None:
        """Ask for chosen-token log-probabilities (weighted votes and confidence filters need them)."""
        if self.options.sampling.logprobs is None:
            self.options = self.options.model_copy(update={"sampling": self.options.sampling.replace(logprobs=0)})

    def template(self, ctx: Context) -> PromptTemplate:
        """The resolved template (``cot``/``direct`` depend on the task; cached per task)."""
        task = ctx.task
        last = self._last  # the common case: the same task as the previous call (no hashing of the task)
        if last is not None and last[0] is task:
            return last[1]
        key = task if self.options.prompt in ("cot", "direct") else None
        if key not in self._templates:
            self._templates[key] = resolve_prompt(self.options.prompt, task)
        self._last = (task, self._templates[key])
        return self._last[1]

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
        pool = self.pool(ctx) if o.shots else ()
        if not pool:
            return []
        rng = random.Random(o.seed) if o.seed is not None else ctx.rng
        return await asyncio.to_thread(self.selector.select, problem.question, pool, o.shots, rng)

    def plan(self, n: int, ctx: Context) -> list[SamplingParams]:
        """The sampling parameters of each request for n samples (diverse sampling lives here)."""
        o = self.options
        temps = o.temperatures or (o.sampling.temperature,)
        if o.distinct_seeds:
            base = o.seed if o.seed is not None else (ctx.seed or 0)
            return [o.sampling.replace(n=1, temperature=temps[i % len(temps)], seed=base + i) for i in range(n)]
        if not o.temperatures:
            last = self._last_plan  # the common case: the same n as the previous problem (no copy)
            if last is None or last[0] is not o.sampling or last[1] != n:
                last = self._last_plan = (o.sampling, n, o.sampling.with_n(n))
            return [last[2]]
        counts = [n // len(temps) + (1 if i < n % len(temps) else 0) for i in range(len(temps))]
        return [o.sampling.replace(n=c, temperature=t) for t, c in zip(temps, counts, strict=True) if c]

    async def requests(self, problem: Problem, ctx: Context, n: int) -> list[Request]:
        """The requests for n samples: the template filled with the question and examples, sent with
        the task's assistant prefix followed by the template's."""
        o = self.options
        template = self.template(ctx)
        shots = await self.examples(problem, ctx) if o.shots else []
        return [
            template.request(
                params,
                shots,
                chat=o.chat,
                priority=o.priority,
                prefix=ctx.task.assistant_prefix,
                question=problem.question,
                instruction=ctx.task.instruction,
            )
            for params in self.plan(n, ctx)
        ]

    def parse(self, ctx: Context, completion: Completion, request: Request) -> Candidate:
        """A candidate from a completion, with the request's assistant prefix in front of its text
        (:meth:`Context.parse` adds the task's part; the template's part is added here). An answer
        that is not one (empty, the instruction's placeholder) is dropped: it never votes."""
        return self.parse_all(ctx, [completion], request)[0]

    def parse_all(self, ctx: Context, completions: Sequence[Completion], request: Request) -> list[Candidate]:
        """:meth:`parse` for each completion of one request (what is the same for all is found once:
        this runs for every sample)."""
        extra = request.assistant_prefix[len(ctx.task.assistant_prefix) :]
        marks = task_placeholders(ctx.task, self.template(ctx).user)
        meta: dict[str, Any] = {"temperature": request.params.temperature}
        if request.params.seed is not None:
            meta["seed"] = request.params.seed
        parse = ctx.parse
        out = []
        for completion in completions:
            cand = parse(dataclasses.replace(completion, text=extra + completion.text) if extra else completion)
            drop_non_answer(cand, marks)
            cand.meta.update(meta)
            out.append(cand)
        return out

    async def finish(self, ctx: Context, request: Request, completions: list[Completion]) -> list[Candidate]:
        """Candidates of one request's completions (subclasses execute or split them further)."""
        return self.parse_all(ctx, completions, request)

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]:
        requests = await self.requests(problem, ctx, n)
        out: list[Candidate] = []
        for request, completions in zip(requests, await ctx.generate_many(requests), strict=True):
            out += await self.finish(ctx, request, completions)
        return out

    async def drawer(self, problem: Problem, ctx: Context) -> Drawer:
        """Windows of one request each, from the request of one sample (diverse temperatures and
        seeds do not apply to windows)."""
        base = (await self.requests(problem, ctx, 1))[0]

        def draw(size: int, priority: int) -> Draw:
            request = dataclasses.replace(base, params=base.params.with_n(size), priority=base.priority + priority)

            async def finish(outs: list[list[Completion]]) -> list[Candidate]:
                return await self.finish(ctx, request, outs[0])

            return Draw([ctx.submit(request)], finish)

        return draw


# ------------------------------------------------------------------------------------ as a component


def proposer(name: str = "few_shot", **options: Any) -> ProposerSpec:
    """A proposer spec, ``proposer("few_shot", shots=3)`` (what a strategy's ``proposer`` holds)."""
    return ProposerSpec.model_validate({"name": name, **options})


def _merge(default: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(default)
    for k, v in given.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _as_dict(value: Any) -> Any:
    if isinstance(value, ProposerSpec):
        return {"name": value.name, **({"limits": value.limits} if value.limits else {}), **value.options()}
    if isinstance(value, FewShotProposerOptions):  # an options object: its proposer by class
        name = next(n for n, c in _option_classes().items() if type(value) is c)
        return {"name": name, **value.model_dump(exclude_unset=True)}
    return value


@functools.cache
def _option_classes() -> dict[str, type[BaseModel]]:
    """The built-in proposers' option models by proposer name."""
    from tts.strategies._program import ProgramOfThoughtProposer
    from tts.strategies._thinking import ThinkingProposer

    return {p.name: p.Options for p in (FewShotProposer, ProgramOfThoughtProposer, ThinkingProposer)}


@functools.cache
def proposer_fields() -> frozenset[str]:
    """Option names that belong to a built-in proposer: written at a strategy's top level they are
    refused with the new shape."""
    return frozenset(f for options in _option_classes().values() for f in options.model_fields)


def _dumped(value: Any) -> Any:
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


class SampledOptions(BaseModel):
    """Options of a strategy that samples through a proposer (``proposer: {name, options...}``).

    What the user writes for the proposer is laid over the strategy's default proposer when both
    name the same proposer (so ``proposer: {name: few_shot, shots: 3}`` keeps the strategy's
    prompt and sampling); proposer options at the strategy's top level are refused in one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proposer: ProposerSpec = proposer()
    """The inner proposer: ``few_shot`` (default; ``shots: 0`` is the plain prompt),
    ``program_of_thought`` or ``thinking``, with its options."""

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            stray = [k for k in data if k not in cls.model_fields and k in proposer_fields()]
            if stray:
                name = _as_dict(cls.model_fields["proposer"].get_default())["name"]
                raise ValueError(
                    f"{stray[0]} is not a known field here: it belongs to the proposer now; write "
                    f"proposer: {{name: {name}, {stray[0]}: ...}}"
                )
        return data

    @field_validator("proposer", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        value = _as_dict(value)
        default = _as_dict(cls.model_fields["proposer"].get_default(call_default_factory=True))
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, Mapping) and value.get("name", default["name"]) == default["name"]:
            given = {k: _dumped(v) for k, v in value.items()}
            return _merge({k: _dumped(v) for k, v in default.items()}, given)
        return value


def build_proposer(spec: ProposerSpec, where: str) -> Any:
    """The proposer a spec names (through the registry, as every component is built)."""
    try:
        return build_component(spec, "proposer")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_sampled(built: Any, n: int, where: str) -> None:
    """The one rule: more than one sample needs sampling (n identical greedy answers vote nothing)."""
    if n > 1 and getattr(built, "greedy", False):
        t = built.options.sampling.temperature
        raise ConfigError(
            f"{where}: proposer.sampling.temperature must be > 0 when n > 1, got {t}; or set proposer.temperatures."
        )
