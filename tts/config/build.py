"""Building: the objects a :class:`~tts.config.spec.PipelineSpec` describes.

- :func:`make_backend`: a backend by name (or spec) and options, ``make_backend("hf")``,
  ``make_backend("vllm", model=...)``; looked up in :data:`tts.registry.REGISTRY`, so plugin
  backends build like the built-ins. :func:`backend_for` also returns the problems as the backend
  needs them (the fake oracle marks them, :mod:`tts.backends.oracle`).
- :func:`build_strategy`: a strategy by name (or spec) and options.
- :func:`apply_task`: a dataset's task with a pipeline's ``task`` overrides.
- :func:`build_pipeline`: all of it, as a runnable :class:`Pipeline` whose ``budget`` goes to the
  run loop (:func:`tts.runner.arun`: ``limits`` per problem, ``total_limits`` for the run).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tts.cache import CacheOptions
from tts.config.components import BackendSpec, SpecError, StrategySpec, as_spec, build_component, options_model
from tts.config.spec import DatasetSpec, PipelineSpec, RunSpec, TaskSpec, check_backend
from tts.errors import ConfigError
from tts.limits import Limits
from tts.objectives import Policy, policy
from tts.registry import REGISTRY

if typing.TYPE_CHECKING:
    from tts.backends.base import Backend
    from tts.datasets import Dataset
    from tts.runner import Report
    from tts.task import Task
    from tts.types import Problem

__all__ = [
    "Pipeline",
    "apply_task",
    "backend_for",
    "build_pipeline",
    "build_retriever",
    "build_strategy",
    "load_pipeline_dataset",
    "make_backend",
]


def _spec(spec: Any, options: Mapping[str, Any], kind: str) -> Any:
    if not options:
        return as_spec(spec, kind)
    base = as_spec(spec, kind)
    declared = {k: getattr(base, k) for k in type(base).model_fields if k != "name"}
    return type(base).model_validate({**declared, "name": base.name, **base.options(), **options})


def _checked_backend(spec: str | Mapping[str, Any] | BackendSpec, options: Mapping[str, Any]) -> BackendSpec:
    backend = _spec(spec, options, "backend")
    assert isinstance(backend, BackendSpec)
    try:
        check_backend(backend)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    return backend


def _finish(backend: Any, spec: BackendSpec) -> Any:
    if spec.quantize is not None:
        from tts.quantize import quantize_backend

        quantize_backend(backend, spec.quantize)
    return backend


def make_backend(spec: str | Mapping[str, Any] | BackendSpec = "hf", /, **options: Any) -> Backend:
    """A backend by registered name (or a :class:`~tts.config.components.BackendSpec` / mapping)
    and its options: ``make_backend("hf")``, ``make_backend("openai", base_url=..., model=...)``.
    Invalid options are a one-line :class:`~tts.errors.ConfigError`."""
    backend_spec = _checked_backend(spec, options)
    if backend_spec.name == "fake":
        if "oracle" in backend_spec.options():
            raise ConfigError(
                "backend.oracle needs the problems it simulates: build the pipeline "
                "(tts.build_pipeline) or call tts.backends.oracle.oracle_backend(oracle, problems)."
            )
        from tts.backends.oracle import fake_backend

        return fake_backend(backend_spec.options())[0]
    plain = BackendSpec.model_validate({"name": backend_spec.name, **backend_spec.options()})
    return _finish(build_component(plain, "backend"), backend_spec)


def backend_for(
    spec: str | Mapping[str, Any] | BackendSpec, problems: Sequence[Problem]
) -> tuple[Backend, list[Problem]]:
    """The backend ``spec`` describes and ``problems`` as that backend needs them (the fake oracle
    marks each question with ``[oracle:ID]``; other backends return them unchanged)."""
    backend_spec = _checked_backend(spec, {})
    if backend_spec.name == "fake" and "oracle" in backend_spec.options():
        from tts.backends.oracle import fake_backend

        backend, marked = fake_backend(backend_spec.options(), problems)
        return backend, list(marked or [])
    return make_backend(backend_spec), list(problems)


def build_strategy(spec: str | Mapping[str, Any] | StrategySpec, /, **options: Any) -> Any:
    """A strategy by registered name (or spec) and its options: ``build_strategy("self_consistency",
    n=8)``. Its options are validated by the strategy's ``Options``; errors are one line."""
    try:
        return build_component(_spec(spec, options, "strategy"), "strategy")
    except SpecError as exc:
        raise ConfigError(str(exc)) from None


# ------------------------------------------------------------------------------------ tasks


_REGEX_TASK: type | None = None


def _regex_task_class() -> type:
    from tts.task import Task

    @dataclass(frozen=True)
    class RegexTask(Task):
        """A task whose answers are read with a regular expression (its first group, last match)."""

        answer_pattern: str = ""

        def extract(self, text: str) -> str | None:
            for m in reversed(list(re.finditer(self.answer_pattern, text))):
                group = next((g for g in m.groups() if g is not None), None)
                if group is not None and group.strip():
                    return group.strip()
            return None

    return RegexTask


