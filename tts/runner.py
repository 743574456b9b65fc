"""Running strategies over problems: bounded concurrency, results as they finish, a summary.

``arun`` is the async entry point; ``run`` blocks (and also works inside an already running event
loop, as in Jupyter, by running in a helper thread). Every problem gets its own
:class:`~tts.context.Context`; all share one :class:`~tts.scheduler.Scheduler`, so requests of
all problems in flight are batched together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tts.backends.base import Backend
from tts.context import Context
from tts.errors import RequestTimeout
from tts.limits import Budget, Limits
from tts.metrics import latency_stats, request_latencies, throughput
from tts.scheduler import Scheduler
from tts.secrets import redact
from tts.strategy import Strategy
from tts.task import Task
from tts.types import Problem, Result, Status, Trace, Usage

__all__ = [
    "Comparison",
    "Report",
    "RunProgress",
    "Summary",
    "arun",
    "as_scheduler",
    "compare",
    "problem_seed",
    "run",
    "run_sync",
    "solve",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Summary:
    """Aggregates of one run."""

    strategy: str
    problems: int
    scored: int
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    prompt_tokens_per_problem: float
    cached_prompt_tokens_per_problem: float
    completion_tokens_per_problem: float
    calls_per_problem: float
    latency_p50: float
    latency_p95: float
    wall_time: float
    failures: int
    usage: Usage
    accuracy_answered: float | None = None
    """Accuracy over the problems that were answered (not failed, not timed out): named apart,
    because leaving failures out of the denominator flatters a configuration that fails."""
    failure_rate: float = 0.0
    timeout_rate: float = 0.0
    cut_rate: float = 0.0
    """Answered, but cut short by a budget (the answer counts in ``accuracy``)."""
    empty_rate: float = 0.0
    """Answered problems whose answer is missing or empty."""
    request_latency_p50: float = math.nan
    """Submit to completion of one engine request, seconds."""
    request_latency_p95: float = math.nan
    qps: float = math.nan
    """Problems finished per second of the run's wall time."""

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "usage"}
        d["usage"] = self.usage.to_dict()
        return d

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines of the summary, as every table of runs shows them."""
        acc = (
            "n/a"
            if self.accuracy is None or self.accuracy_ci is None
            else (f"{self.accuracy:.3f} [{self.accuracy_ci[0]:.3f}, {self.accuracy_ci[1]:.3f}]")
        )
        answered = "n/a" if self.accuracy_answered is None else f"{self.accuracy_answered:.3f}"
        u, n = self.usage, max(self.problems, 1)
        return [
            ("accuracy [95% CI]", acc),
            ("accuracy over answered", answered),
            ("problems", str(self.problems)),
            ("failed / timed out / cut", f"{self.failure_rate:.1%} / {self.timeout_rate:.1%} / {self.cut_rate:.1%}"),
            ("empty answers", f"{self.empty_rate:.1%}"),
            ("prompt tokens / problem", f"{self.prompt_tokens_per_problem:.1f}"),
            ("cached prompt tokens / problem", f"{self.cached_prompt_tokens_per_problem:.1f}"),
            ("completion tokens / problem", f"{self.completion_tokens_per_problem:.1f}"),
            ("verifier tokens / problem", f"{u.verifier_tokens / n:.1f}"),
            ("calls / problem", f"{self.calls_per_problem:.2f}"),
            ("latency P50 / P95 (s)", f"{self.latency_p50:.3f} / {self.latency_p95:.3f}"),
            ("request latency P50 / P95 (s)", f"{self.request_latency_p50:.3f} / {self.request_latency_p95:.3f}"),
            ("problems / s", f"{self.qps:.3f}"),
            ("wall time (s)", f"{self.wall_time:.2f}"),
        ] + ([("cost (USD)", f"{u.cost:.6f}")] if u.cost else [])

    def __str__(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        return "\n".join([self.strategy, *(f"  {label:<{width}}  {value}" for label, value in self.rows())])


@dataclass
class Report:
    """Results of one run (in problem order) and its summary."""

    results: list[Result]
    wall_time: float
    usage: Usage
    strategy: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    unstarted: int = 0
    """Problems never started because the run's total limits were spent."""

    @property
    def accuracy(self) -> float | None:
        """Correct over every scored problem: a failed or timed-out problem counts as wrong."""
        scored = [r.correct for r in self.results if r.correct is not None]
        return sum(scored) / len(scored) if scored else None

    def summary(self) -> Summary:
        from tts.stats import bootstrap_ci  # numpy: loaded when a summary is asked for

        n = max(len(self.results), 1)
        scored = [float(bool(r.correct)) for r in self.results if r.correct is not None]
        acc = ci = None
        if scored:
            acc, lo, hi = bootstrap_ci(scored)
            ci = (lo, hi)
        latency = latency_stats(r.latency for r in self.results if r.ok)
        requests = latency_stats(request_latencies(r.trace for r in self.results))
        u = self.usage
        return Summary(
            strategy=self.strategy,
            problems=len(self.results),
            scored=len(scored),
            accuracy=acc,
            accuracy_ci=ci,
            prompt_tokens_per_problem=u.prompt_tokens / n,
            cached_prompt_tokens_per_problem=u.cached_prompt_tokens / n,
            completion_tokens_per_problem=u.completion_tokens / n,
            calls_per_problem=u.calls / n,
            latency_p50=latency.p50,
            latency_p95=latency.p95,
            request_latency_p50=requests.p50,
            request_latency_p95=requests.p95,
            qps=throughput(len(self.results), self.wall_time),
            wall_time=self.wall_time,
            failures=sum(1 for r in self.results if not r.ok),
            usage=u,
            accuracy_answered=_mean([float(bool(r.correct)) for r in self.results if r.ok and r.correct is not None]),
            failure_rate=self._rate("failed"),
            timeout_rate=self._rate("timeout"),
            cut_rate=self._rate("cut"),
            empty_rate=sum(1 for r in self.results if r.ok and not (r.answer or "").strip()) / n,
        )

    def _rate(self, status: str) -> float:
        return sum(1 for r in self.results if r.status == status) / max(len(self.results), 1)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Where a run is: problems finished, samples and tokens landed so far, seconds since it started."""

    done: int
    total: int
    completions: int
    completion_tokens: int
    elapsed: float
    failed: int = 0


def _strategy_name(strategy: Strategy) -> str:
    return getattr(strategy, "name", type(strategy).__name__)


def _status(exc: BaseException) -> Status:
    return "timeout" if isinstance(exc, RequestTimeout | asyncio.TimeoutError) else "failed"


async def _solve_one(strategy: Strategy, problem: Problem, ctx: Context) -> Result:
    clock = ctx.clock
    start = clock()
    try:
        result = await ctx.within(strategy.solve(problem, ctx))
        if result.correct is None and problem.reference is not None and result.ok:
            result.correct = result.answer is not None and ctx.equivalent(result.answer, problem.reference)
    except Exception as exc:  # one problem's failure (a bad problem included) must not sink the run
        error = redact(f"{type(exc).__name__}: {exc}")  # a server may echo an API key in its error
        log.warning("problem %s failed: %s", problem.id, error)
        result = Result(problem=problem, answer=None, error=error, status=_status(exc))
        # a failed or timed-out problem is scored wrong: accuracy never leaves it out
        result.correct = False if isinstance(getattr(problem, "reference", None), str) else None
    # latency runs from the problem's first request (time queued behind other problems is not its own)
    result.latency = clock() - (ctx.first_submit if ctx.first_submit is not None else start)
    result.usage = ctx.usage
    result.usage.wall_time = result.latency
    result.trace = ctx.trace
    result.strategy = result.strategy or _strategy_name(strategy)
    return result


def problem_seed(seed: int, problem: Problem) -> int:
    """The seed of one problem in a run seeded with ``seed`` (the same whatever else runs)."""
    return zlib.crc32(f"{seed}:{problem.id}".encode())


def as_scheduler(backend: Backend | Scheduler) -> Scheduler:
    """The scheduler of ``backend`` (a scheduler passes through): the one place this is decided."""
    return backend if isinstance(backend, Scheduler) else Scheduler(backend)


async def solve(
    strategy: Strategy,
    problem: Problem,
    backend: Backend | Scheduler,
    *,
    task: Task | None = None,
    seed: int | None = None,
    limits: Limits | None = None,
    verifier: Any = None,
    retriever: Any = None,
    seed_requests: bool = False,
    trace: Trace | None = None,
) -> Result:
    """Solve one problem. ``seed_requests``: seed every unseeded request from ``seed`` (see
    :func:`arun`); ``trace``: the trace to record into (one that reports events as they land)."""
    ctx = Context(
        as_scheduler(backend),
        task,
        problem=problem,
        seed=seed,
        limits=limits,
        verifier=verifier,
        retriever=retriever,
        seed_requests=seed_requests,
    )
    if trace is not None:
        ctx.trace = trace
    return await _solve_one(strategy, problem, ctx)


async def arun(
    strategy: Strategy,
    problems: Iterable[Problem],
    backend: Backend | Scheduler,
    *,
    task: Task | None = None,
    concurrency: int = 64,
    seed: int | None = 0,
    limits: Limits | None = None,
    total_limits: Limits | None = None,
    seed_requests: bool = False,
    on_result: Callable[[Result], None] | None = None,
    progress: Callable[[RunProgress], None] | None = None,
    verifier: Any = None,
    retriever: Any = None,
    priority: int = 0,
    tenant: str | None = None,
) -> Report:
    """Run ``strategy`` on every problem, at most ``concurrency`` problems in flight: the one problem
    loop (``tts.run``, the CLI, the demo and studies all come here).

    ``limits`` bound each problem; ``total_limits`` bound the whole run (no problem starts once
    one is reached, and requests in flight are capped by what remains: problems that do not start
    are left out of the report, and ``Report.unstarted`` counts them). ``seed`` seeds each
    problem's context (``problem_seed``); ``seed_requests`` also seeds every unseeded request, so a
    problem's samples do not depend on what else runs. ``on_result`` is called with each result as
    it finishes (write it to disk there); ``progress(RunProgress)`` after each problem and each time
    samples land (so a display moves before the first problem finishes). Results come back in
    problem order. ``priority`` is added to every request's priority (lower runs earlier: an
    interactive run at 0 before a batch run at 1 sharing the scheduler); ``tenant`` names the run
    for the scheduler's weighted fair share (:mod:`tts.fair`).
    """
    scheduler = as_scheduler(backend)
    items = list(problems)
    usage_before = scheduler.usage.to_dict()
    results: list[Result | None] = [None] * len(items)
    sem = asyncio.Semaphore(max(1, concurrency))
    done = 0
    clock = scheduler.clock
    start = clock()
    total = Budget(total_limits, "run", clock) if total_limits is not None and total_limits.active() else None
    budgets = (total,) if total is not None else ()
    sinks = (total.spent,) if total is not None else ()

    async def one(i: int, problem: Problem) -> None:
        nonlocal done
        async with sem:
            if total is not None and total.exhausted():
                return
            pseed = None if seed is None else problem_seed(seed, problem)
            ctx = Context(
                scheduler,
                task,
                problem=problem,
                seed=pseed,
                verifier=verifier,
                limits=limits,
                retriever=retriever,
                seed_requests=seed_requests,
                budgets=budgets,
                sinks=sinks,
                priority=priority,
                tenant=tenant,
            )
            result = await _solve_one(strategy, problem, ctx)
        results[i] = result
        done += 1
        failed[0] += not result.ok
        if on_result is not None:
            on_result(result)
        if progress is not None:
            report_progress()

    def report_progress() -> None:
        assert progress is not None
        u = scheduler.usage
        progress(
            RunProgress(
                done=done,
                total=len(items),
                completions=u.completions - completions_before,
                completion_tokens=u.completion_tokens - tokens_before,
                elapsed=clock() - start,
                failed=failed[0],
            )
        )

    failed = [0]
    completions_before, tokens_before = scheduler.usage.completions, scheduler.usage.completion_tokens
    if progress is not None:
        scheduler.on_deliver.append(report_progress)
    try:
        with fewer_collections():
            await asyncio.gather(*(one(i, p) for i, p in enumerate(items)))
    finally:
        if progress is not None:
            scheduler.on_deliver.remove(report_progress)
    wall = clock() - start
    after = scheduler.usage.to_dict()
    usage = Usage(**{k: after[k] - usage_before[k] for k in after})
    usage.wall_time = wall
    finished = [r for r in results if r is not None]
    return Report(
        results=finished,
        wall_time=wall,
        usage=usage,
        strategy=_strategy_name(strategy),
        unstarted=len(items) - len(finished),
    )


YOUNG_GENERATION = 10_000
"""The garbage collector's young-generation threshold while runs are in flight (CPython's default
is 700). A run allocates many short-lived objects per sample (requests, completions, candidates,
futures); at 700 the collector ran every few requests and cost about 2-3.6 us per completion in
``bench/overhead.py``-like workloads, mostly re-scanning objects still in flight."""

_runs_lock = threading.Lock()
_runs_in_flight = [0, 0]  # runs in flight in this process, the young threshold before the first


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's young-generation threshold to :data:`YOUNG_GENERATION` while a run
    is in flight, and restore it when the last run in flight ends (never lowered; a collector
    switched off stays off). Cyclic garbage is still collected, less often."""
    with _runs_lock:
        if _runs_in_flight[0] == 0:
            young, *older = gc.get_threshold()
            _runs_in_flight[1] = young
            if 0 < young < YOUNG_GENERATION:
                gc.set_threshold(YOUNG_GENERATION, *older)
        _runs_in_flight[0] += 1
    try:
        yield
    finally:
        with _runs_lock:
            _runs_in_flight[0] -= 1
            if _runs_in_flight[0] == 0:
                young, *older = gc.get_threshold()
                if young == YOUNG_GENERATION:  # unless someone set another meanwhile
                    gc.set_threshold(_runs_in_flight[1], *older)


