"""Study executors: where a study's (configuration, seed, shard) units run.

``local`` (the default) runs them in this process (:meth:`StudyRunner.arun`). ``ray``
(:func:`run_on_ray`, ``tts-scale study STUDY.yaml --executor ray [--address ADDR]``) runs them on
a Ray cluster: one actor per worker, each with its own engine (built from the pipeline's backend
section inside the worker: a vLLM engine per GPU node, or the OpenAI backend to a server beside
it), each unit a streaming actor call that yields every problem's result rows as it finishes.
The driver, the one process that writes the store, writes each row as it arrives, so resume and
nothing-lost hold exactly as on one machine: a killed study keeps every row written, and a rerun
computes its units from what is stored. Seeded studies give the same table as a local run
(samples depend only on each problem's seed). The request cache is per machine: a worker opens
the cache file its pipeline names on its own node.

Ray is an optional extra: ``pip install 'tts-scale[ray]'``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tts.errors import ConfigError

if TYPE_CHECKING:
    from tts.study.runner import StudyRunner
    from tts.study.spec import Study
    from tts.study.store import Store

__all__ = ["SHARD_PROBLEMS", "StudyWorker", "run_on_ray"]

RAY_HINT = "pip install 'tts-scale[ray]'"
SHARD_PROBLEMS = 64
"""Problems per unit: small enough to spread a configuration over workers, large enough to batch."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs ray ({exc}); install it with {RAY_HINT}.") from None
    return ray


class StudyWorker:
    """One worker's engines: runs units of a study and yields their result rows (a Ray actor)."""

    def __init__(self, study: Study) -> None:
        from tts.study.runner import StudyRunner

        self.runner = StudyRunner(study)

    async def run_unit(
        self, config_id: str, seed: int, problem_ids: list[str], cache_run: str | None
    ) -> AsyncIterator[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]:
        """Run ``problem_ids`` of one configuration and seed; yield (row, samples, engine facts)
        per problem (the facts: this worker's engine, :mod:`tts.engine_facts`)."""
        from tts.config.build import apply_task
        from tts.engine_facts import RunFacts
        from tts.study.runner import result_rows, run_configuration

        study = self.runner.study
        cfg = next(c for c in study.configs if c.id == config_id)
        ds = self.runner._dataset(cfg)
        backend, scheduler, problems = self.runner._backend(cfg)
        scheduler.cache = self.runner.cache(cfg, cache_run)
        task = apply_task(ds.task, cfg.spec.task)
        position = {p.id: i for i, p in enumerate(problems)}
        wanted = set(problem_ids)
        todo = [p for p in problems if p.id in wanted]
        priced = getattr(backend, "pricing", None) is not None
        rows: asyncio.Queue[Any] = asyncio.Queue()
        facts = RunFacts(backend)

        def on_result(result: Any) -> None:
            row, samples = result_rows(cfg.id, seed, position[result.problem.id], result, task, priced)
            facts.update()
            rows.put_nowait(
                (row, samples, {"kv_cache": facts.peak, "prefix_cache_hit_rate": facts.prefix_cache_hit_rate})
            )

        async def go() -> None:
            try:
                await run_configuration(cfg, study, todo, scheduler, task, seed, on_result)
            finally:
                rows.put_nowait(None)

        job = asyncio.ensure_future(go())
        while (item := await rows.get()) is not None:
            yield item
        await job  # a failure of the run itself reaches the driver


def _shards(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def run_on_ray(runner: StudyRunner, store: Store, *, shard_problems: int | None = None) -> tuple[int, int]:
    """Run ``runner``'s study on Ray, writing rows to ``store`` as they stream back: (ran, skipped).
    ``shard_problems``: problems per unit (default :data:`SHARD_PROBLEMS`)."""
    ray = _ray()
    size = shard_problems or SHARD_PROBLEMS
    if not ray.is_initialized():
        ray.init(address=runner.address, include_dashboard=False, log_to_driver=False)
    study = runner.study
    units: deque[tuple[Any, int, list[str]]] = deque()
    stored: dict[tuple[str, int], int] = {}
    skipped = 0
    for cfg in study.configs:
        problems = [p.id for p in runner._dataset(cfg).problems]
        for seed in study.spec.seeds:
            done = store.done(cfg.id, seed, failures=runner.keep_failures)
            todo = [pid for pid in problems if pid not in done]
            skipped += len(problems) - len(todo)
            stored[(cfg.id, seed)] = len(problems) - len(todo)
            units.extend((cfg, seed, shard) for shard in _shards(todo, size))
    if not units:
        return 0, skipped
    # an engine on a GPU takes one: a worker per GPU where the cluster has them and a pipeline
    # runs a local engine (vllm, hf); else a worker per free CPU
    free = ray.available_resources()
    local_engine = any(cfg.spec.backend.name in ("vllm", "hf") for cfg, _, _ in units)
    gpus = 1 if local_engine and free.get("GPU", 0) >= 1 else 0
    workers = runner.workers or max(1, int(free.get("GPU" if gpus else "CPU", 1)))
    actor = ray.remote(num_cpus=1, num_gpus=gpus)(StudyWorker)
    pool = [actor.remote(study) for _ in range(min(workers, len(units)))]
    idle = list(pool)
    cache_runs: dict[tuple[str, int], str] = {}
    active: dict[Any, tuple[Any, dict[str, Any], float]] = {}
    ran = 0
    total = {(cfg.id, seed): len(runner._dataset(cfg).problems) for cfg, seed, _ in units}
    try:
        while units or active:
            while idle and units:
                cfg, seed, shard = units.popleft()
                worker = idle.pop()
                run = cache_runs.setdefault((cfg.id, seed), uuid.uuid4().hex)
                gen = worker.run_unit.options(num_returns="streaming").remote(cfg.id, seed, shard, run)
                session = {"id": store.start_run(cfg.id, seed, time.time()), "problems": 0, "cfg": cfg, "seed": seed}
                active[gen] = (worker, session, time.perf_counter())
            ready, _ = ray.wait(list(active), num_returns=1)
            for gen in ready:
                worker, session, t0 = active[gen]
                try:
                    ref = next(gen)
                except StopIteration:
                    del active[gen]
                    idle.append(worker)
                    continue
                row, samples, facts = ray.get(ref)
                session["problems"] += 1
                run_row = {
                    "id": session["id"],
                    "wall": time.perf_counter() - t0,
                    "problems": session["problems"],
                    "peak_rss_kb": None,
                    **facts,
                }
                store.add_result(row, samples, run=run_row)
                ran += 1
                key = (session["cfg"].id, session["seed"])
                stored[key] += 1
                if runner.progress is not None:
                    label = session["cfg"].label
                    label = f"{label} seed={session['seed']}" if len(study.spec.seeds) > 1 else label
                    runner.progress(label, stored[key], total[key])
    finally:
        for worker in pool:
            ray.kill(worker)
    return ran, skipped