def apply_task(base: Task, spec: TaskSpec) -> Task:
    """``base`` with the fields ``spec`` sets replaced (an ``answer_pattern`` reads answers with it)."""
    global _REGEX_TASK
    changes = {k: v for k, v in spec.model_dump(exclude_none=True).items() if k != "answer_pattern"}
    if "examples" in changes:
        changes["examples"] = tuple(tuple(e) for e in changes["examples"])
    if spec.answer_pattern is None:
        return dataclasses.replace(base, **changes) if changes else base
    if _REGEX_TASK is None:
        _REGEX_TASK = _regex_task_class()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "answer_pattern"}
    task: Task = _REGEX_TASK(**{**fields, **changes, "answer_pattern": spec.answer_pattern})
    return task


# ------------------------------------------------------------------------------------ pipelines


@dataclass
class Pipeline:
    """A pipeline's objects, built from a :class:`~tts.config.spec.PipelineSpec`."""

    spec: PipelineSpec
    backend: Any
    dataset: Dataset
    strategy: Any
    task: Task
    retriever: Any = None
    """What ``ctx.retrieve`` searches (the ``retriever`` section), or None."""

    @property
    def problems(self) -> list[Problem]:
        return self.dataset.problems

    @property
    def limits(self) -> Limits | None:
        """Per-problem limits (the ``budget`` section)."""
        return self.spec.budget.per_problem()

    @property
    def total_limits(self) -> Limits | None:
        """Limits of the whole run (``budget.total_tokens``)."""
        return self.spec.budget.total()

    def run_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`tts.runner.arun` this pipeline's sections set."""
        objective = self.spec.run.objective
        return {
            "task": self.task,
            "concurrency": self.spec.run.concurrency,
            "seed": self.spec.run.seed,
            "limits": self.limits,
            "total_limits": self.total_limits,
            "retriever": self.retriever,
            **({"priority": policy(objective).priority} if objective else {}),
        }

    def engine(self) -> Any:
        """What the run submits to (:func:`engine_for`)."""
        return engine_for(self.spec.run, self.backend)

    def run(self, **kw: Any) -> Report:
        """Run the strategy over the dataset (:func:`tts.runner.run`); ``kw`` overrides run options."""
        from tts.runner import run

        return run(self.strategy, self.problems, self.engine(), **{**self.run_options(), **kw})


def engine_for(run: RunSpec, backend: Any) -> Any:
    """What a run submits to: ``backend``, behind a scheduler with the request cache when
    ``run.cache`` is set (and enabled) or the objective's policy wants one."""
    from tts.cache import RequestCache
    from tts.scheduler import Scheduler

    options = run.cache
    if options is None and run.objective is not None and policy(run.objective).cache:
        options = CacheOptions()
    cache = RequestCache.from_options(options)
    return Scheduler(backend, cache=cache) if cache is not None else backend


def load_pipeline_dataset(spec: DatasetSpec, task: TaskSpec | None = None) -> Dataset:
    """The dataset a ``dataset`` section names, with the ``task`` overrides when given."""
    from tts.datasets import Dataset, load_dataset

    ds = load_dataset(
        spec.name,
        limit=spec.limit,
        seed=spec.seed,
        data_dir=spec.data_dir,
        fields=spec.fields,
        split=spec.split,
        format=spec.format,
    )
    return Dataset(ds.name, ds.problems, apply_task(ds.task, task)) if task is not None else ds


def build_pipeline(spec: PipelineSpec, *, backend: Any = None, dataset: Dataset | None = None) -> Pipeline:
    """Build the objects of ``spec``: backend (unless given), dataset with the task overrides and
    the strategy. Raises :class:`~tts.errors.ConfigError` on invalid options."""
    from tts.datasets import Dataset

    try:
        spec.check()
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    ds = dataset if dataset is not None else load_pipeline_dataset(spec.dataset)
    task = apply_task(ds.task, spec.task)
    if spec.run.objective is not None:  # the policy's knobs, where the pipeline left them unset
        spec = _with_policy(spec, policy(spec.run.objective))
    strategy = build_strategy(spec.strategy)
    retriever = build_retriever(spec.retriever)
    problems = list(ds.problems)
    if backend is None:
        backend, problems = backend_for(spec.backend, problems)
    return Pipeline(spec, backend, Dataset(ds.name, problems, task), strategy, task, retriever)


def _with_policy(spec: PipelineSpec, pol: Policy) -> PipelineSpec:
    """``spec`` with an objective's backend and strategy knobs filled in (set ones win)."""
    backend = spec.backend.model_dump(exclude_unset=True)
    backend = {"name": spec.backend.name, **pol.backend_options(spec.backend.name, backend)}
    strategy = spec.strategy.model_dump(exclude_unset=True)
    cls = REGISTRY.get("strategy", spec.strategy.name)
    strategy = {"name": spec.strategy.name, **pol.strategy_options(strategy, set(options_model(cls).model_fields))}
    return spec.model_copy(
        update={"backend": BackendSpec.model_validate(backend), "strategy": StrategySpec.model_validate(strategy)}
    )


def build_retriever(spec: Any) -> Any:
    """The retriever a pipeline's ``retriever`` section names (``None`` stays ``None``); errors are one line."""
    if spec is None:
        return None
    try:
        return build_component(spec, "retriever")
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
