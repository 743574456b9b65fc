"""The pipelines a server runs, and how one request becomes strategy runs.

Each served pipeline is built once from its YAML (:func:`tts.config.build_pipeline`, the dataset
section giving the task). Pipelines whose backend blocks are the same share one backend and one
:class:`~tts.scheduler.Scheduler`, so the samples of concurrent requests batch (and identical
prompts merge) together.

A request may override the sampling temperature, tokens per completion and seed, and send the
strategy's own options and a per-choice budget in ``tts``. :meth:`ServedPipeline.plan` checks them
against the server's caps (:class:`ServeOptions`) and returns a :class:`Plan`; the strategy for a
set of overrides is built once and kept (a bounded cache, so varied requests cannot grow memory),
and a request without overrides uses the pipeline's own strategy. Every refusal is a
:class:`~tts.serve.protocol.ApiError` with one line naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import ConfigError, parse_options
from tts.limits import Limits
from tts.scheduler import Scheduler
from tts.serve.protocol import ApiError, ChatRequest
from tts.task import Task

if TYPE_CHECKING:
    from tts.backends.base import Backend

__all__ = ["Pipelines", "Plan", "ServeOptions", "ServedPipeline", "combine_limits", "parse_entry"]

log = logging.getLogger(__name__)

VARIANTS = 128
"""Strategies built for request overrides kept per pipeline (least recently used dropped first)."""


class ServeOptions(BaseModel):
    """What the server allows one request (the caps overrides are checked against) and at once."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_concurrent_requests: int = Field(default=64, ge=1)
    """Chat requests in flight at once; one more is answered 429 at once."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body; a larger one is answered 413 without being read."""
    max_tokens: int = Field(default=4096, ge=1)
    """The most tokens per completion a request may ask for (``max_tokens``)."""
    max_choices: int = Field(default=8, ge=1)
    """The most choices (``n``) per request."""
    max_samples: int = Field(default=64, ge=1)
    """The most samples a request may set in ``tts.n``."""
    limits: Limits = Limits()
    """Caps on every choice's spend (tokens, calls, seconds), on top of the pipeline's budget; a
    request's ``tts.budget`` can only lower them."""


def combine_limits(*limits: Limits | None) -> Limits | None:
    """The tightest of several limits, field by field (``None`` when none is set)."""
    merged: dict[str, Any] = {}
    for lim in limits:
        if lim is None:
            continue
        for key in Limits.model_fields:
            value = getattr(lim, key)
            if value is not None:
                merged[key] = value if key not in merged else min(merged[key], value)
    return Limits(**merged) if merged else None


@dataclass(frozen=True)
class Plan:
    """What one request runs: the strategy, the task, the per-choice limits and seeds."""

    pipeline: ServedPipeline
    strategy: Any
    task: Task
    limits: Limits | None
    seed: int | None

    @property
    def scheduler(self) -> Scheduler:
        return self.pipeline.scheduler

    def choice_seed(self, i: int) -> int | None:
        return None if self.seed is None else self.seed + i


class ServedPipeline:
    """One named pipeline: its task, strategy, limits and the shared scheduler it submits to."""

    def __init__(self, name: str, pipeline: Any, scheduler: Scheduler, options: ServeOptions) -> None:
        self.name = name
        self.spec = pipeline.spec
        self.task: Task = pipeline.task
        self.strategy = pipeline.strategy
        self.retriever: Any = getattr(pipeline, "retriever", None)
        """What ``ctx.retrieve`` searches (the pipeline's ``retriever`` section), or None."""
        self.scheduler = scheduler
        self.options = options
        self.limits = combine_limits(pipeline.limits, options.limits)
        self.base: dict[str, Any] = self.spec.strategy.model_dump(mode="json", exclude_unset=True)
        self._variants: OrderedDict[str, Any] = OrderedDict()

    def plan(self, req: ChatRequest) -> Plan:
        """The plan of ``req``, or :class:`ApiError` (400) naming a field past a cap or invalid."""
        o = self.options
        if req.n > o.max_choices:
            raise ApiError(400, f"n must be <= {o.max_choices} (the server's cap), got {req.n}.", param="n")
        tokens = req.completion_tokens
        if tokens is not None and tokens > o.max_tokens:
            raise ApiError(
                400, f"max_tokens must be <= {o.max_tokens} (the server's cap), got {tokens}.", param="max_tokens"
            )
        settings = dict(req.tts or {})
        budget = settings.pop("budget", None)
        limits = self.limits
        if budget is not None:
            if not isinstance(budget, Mapping):
                raise ApiError(400, "tts.budget must be a mapping of limits (max_tokens, max_wall_time, ...).")
            try:
                asked = parse_options(Limits, budget)
            except ConfigError as exc:
                raise ApiError(400, f"tts.budget.{exc}", param="tts.budget") from None
            limits = combine_limits(limits, asked)
        samples = settings.get("n")
        if isinstance(samples, int) and samples > o.max_samples:
            raise ApiError(400, f"tts.n must be <= {o.max_samples} (the server's cap), got {samples}.", param="tts.n")
        strategy = self._strategy(settings, req.temperature, tokens)
        return Plan(self, strategy, self.task, limits, req.seed)

    def _strategy(self, settings: dict[str, Any], temperature: float | None, max_tokens: int | None) -> Any:
        if not settings and temperature is None and max_tokens is None:
            return self.strategy
        key = json.dumps([settings, temperature, max_tokens], sort_keys=True, default=str)
        found = self._variants.get(key)
        if found is not None:
            self._variants.move_to_end(key)
            return found
        from tts.config.build import build_strategy
        from tts.config.flags import strategy_spec
        from tts.config.yaml import merge

        if "name" in settings:
            raise ApiError(400, "tts.name cannot change the pipeline's strategy; name another pipeline as the model.")
        try:
            mapping = merge(self.base, settings)
            name = mapping["name"]
            mapping = strategy_spec(name, mapping, temperature=temperature, max_tokens=max_tokens)
            built = build_strategy(mapping)
        except ConfigError as exc:
            msg = str(exc)  # the strategy block's errors, named as the request wrote them
            if msg.startswith("strategy."):
                msg = f"tts.{msg.removeprefix('strategy.')}"
            elif settings:
                msg = f"tts: {msg}"
            raise ApiError(400, msg, param="tts" if settings else None) from None
        self._variants[key] = built
        if len(self._variants) > VARIANTS:
            self._variants.popitem(last=False)
        return built

    def task_for(self, system: str | None) -> Task:
        """The pipeline's task, with the request's system message when it sent one."""
        if system is None or system == self.task.system:
            return self.task
        return dataclasses.replace(self.task, system=system)


