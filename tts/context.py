"""The context a strategy solves a problem in: what strategies and verifiers may touch.

One :class:`Context` per problem (and one child per limited stage). It is the only way a strategy
reaches the engine (:meth:`Context.submit` / :meth:`Context.generate`, through the shared
scheduler, which batches, merges and counts), the verifiers (:meth:`Context.verify`) and the
retriever (:meth:`Context.retrieve`). It also carries:

- the problem's limits: every submit is admitted by each :class:`~tts.limits.Budget` on the way
  from this context up to the run (its own, its parents', the run's total), which may cap the
  request's ``max_tokens`` or raise :class:`~tts.errors.BudgetExceeded` /
  :class:`~tts.errors.RequestTimeout`;
- the backend's capabilities (``ctx.capabilities``), so nothing below reaches into the backend;
- the problem's trace (every request, completion and verifier call) and usage. Usage is charged by
  the scheduler, once, into every budget and usage sink of the context chain: a child's spend is
  its parent's spend as it happens, with nothing to add up afterwards;
- seeding: with ``seed_requests`` every unseeded request gets a seed derived from the problem's
  seed and its position in the problem, so a problem's samples are the same whatever else runs
  (studies use this; the scheduler does not merge seeded requests).
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from tts.errors import ConfigError
from tts.limits import Budget, Limits
from tts.scheduler import Scheduler
from tts.task import Task
from tts.types import Candidate, Completion, Problem, Request, Score, Trace, TraceEvent, Usage

if TYPE_CHECKING:
    from tts.backends.base import Capabilities, Handle
    from tts.watch import Watcher

__all__ = ["Context"]

T = TypeVar("T")


class _Shared:
    """What a problem's contexts (the problem's and its children) share."""

    __slots__ = ("first_submit", "requests", "stages")

    def __init__(self) -> None:
        self.stages: dict[object, Budget] = {}
        """Budgets of limited stages, one per stage for the problem."""
        self.requests = 0
        """Requests seeded so far (the next seed's position)."""
        self.first_submit: float | None = None
        """When the problem first submitted a request (its latency starts there)."""


DEFAULT_TASK = Task()
"""The task of a context given none (one frozen instance: what is cached per task stays cached)."""


class Context:
    """Per-problem handle on the scheduler, the task, verifiers, the retriever, limits, trace and usage."""

    __slots__ = (
        "_budgets",
        "_rng",
        "_shared",
        "_sinks",
        "_verifying",
        "_watch",
        "priority",
        "problem",
        "retriever",
        "scheduler",
        "seed",
        "seed_requests",
        "task",
        "tenant",
        "trace",
        "usage",
        "verifier",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        task: Task | None = None,
        *,
        problem: Problem | None = None,
        seed: int | None = None,
        verifier: Any = None,
        limits: Limits | None = None,
        retriever: Any = None,
        seed_requests: bool = False,
        budgets: Sequence[Budget] = (),
        sinks: Sequence[Usage] = (),
        priority: int = 0,
        tenant: str | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.priority = priority
        """Added to every request's priority (lower runs earlier): a run's urgency over the
        strategy's own ordering (interactive 0, batch 1, say)."""
        self.tenant = tenant
        """Whose requests these are, for the scheduler's weighted fair share (:mod:`tts.fair`)."""
        self.task = task if task is not None else DEFAULT_TASK
        self.problem = problem
        self.seed = seed
        self._rng: random.Random | None = None
        self.usage = Usage()
        self.trace = Trace()
        self.verifier = verifier
        self.retriever = retriever
        self.seed_requests = seed_requests
        self._shared = _Shared()
        self._verifying = False
        self._watch: Callable[[Request], Watcher] | None = None
        own = [self._budget(limits, "problem")] if limits is not None and limits.active() else []
        self._budgets: tuple[Budget, ...] = (*own, *budgets)
        # every usage this context's spend is charged to: its own, its budgets', its parents'
        self._sinks: tuple[Usage, ...] = (self.usage, *(b.spent for b in own), *sinks)

    def _budget(self, limits: Limits, label: str) -> Budget:
        if limits.max_cost is not None and self.scheduler.pricing is None:
            raise ConfigError(
                f"{label}: limits.max_cost needs prices: set the backend's pricing option "
                "(USD per million prompt, cached and completion tokens) or drop max_cost."
            )
        return Budget(limits, label, self.scheduler.clock)

    # -------------------------------------------------------------------------------- family

    def _child(self, budgets: tuple[Budget, ...], sinks: tuple[Usage, ...], problem: Problem | None) -> Context:
        child = Context(
            self.scheduler,
            self.task,
            problem=problem or self.problem,
            seed=self.seed,
            verifier=self.verifier,
            retriever=self.retriever,
            seed_requests=self.seed_requests,
            budgets=budgets,
            sinks=sinks,
            priority=self.priority,
            tenant=self.tenant,
        )
        child._shared = self._shared
        child._verifying = self._verifying
        child._watch = self._watch
        child.trace = self.trace
        return child

    def child(self, problem: Problem | None = None) -> Context:
        """A context for a sub-run (an ensemble member): its own usage, charged to this one's too,
        the same trace, budgets and seeding."""
        return self._child(self._budgets, self._sinks, problem)

    def limited(self, limits: Limits | None, label: str, key: object = None) -> Context:
        """A child context for one stage of a strategy, admitted against ``limits`` as well as every
        limit above it. The stage's budget is per problem: every call of the stage on this problem
        (the same ``key``, default ``(label, limits)``) spends from one budget, whose wall time
        starts at the stage's first call."""
        if limits is None or not limits.active():
            return self.child()
        stages = self._shared.stages
        budget = stages.get(key := key if key is not None else (label, limits))
        if budget is None:
            budget = stages[key] = self._budget(limits, label)
        return self._child((budget, *self._budgets), (budget.spent, *self._sinks), None)

    def watching(self, make: Callable[[Request], Watcher], who: str) -> Context:
        """A child context whose every request carries a fresh watcher, ``make(request)``, that may
        cut its samples mid-generation (:mod:`tts.watch`; the request asks for chosen-token
        logprobs, which the watcher reads). ``who`` names the caller in the one-line refusal of a
        backend that cannot stream."""
        if not self.capabilities.streaming:
            from tts.backends.base import STREAMING_FIX

            raise ConfigError(f"{who}: " + STREAMING_FIX.format(backend=self.scheduler.name))
        child = self.child()
        child._watch = make
        return child

    async def within(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` under the nearest wall-time limit; raise :class:`RequestTimeout` past
        it. On a virtual clock (the fake backend's) time passes inside the engine, not while we
        wait, so the limit is also checked when the work returns."""
        timed = [b for b in self._budgets if b.limits.max_wall_time is not None]
        if not timed:
            return await awaitable
        budget = min(timed, key=lambda b: b.remaining_time() or 0.0)
        try:
            result = await asyncio.wait_for(awaitable, max(budget.remaining_time() or 0.0, 0.0))
        except asyncio.TimeoutError:
            raise budget.timeout() from None
        late = next((b for b in timed if (b.remaining_time() or 0.0) < 0), None)
        if late is not None:
            raise late.timeout()
        return result

    # -------------------------------------------------------------------------------- engine

    @property
    def rng(self) -> random.Random:
        """The problem's random generator, seeded with its seed (made on first use)."""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    @property
    def first_submit(self) -> float | None:
        """When this problem first submitted a request (through any of its contexts)."""
        return self._shared.first_submit

    @property
    def clock(self) -> Callable[[], float]:
        return self.scheduler.clock

    @property
    def capabilities(self) -> Capabilities:
        """What the backend can do (constraints, logprobs, beam search, ...)."""
        return self.scheduler.capabilities

    def submit(self, request: Request) -> Handle:
        """Queue a request (after the limits admit it); await the handle for its completions or
        cancel it (early stopping)."""
        for budget in self._budgets:
            request = budget.admit(request)
        shared = self._shared
        if self.seed_requests and request.params.seed is None and self.seed is not None:
            seed = zlib.crc32(f"{self.seed}:{shared.requests}".encode())
            shared.requests += 1
            request = replace(request, params=request.params.model_copy(update={"seed": seed}))
        if self.priority:
            request = replace(request, priority=request.priority + self.priority)
        if self._watch is not None:
            p = request.params
            params = p if p.logprobs is not None else p.replace(logprobs=0)
            request = replace(request, params=params, watch=self._watch(request))
        if self.tenant is None:
            handle = self.scheduler.submit(request, self._sinks, verifier=self._verifying)
        else:
            handle = self.scheduler.submit(request, self._sinks, verifier=self._verifying, tenant=self.tenant)
        start = self.scheduler.clock()
        if shared.first_submit is None:
            shared.first_submit = start
        handle.future.add_done_callback(lambda fut: self._record(request, fut, start))
        return handle

    def _record(self, request: Request, fut: asyncio.Future[list[Completion]], start: float) -> None:
        if fut.cancelled():
            note = "cancelled"
        elif (exc := fut.exception()) is not None:
            note = f"{type(exc).__name__}: {exc}"
        else:
            self.trace.add(TraceEvent("generate", request, fut.result(), start, self.scheduler.clock()))
            return
        self.trace.add(TraceEvent("generate", request, [], start, self.scheduler.clock(), note=note))

    async def generate(self, request: Request) -> list[Completion]:
        """The completions of one request (n of them)."""
        return await self.submit(request)

    async def generate_many(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """The completions of several requests, all in flight at once."""
        if len(requests) == 1:  # the common case, without a gathering future
            return [await self.submit(requests[0])]
        handles = [self.submit(r) for r in requests]
        return list(await asyncio.gather(*handles))

    # -------------------------------------------------------------------------------- answers

    def parse(self, completion: Completion) -> Candidate:
        """A candidate from a completion: the task's answer extraction and canonical key (the
        assistant prefix the request was sent with is part of the answer's text)."""
        task = self.task
        prefix = task.assistant_prefix
        text = prefix + completion.text if prefix else completion.text
        answer = task.extract(text)
        return Candidate(
            text=text,
            answer=answer,
            key=task.canonical(answer) if answer is not None else None,
            completion=completion,
        )

    def canonical(self, answer: str | None) -> str:
        return self.task.canonical(answer)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return self.task.equivalent(a, b)

    # -------------------------------------------------------------------------------- verifiers, retrieval

    async def verify(self, candidates: list[Candidate], verifier: Any = None) -> list[Score]:
        """Score candidates with ``verifier`` (or the context's), append the scores to them, record
        the call in the trace and charge it (once, through the scheduler): one verifier call per
        candidate, and the engine requests the verifier makes as verifier tokens."""
        v = verifier or self.verifier
        if v is None or self.problem is None:
            raise ConfigError("ctx.verify needs a verifier: pass one or give the runner verifier=...")
        start = self.scheduler.clock()
        name = getattr(v, "name", type(v).__name__)
        judge = self.child()
        judge._verifying = True  # what the verifier asks of the engine is charged as verifier tokens
        judge._watch = None  # a strategy's watcher reads its own samples, not a judge's
        try:
            scores: list[Score] = await v.score(self.problem, candidates, judge)
        except Exception as exc:
            self.trace.add(
                TraceEvent(
                    "verify", None, [], start, self.scheduler.clock(), note=f"{name}: {type(exc).__name__}: {exc}"
                )
            )
            raise
        self.scheduler.charge(self._sinks, verifier_calls=len(candidates))
        for c, s in zip(candidates, scores, strict=True):
            c.scores.append(s)
        values = ", ".join(f"{s.value:.3g}" for s in scores[:16])
        more = f", ... ({len(scores)} scores)" if len(scores) > 16 else ""
        self.trace.add(TraceEvent("verify", None, [], start, self.scheduler.clock(), note=f"{name}: [{values}{more}]"))
        return scores

    async def retrieve(self, query: str, k: int = 5) -> list[Any]:
        """The ``k`` passages the retriever finds for ``query`` (run off the event loop)."""
        if self.retriever is None:
            raise ConfigError(
                "ctx.retrieve needs a retriever: give the runner retriever=... or add a retriever to the pipeline."
            )
        start = self.scheduler.clock()
        search = getattr(self.retriever, "retrieve", self.retriever)
        found = search(query, k) if asyncio.iscoroutinefunction(search) else asyncio.to_thread(search, query, k)
        passages: list[Any] = list(await found)  # an async retriever is awaited, a sync one runs in a thread
        self.trace.add(
            TraceEvent("retrieve", None, [], start, self.scheduler.clock(), note=f"{query!r}: {len(passages)} passages")
        )
        return passages
