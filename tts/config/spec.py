"""The pipeline spec: ``backend``, ``dataset``, ``task``, ``strategy``, ``budget`` and ``run`` sections.

A pipeline is a YAML (or Python) description of one experiment::

    backend: {name: hf}                  # or {name: vllm, model: ...}: only this block changes
    dataset: {name: gsm8k, limit: 50, data_dir: ../shared/data}
    task:                                # prompt templates and answer patterns live here, not in code
      instruction: "End your reply with 'The answer is N.'"
      answer_format: math
    strategy:
      name: best_of_n                    # any registered strategy; the other keys are its options
      n: 8
      verifiers: [{name: math}]          # nested components are {name, options..., limits}
      limits: {max_tokens: 4000}         # a per-stage budget on this component
    budget: {max_tokens: 20000, total_tokens: 1000000}   # per problem; total_tokens: the whole run
    run: {concurrency: 16, seed: 0}

:func:`load_pipeline` reads a file (:mod:`tts.config.yaml`) and validates it; errors name the file,
the line, the field and the fix: ``pipeline.yaml:7: strategy.inner.n must be >= 1, got 0.``.
Components are looked up in the registry and validated by their own ``Options``
(:mod:`tts.config.components`), so new strategies, verifiers and backends need no schema change.
Spec objects do no I/O beyond reading the file; :func:`tts.config.build.build_pipeline` makes the
objects.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from tts.cache import CacheOptions
from tts.config.components import (
    BackendSpec,
    RetrieverSpec,
    SpecError,
    StrategySpec,
    options_model,
    resolve_component,
    validate_component,
)
from tts.config.yaml import Lines, apply_overrides, read_yaml_file, resolve_paths, where
from tts.errors import ConfigError, format_validation_error
from tts.limits import Limits
from tts.sampling import Count, ProblemCount

__all__ = [
    "BudgetSpec",
    "DatasetSpec",
    "PipelineSpec",
    "RunSpec",
    "TaskSpec",
    "check_backend",
    "load_pipeline",
    "parse_pipeline",
]


class DatasetSpec(BaseModel):
    """Which problems: a built-in task, a benchmark, a local file or ``hf:OWNER/NAME``."""

    model_config = ConfigDict(extra="forbid")

    name: str = "larger"
    """A built-in task, a benchmark name (gsm8k, math500, game24), a local path or hf:OWNER/NAME."""
    limit: ProblemCount | None = None
    """Number of problems (a seeded random subset when ``seed`` is set, else the first ones)."""
    seed: int | None = None
    """Seed of the random subset."""
    data_dir: str | None = None
    """Folder with the benchmark files (default: $TTS_DATA_DIR)."""
    fields: dict[str, str] | None = None
    """Column mapping for raw files: {question: ..., reference: ..., id: ...}."""
    format: str | None = None
    """File format when the extension does not say (jsonl, json, csv)."""
    split: str = "test"
    """Split of a hub dataset."""


class TaskSpec(BaseModel):
    """Overrides of the dataset's task: how to prompt and how to read answers. Unset keys keep the
    dataset's defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    instruction: str | None = None
    """The answer format instruction appended to every prompt ({instruction} in templates)."""
    direct_template: str | None = None
    """Template of the ``direct`` prompt, with {question} and {instruction}."""
    cot_template: str | None = None
    """Template of the ``cot`` (step by step) prompt."""
    system: str | None = None
    """System message of chat prompts."""
    assistant_prefix: str | None = None
    """Text every answer starts with (generation continues from it)."""
    answer_format: str | None = None
    """How answers are keyed and compared: math, first_number, last_number, text, ..."""
    answer_pattern: str | None = None
    """A regular expression whose first group is the answer (its last match wins); replaces the
    format's extraction, keeps its canonical form and equivalence."""
    examples: list[tuple[str, str]] | None = None
    """Few-shot (question, answer) pairs."""

    @field_validator("answer_format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        from tts.task import ANSWER_FORMATS

        if v is not None and v not in ANSWER_FORMATS:
            close = difflib.get_close_matches(v, list(ANSWER_FORMATS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {v!r}{hint}")
        return v

    @field_validator("answer_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compiled = re.compile(v)
            except re.error as exc:
                raise ValueError(f"answer_pattern must be a valid regular expression ({exc}), got {v!r}.") from None
            if compiled.groups < 1:
                raise ValueError(
                    f"answer_pattern must have a group around the answer, e.g. 'answer is (\\w+)', got {v!r}."
                )
        return v

    @field_validator("direct_template", "cot_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{question}" not in v:
            raise ValueError(f"templates must contain {{question}}, got {v!r}.")
        return v


class RunSpec(BaseModel):
    """How the run goes: concurrency, seed, where results are written."""

    model_config = ConfigDict(extra="forbid")

    concurrency: Count = 64
    """Problems in flight at once."""
    seed: int = 0
    """Run seed (each problem's seed derives from it)."""
    out: str | None = None
    """JSONL file for results (``tts-scale run``)."""
    cache: CacheOptions | None = None
    """Request cache (:mod:`tts.cache`, studies): ``{path: ..., max_entries: ...}``; ``{enabled: false}``
    opts this pipeline out of a cache the study sets."""
    objective: Literal["latency", "throughput", "cost"] | None = None
    """What the run optimises (:mod:`tts.objectives`): the engine batching, length grouping, request
    cache, early stopping and run priority its policy sets, where the pipeline left them unset."""


class BudgetSpec(Limits):
    """Limits of each problem's whole strategy, plus ``total_tokens`` for the whole run (no new
    problem starts once the run has used that many; requests in flight are capped)."""

    total_tokens: int | None = Field(default=None, ge=1, le=10**12)
    """Prompt plus completion tokens of the whole run."""

    def per_problem(self) -> Limits | None:
        """The per-problem :class:`~tts.limits.Limits` (``None`` when none is set)."""
        limits = Limits(**self.model_dump(exclude={"total_tokens"}))
        return limits if limits.active() else None

    def total(self) -> Limits | None:
        """The whole run's :class:`~tts.limits.Limits` (``None`` when ``total_tokens`` is unset)."""
        return Limits(max_tokens=self.total_tokens) if self.total_tokens is not None else None


def _default_strategy() -> StrategySpec:
    return StrategySpec(name="self_consistency")


class PipelineSpec(BaseModel):
    """One experiment: engine, problems, task, strategy, budget, run options."""

    model_config = ConfigDict(extra="forbid")

    backend: BackendSpec = Field(default_factory=BackendSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    task: TaskSpec = Field(default_factory=TaskSpec)
    strategy: StrategySpec = Field(default_factory=_default_strategy)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    run: RunSpec = Field(default_factory=RunSpec)
    retriever: RetrieverSpec | None = None
    """What ``ctx.retrieve`` searches (the ``rag`` strategy, fact checks): ``{name: hybrid, index: DIR, k: 5}``."""

    def check(self) -> PipelineSpec:
        """Validate the registered components (the strategy and everything nested in it) and the
        backend's options; raise :class:`~tts.config.components.SpecError` naming the field."""
        validate_component(self.strategy, "strategy", ("strategy",))
        if self.retriever is not None:
            validate_component(self.retriever, "retriever", ("retriever",))
        check_backend(self.backend)
        return self

    def resolved(self) -> dict[str, Any]:
        """The full configuration with every default filled in (what a study's manifest records)."""
        d = self.model_dump(mode="json", exclude={"strategy", "backend", "retriever"})
        if self.retriever is not None:
            d["retriever"] = resolve_component(self.retriever, "retriever")
        d["backend"] = {"name": self.backend.name, "quantize": self.backend.quantize, **self.backend.options()}
        d["strategy"] = resolve_component(self.strategy, "strategy")
        return d


def _backend_model(name: str, cls: type) -> type[BaseModel]:
    """The options model of backend ``name``: its own, plus the pipeline-only keys of ``fake``."""
    model = options_model(cls)
    if name != "fake":
        return model
    from tts.backends.oracle import FakeExtras

    extra = {k: (f.annotation, f) for k, f in FakeExtras.model_fields.items()}
    return create_model("FakePipelineOptions", __base__=model, **extra)  # type: ignore[call-overload]


def check_backend(spec: BackendSpec, loc: tuple[str, ...] = ("backend",)) -> None:
    """Check a backend spec against the registry and the backend's options; an engine that is not
    installed is checked when it is built."""
    from tts.registry import REGISTRY

    names = REGISTRY.names("backend")
    key = ".".join(loc)
    if spec.name not in names:
        close = difflib.get_close_matches(spec.name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{key}.name must be one of {', '.join(names)}, got {spec.name!r}{hint}", (*loc, "name"))
    if spec.quantize is not None and spec.name != "hf":
        raise SpecError(
            f"{key}.quantize applies to the hf backend only, got backend {spec.name!r}; drop it.", (*loc, "quantize")
        )
    try:
        cls = REGISTRY.get("backend", spec.name)
    except (ConfigError, ImportError):
        return
    validate_component(spec, "backend", loc, model=_backend_model(spec.name, cls))


def _validation_loc(exc: ValidationError) -> tuple[str, ...]:
    return tuple(str(p) for p in exc.errors()[0]["loc"])


def _at(place: str, message: str) -> str:
    return f"{place}: {message}" if place else message


def parse_pipeline(
    data: Any,
    source: str = "<pipeline>",
    lines: Lines | None = None,
    sources: list[tuple[str, Lines]] | None = None,
    prefix: tuple[str, ...] = (),
) -> PipelineSpec:
    """Validate a pipeline mapping (sections, then registered components).

    ``sources`` lists ``(file, lines)`` pairs to search for the line of an error (the first that
    holds the key path wins); ``prefix`` is where the pipeline sits inside them.
    """
    srcs = sources if sources is not None else [(source, lines or {})]
    dotted = ".".join(prefix)
    if not isinstance(data, dict):
        head = f"{dotted} " if dotted else ""
        raise ConfigError(
            _at(
                where(prefix, srcs),
                f"{head}a pipeline must be a mapping with backend/dataset/"
                f"task/strategy/budget/run sections, got {type(data).__name__}.",
            )
        )
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        loc = _validation_loc(exc)
        msg = format_validation_error(exc, prefix=dotted, model=PipelineSpec)
        raise ConfigError(_at(where(prefix + loc, srcs), msg)) from None
    try:
        spec.check()
    except SpecError as exc:
        msg = f"{dotted}.{exc}" if dotted else str(exc)
        raise ConfigError(_at(where(prefix + exc.loc, srcs), msg)) from None
    return spec


def load_pipeline(
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> PipelineSpec:
    """Read and validate a pipeline file (``None``: the defaults); ``overrides`` maps dotted keys to
    values (command-line flags) and ``edit`` may rewrite the mapping last, before validation. A
    relative dataset path or ``data_dir`` is also looked up beside the file."""
    data: Any = {}
    lines: Lines = {}
    source = ""
    if path is not None:
        data, lines = read_yaml_file(path)
        data = resolve_paths(data, Path(path).resolve().parent)
        source = str(path)
    if isinstance(data, dict):
        if overrides:
            data = apply_overrides(data, overrides)
        if edit is not None:
            try:
                data = edit(data)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return parse_pipeline(data, source, lines)