def parse_entry(entry: str) -> tuple[str, Path]:
    """``NAME=PIPELINE.yaml`` or ``PIPELINE.yaml`` (named by its file stem)."""
    name, sep, path = entry.partition("=")
    if not sep:
        return Path(entry).stem, Path(entry)
    if not name.strip() or not path.strip():
        raise ConfigError(f"pipeline {entry!r} must be NAME=PIPELINE.yaml or PIPELINE.yaml.")
    return name.strip(), Path(path.strip())


class Pipelines:
    """The served pipelines by name, and the default one for unknown names (when set)."""

    def __init__(self, served: Iterable[ServedPipeline], default: str | None = None) -> None:
        self.by_name = {p.name: p for p in served}
        if not self.by_name:
            raise ConfigError("serve needs at least one pipeline: pass PIPELINE.yaml or NAME=PIPELINE.yaml.")
        if default is not None and default not in self.by_name:
            raise ConfigError(f"--default {default!r} is not a served pipeline; choose one of {self.names()}.")
        self.default = default

    def names(self) -> list[str]:
        return list(self.by_name)

    def get(self, name: str) -> ServedPipeline:
        """The pipeline ``name`` names (the default one for an unknown name, when set), else 404."""
        found = self.by_name.get(name)
        if found is not None:
            return found
        if self.default is not None:
            return self.by_name[self.default]
        raise ApiError(
            404,
            f"model {name!r} is not served; choose one of: {', '.join(self.by_name)} (GET /v1/models).",
            type="not_found_error",
            param="model",
        )

    def schedulers(self) -> list[Scheduler]:
        out: list[Scheduler] = []
        for p in self.by_name.values():
            if all(p.scheduler is not s for s in out):
                out.append(p.scheduler)
        return out

    @classmethod
    def load(
        cls,
        entries: Iterable[str],
        *,
        backend: str | Backend | None = None,
        default: str | None = None,
        options: ServeOptions | None = None,
    ) -> Pipelines:
        """Read and build every pipeline (``NAME=PIPELINE.yaml`` or ``PIPELINE.yaml``). ``backend``:
        a name replaces every pipeline's backend block (``fake`` answers with the fake backend's
        default reply); a backend object serves every pipeline. Pipelines with the same backend
        block share one backend and scheduler."""
        from tts.config import build_pipeline, load_pipeline, make_backend

        options = options or ServeOptions()
        shared: dict[str, Scheduler] = {}
        served: list[ServedPipeline] = []
        named = backend if isinstance(backend, str) else None
        for entry in entries:
            name, path = parse_entry(entry)
            if any(p.name == name for p in served):
                raise ConfigError(f"pipeline name {name!r} is used twice; name them NAME=PIPELINE.yaml.")
            spec = load_pipeline(path, edit=(lambda d: {**d, "backend": {"name": named}}) if named else None)
            if spec.budget.total_tokens is not None:
                log.warning("%s: budget.total_tokens bounds a run, not a server; it is not applied", path)
            key = "object" if backend is not None and named is None else spec.backend.model_dump_json()
            if key not in shared:
                shared[key] = Scheduler(make_backend(spec.backend) if key != "object" else backend)  # type: ignore[arg-type]
            pipeline = build_pipeline(spec, backend=shared[key].backend)
            served.append(ServedPipeline(name, pipeline, shared[key], options))
        return cls(served, default)
