"""Running a study: every configuration and seed through the one run loop, results in SQLite as
each problem finishes.

**Resuming.** Results go to ``OUT/results.sqlite`` one problem at a time (:mod:`tts.study.store`); a
rerun skips every (configuration, seed, problem) answered there, and runs again the ones that
failed or timed out (``keep_failures``, a study option or :class:`StudyRunner` argument, keeps
them). :class:`StudyOutcome` says how many stored results failed, so the CLI can exit 1. Each
configuration and seed is one
:func:`tts.runner.arun` over the problems not yet stored, with the run's ``seed`` and, unless the
study says ``seeded: false``, ``seed_requests``: every request is seeded from the problem's seed and
its position within the problem, so a problem's samples do not depend on what else ran, in which
order, or whether the study was interrupted, and a killed and resumed study stores the same table
as an uninterrupted one. (The price on engines that cannot batch differently seeded requests, such
as the ``hf`` backend today, is one engine call per problem; ``seeded: false`` batches across
problems instead, and a resumed study then draws fresh samples for the problems it had not
finished.) A pipeline's ``budget`` section gives the run's ``limits`` (per problem) and
``total_limits`` (``total_tokens``: no new problem starts once the session has spent it).

**Metrics.** Each result row records its status, tokens, calls, verifier calls and verifier tokens,
cost (from the backend's ``pricing``), latency (the scheduler's clock: virtual seconds on the fake
backend), answer agreement, the samples cut off at the token limit and the Flesch reading ease of
the final answer; each session of a (configuration, seed) records its wall time, the process's peak
resident memory and the engine's own facts (:mod:`tts.engine_facts`): the largest KV-cache use
read during the session and the prefix-cache hit rate over it (vLLM's metrics, or a backend's
``kv_cache_usage`` attribute or method). The session row is written when it starts and updated
with every result, so a killed session keeps its wall time and count.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts import runner
from tts.cache import RequestCache, refuse_semantic_in_study
from tts.config.build import apply_task, backend_for, build_strategy, load_pipeline_dataset
from tts.engine_facts import RunFacts
from tts.runner import RunProgress
from tts.study.manifest import export, model_info, write_manifest
from tts.study.spec import Configuration, Study, load_study
from tts.study.store import FAILED, Store

__all__ = ["PlanRow", "StudyOutcome", "StudyRunner", "result_rows", "run_study"]

log = logging.getLogger(__name__)


def _peak_rss_kb() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss // 1024 if sys.platform == "darwin" else rss)


def _kv_cache(backend: Any) -> float | None:
    """KV-cache use where the engine reports it (:func:`tts.engine_facts.read`)."""
    from tts.engine_facts import read

    return read(backend).kv_cache_usage


def run_configuration(
    cfg: Configuration,
    study: Study,
    problems: list[Any],
    scheduler: Any,
    task: Any,
    seed: int,
    on_result: Callable[[Any], None],
    progress: Callable[[RunProgress], None] | None = None,
) -> Any:
    """The run of one configuration and seed over ``problems`` (``tts.runner.arun`` with the
    configuration's strategy, concurrency and budgets): what the local runner and the Ray
    executor both await."""
    return runner.arun(
        build_strategy(cfg.spec.strategy),
        problems,
        scheduler,
        task=task,
        concurrency=cfg.spec.run.concurrency,
        seed=seed,
        seed_requests=study.spec.seeded,
        limits=cfg.spec.budget.per_problem(),
        total_limits=cfg.spec.budget.total(),
        on_result=on_result,
        progress=progress,
    )


def result_rows(
    config_id: str, seed: int, position: int, result: Any, task: Any, priced: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``results`` row and ``samples`` rows of one finished problem (``priced``: the backend
    has ``pricing``, so ``usage.cost`` is a cost and not a missing one)."""
    from tts.study.analysis import agreement, flesch_reading_ease

    problem = result.problem
    ref = problem.reference
    verdicts: dict[str | None, bool | None] = {}
    samples = []
    for i, c in enumerate(result.candidates):
        if c.key not in verdicts:
            verdicts[c.key] = None if ref is None else (c.answer is not None and bool(task.equivalent(c.answer, ref)))
        comp = c.completion
        passed = c.scores[-1].passed if c.scores else None
        samples.append(
            {
                "config_id": config_id,
                "seed": seed,
                "problem_id": problem.id,
                "idx": i,
                "answer": c.answer,
                "key": c.key,
                "correct": verdicts[c.key],
                "tokens": comp.token_count if comp is not None else None,
                "score": c.score,
                "passed": None if passed is None else int(passed),
                "logprob": comp.mean_logprob if comp is not None else None,
                "finish_reason": comp.finish_reason if comp is not None else None,
            }
        )
    agree, distinct = agreement([c.key for c in result.candidates])
    final = result.candidates[result.winner].text if result.winner is not None and result.candidates else None
    u = result.usage
    row = {
        "config_id": config_id,
        "seed": seed,
        "problem_id": problem.id,
        "position": position,
        "answer": result.answer,
        "reference": ref,
        "correct": None if result.correct is None else int(result.correct),
        "status": result.status,
        "error": result.error,
        "timed_out": int(result.status == "timeout"),
        "latency": result.latency,
        "prompt_tokens": u.prompt_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "calls": u.calls,
        "completions": u.completions,
        "verifier_calls": u.verifier_calls,
        "verifier_prompt_tokens": u.verifier_prompt_tokens,
        "verifier_completion_tokens": u.verifier_completion_tokens,
        "truncated": sum(1 for s in samples if s["finish_reason"] == "length"),
        "cache_hits": u.cache_hits,
        "original_tokens": u.original_tokens,
        "cost": u.cost if priced else None,
        "n_samples": len(result.candidates),
        "agreement": agree,
        "distinct_answers": distinct,
        "readability": flesch_reading_ease(final),
        "final_text": final,
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
    """What a study run did, and the state of its store after it."""

    out: Path
    store: Path
    ran: int
    """Problems (per configuration and seed) run in this session, failed ones included."""
    skipped: int
    """Problems already answered in the store (and failures kept with ``keep_failures``)."""
    configs: int
    files: dict[str, Path] = field(default_factory=dict)
    problems: int = 0
    """Results stored for the study's configurations and seeds."""
    failed: int = 0
    """Of ``problems``, those that failed or timed out (the CLI exits 1 when any did)."""
    timeouts: int = 0
    """Of ``failed``, those that timed out."""
    warnings: list[str] = field(default_factory=list)
    """Configurations whose accuracy measures a limit (token limit hit, failures): print them."""

    @property
    def failure_rate(self) -> float:
        """``failed / problems`` (0 with nothing stored)."""
        return self.failed / self.problems if self.problems else 0.0


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
    as problems finish; ``keep_failures`` (default: the study's option) keeps stored failures
    instead of running them again.
    """

    def __init__(
        self,
        study: Study,
        *,
        backends: Mapping[str, Any] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        keep_failures: bool | None = None,
        executor: str = "local",
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.study = study
        self.executor = executor
        """``local`` (this process) or ``ray`` (:mod:`tts.study.executors`: one Ray actor per worker)."""
        self.address = address
        """Ray cluster address (``None``: a local cluster, or the one ``RAY_ADDRESS`` names)."""
        self.workers = workers
        """Ray workers, each with its own engine (``None``: one per CPU the cluster has free)."""
        self._caches: dict[str, Any] = {}
        self.given = dict(backends or {})
        self.progress = progress
        self.keep_failures = study.spec.keep_failures if keep_failures is None else keep_failures
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
        by the configurations that describe the same one (so their requests batch together); the
        fake oracle rewrites its dataset's problems, so it is built per dataset."""
        ds = self._dataset(cfg)
        given = self.given.get(cfg.pipeline, self.given.get(cfg.spec.backend.name))
        key = f"given:{id(given)}" if given is not None else cfg.spec.backend.model_dump_json()
        oracle = given is None and "oracle" in cfg.spec.backend.options()
        if oracle:
            key += cfg.spec.dataset.model_dump_json()
        if key not in self._backends:
            if given is not None:
                backend, problems = given, list(ds.problems)
            else:
                backend, problems = backend_for(cfg.spec.backend, ds.problems)
            scheduler = runner.as_scheduler(backend)
            self._backends[key] = (scheduler.backend, scheduler, problems)
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
                done = (
                    sum(
                        len(store.done(cfg.id, s, failures=self.keep_failures) & {p.id for p in ds.problems})
                        for s in self.study.spec.seeds
                    )
                    if store is not None
                    else 0
                )
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
                rows.append(
                    PlanRow(
                        cfg.label,
                        len(ds.problems),
                        len(self.study.spec.seeds),
                        remaining,
                        round(gens * remaining),
                        round(prompt * remaining),
                        round(completion * remaining),
                        method,
                    )
                )
        finally:
            if store is not None:
                store.close()
        return rows

    def _simulate(self, cfg: Configuration, ds: Any) -> tuple[float, float, float]:
        from tts.backends.fake import FakeBackend

        problems = ds.problems[:PLAN_PROBLEMS]
        if not problems:
            return 0.0, 0.0, 0.0
        backend = FakeBackend(_PlanReplies())
        report = runner.run(
            build_strategy(cfg.spec.strategy),
            problems,
            backend,
            task=apply_task(ds.task, cfg.spec.task),
            concurrency=len(problems),
            seed=0,
            limits=cfg.spec.budget.per_problem(),
        )
        failed = [r.error for r in report.results if r.error]
        if len(failed) == len(problems):
            raise RuntimeError(failed[0])
        k = len(problems)
        return (
            backend.completions_generated / k,
            backend.prefill_tokens * WORDS_TO_TOKENS / k,
            backend.completion_tokens / k,
        )

    # ---------------------------------------------------------------- running

    def run(self) -> StudyOutcome:
        """Run what is not yet stored; write the manifest and the CSV exports."""
        return runner.run_sync(self.arun)

    async def arun(self) -> StudyOutcome:
        study = self.study
        for cfg in study.configs:  # a dataset that cannot load (repeated ids, no rows) is refused before any write
            if not len(self._dataset(cfg)):
                from tts.errors import ConfigError

                raise ConfigError(f"dataset {cfg.spec.dataset.name!r} has no problems; check the file or --limit.")
            refuse_semantic_in_study(cfg.spec.run.cache, cfg.label)
            if cfg.spec.run.objective is not None:
                from tts.errors import ConfigError

                raise ConfigError(
                    f"{cfg.label}: run.objective is refused in studies (a study measures the configuration as "
                    "written; its knobs would change results under the same configuration id); drop run.objective "
                    "and set the knobs (stop, backend batching, run.cache) in the configuration."
                )
        if self.executor not in ("local", "ray"):
            from tts.errors import ConfigError

            raise ConfigError(f"--executor must be local or ray, got {self.executor!r}.")
        study.out.mkdir(parents=True, exist_ok=True)
        store = Store(study.store_path)
        ran = skipped = 0
        try:
            store.set_meta("study", study.spec.model_dump(mode="json"))
            for cfg in study.configs:
                store.add_config(cfg.id, cfg.label, cfg.pipeline, cfg.position, cfg.n_value, cfg.sweep, cfg.resolved)
            write_manifest(study, self._models())
            if self.executor == "ray":
                from tts.study.executors import run_on_ray

                ran, skipped = run_on_ray(self, store)
            else:
                for cfg in study.configs:
                    for seed in study.spec.seeds:
                        r, s = await self._run_config(store, cfg, seed)
                        ran += r
                        skipped += s
            write_manifest(study, self._models())
            from tts.study.analysis import compute_metrics, metric_warnings

            metrics = compute_metrics(store)
            files = export(study, store, metrics)
            warnings = metric_warnings(metrics)
            counts = store.statuses([c.id for c in study.configs])
        finally:
            store.close()
        failed = sum(counts.get(s, 0) for s in FAILED)
        for line in warnings:
            log.warning("%s", line)
        return StudyOutcome(
            out=study.out,
            store=study.store_path,
            ran=ran,
            skipped=skipped,
            configs=len(study.configs),
            files=files,
            problems=sum(counts.values()),
            failed=failed,
            timeouts=counts.get("timeout", 0),
            warnings=warnings,
        )

    async def _run_config(self, store: Store, cfg: Configuration, seed: int) -> tuple[int, int]:
        """Run one (configuration, seed) over the problems not yet stored: (ran, skipped)."""
        ds = self._dataset(cfg)
        backend, scheduler, problems = self._backend(cfg)
        task = apply_task(ds.task, cfg.spec.task)
        done = store.done(cfg.id, seed, failures=self.keep_failures)
        todo = [p for p in problems if p.id not in done]
        if not todo:
            return 0, len(problems)
        position = {p.id: i for i, p in enumerate(problems)}
        priced = getattr(backend, "pricing", None) is not None
        scheduler.cache = self.cache(cfg)  # per run: a pipeline may opt out
        label = f"{cfg.label} seed={seed}" if len(self.study.spec.seeds) > 1 else cfg.label
        finished = 0
        started, t0 = time.time(), time.perf_counter()
        run_id = store.start_run(cfg.id, seed, started)
        facts = RunFacts(backend)  # the engine's own KV-cache and prefix-cache counters

        def session(count: int) -> dict[str, Any]:
            wall = time.perf_counter() - t0
            facts.update()
            return {
                "id": run_id,
                "wall": wall,
                "problems": count,
                "peak_rss_kb": _peak_rss_kb(),
                "kv_cache": facts.peak,
                "prefix_cache_hit_rate": facts.prefix_cache_hit_rate,
            }

        def on_result(result: Any) -> None:
            nonlocal finished
            row, samples = result_rows(cfg.id, seed, position[result.problem.id], result, task, priced)
            store.add_result(row, samples, run=session(finished + 1))
            finished += 1

        def progress(now: RunProgress) -> None:
            if self.progress is not None:
                self.progress(label, len(done) + now.done, len(problems))

        try:
            await run_configuration(cfg, self.study, todo, scheduler, task, seed, on_result, progress)
        finally:
            store.update_run(session(finished))
        return finished, len(problems) - len(todo)

    def cache(self, cfg: Configuration, run_id: str | None = None) -> Any:
        """The request cache of one run of ``cfg`` (``None``: none, or opted out), opened once
        per file; each run starts a new cache run (unseeded entries are served only to later runs)."""
        options = cfg.spec.run.cache
        if options is None or not options.enabled:
            return None
        key = options.model_dump_json()
        if key not in self._caches:
            self._caches[key] = RequestCache.from_options(options)
        cache = self._caches[key]
        cache.new_run(run_id)
        return cache

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