def run_sync(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop (Jupyter)."""
    box: dict[str, Any] = {}

    async def main() -> None:
        # keep the result out of the task: asyncio.run formats the main task (and its result) on exit
        box["value"] = await coro_factory()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main())
        return box["value"]
    thread = threading.Thread(target=target, name="tts-run", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def run(strategy: Strategy, problems: Iterable[Problem], backend: Backend | Scheduler, **kw: Any) -> Report:
    """Blocking :func:`arun`."""
    items = list(problems)
    return run_sync(lambda: arun(strategy, items, backend, **kw))


@dataclass
class Comparison:
    """Paired comparison of two reports on the same problems: accuracy difference ``b - a``."""

    a: str
    b: str
    accuracy_a: float
    accuracy_b: float
    difference: float
    ci: tuple[float, float]
    problems: int

    @property
    def significant(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0


def compare(a: Report, b: Report, *, seed: int = 0) -> Comparison:
    """Accuracy of ``b`` minus ``a`` with a paired-bootstrap 95% interval (problems matched by id)."""
    from tts.stats import paired_bootstrap

    by_id = {r.problem.id: r for r in a.results}
    pairs = [(by_id[r.problem.id], r) for r in b.results if r.problem.id in by_id]
    xa = [float(bool(x.correct)) for x, _ in pairs]
    xb = [float(bool(y.correct)) for _, y in pairs]
    diff, lo, hi = paired_bootstrap(xa, xb, seed=seed)
    return Comparison(
        a=a.strategy,
        b=b.strategy,
        accuracy_a=sum(xa) / max(len(xa), 1),
        accuracy_b=sum(xb) / max(len(xb), 1),
        difference=diff,
        ci=(lo, hi),
        problems=len(pairs),
    )
