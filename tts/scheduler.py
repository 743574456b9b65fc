"""The scheduler: the single path from strategies to a backend.

Every request of every problem in flight goes through :meth:`Scheduler.submit`. Requests submitted
in the same event-loop turn are flushed together: identical prompts with identical sampling
parameters (unseeded sampling, no watcher) are merged into one n-sampling request, so the prompt is prefilled
once; the rest go to the backend in priority order, where the backend batches them. Usage is counted
here, once, for everything: each logical request charges its sinks (the usage of its context and of
every budget and parent context above it) and the scheduler's total; ``cost`` comes from the
backend's ``pricing`` (USD per million tokens), when it has one.

Accounting rule: a request's ``prompt_tokens`` is its prompt length; ``cached_prompt_tokens`` is the
part the engine did not compute (its prefix cache, or a prompt shared by merged requests: the first
request of a merge is charged the engine's computation, the others have their whole prompt cached).

Cancelled requests: a request cancelled while queued here or in the backend costs nothing; one
cancelled while the engine ran it is charged what the engine generated (the backend handle resolves
with the partial completions, marked ``finish_reason="abort"``; ``completions`` counts only the
finished ones), beside ``cancelled=1``.

Short answers: a backend that returns fewer samples than asked (an OpenAI-compatible server that
caps ``n``) is asked again for the rest, at most ``MAX_TOP_UPS`` times; a request still short then
fails with :class:`~tts.errors.BackendError`, never silently with fewer samples.

Optional: a request cache (``cache=``, :mod:`tts.cache`) answers repeated requests before the
engine (a hit charges ``cache_hits`` and no tokens); a weighted fair share (``fair=``,
:mod:`tts.fair`) holds requests back by tenant (``submit(..., tenant=...)``) so runs sharing the
engine get decode tokens in proportion to their weights.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tts.backends.base import Backend, Capabilities, Handle
from tts.errors import BackendError, Cancelled
from tts.types import Completion, Request, Usage

if TYPE_CHECKING:
    from tts.cache import RequestCache
    from tts.fair import FairShare
    from tts.sampling import SamplingParams

log = logging.getLogger(__name__)

MAX_TOP_UPS = 2
"""How often the scheduler asks again for samples a backend did not return before failing."""

Sinks = tuple[Usage, ...]
"""Where one logical request's usage is charged: its context's usage and every budget above it."""

__all__ = ["Scheduler", "SchedulerStats"]


@dataclass
class SchedulerStats:
    flushes: int = 0
    logical_requests: int = 0
    backend_requests: int = 0
    merged_requests: int = 0
    top_ups: int = 0
    """Requests sent again for samples a backend did not return."""


class _Pending:
    __slots__ = ("handle", "sinks", "tenant", "verifier")

    def __init__(self, handle: Handle, sinks: Sinks, verifier: bool, tenant: str = "") -> None:
        self.handle = handle
        self.sinks = sinks
        self.verifier = verifier
        self.tenant = tenant


class Scheduler:
    """Coalesces, merges, orders and counts requests on their way to one backend.

    ``merge``: merge identical unseeded sampling requests into one n-sampling request.
    ``clock``: time source for latencies (the backend's virtual clock when it has one).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        merge: bool = True,
        clock: Callable[[], float] | None = None,
        cache: RequestCache | None = None,
        fair: FairShare[tuple[Request, list[_Pending]]] | None = None,
    ) -> None:
        self.backend = backend
        self.merge = merge
        self.clock: Callable[[], float] = clock or getattr(backend, "clock", None) or time.perf_counter
        self.usage = Usage()
        self.pricing: Any = getattr(backend, "pricing", None)
        self.capabilities: Capabilities = backend.capabilities
        self.stats = SchedulerStats()
        self.on_deliver: list[Callable[[], None]] = []
        """Called after each backend result is delivered (progress displays)."""
        self._queue: list[_Pending] = []
        self._flush_scheduled = False
        self._inflight: dict[Handle, list[_Pending]] = {}
        self._samples_queued = 0
        self._samples_running = 0
        self.cache: RequestCache | None = cache
        """The request cache (:mod:`tts.cache`): looked up before the engine, filled after it."""
        self._model_identity: str | None = None
        self.fair = fair
        """Weighted fair share between tenants (:mod:`tts.fair`): requests wait here for their
        tenant's turn, at most ``fair.capacity`` sequences in the engine."""

    @property
    def model_identity(self) -> str:
        """The backend's model identity in cache keys (:func:`tts.cache.identity`), found once."""
        if self._model_identity is None:
            from tts.cache import identity

            self._model_identity = identity(self.backend)
        return self._model_identity

    def _from_cache(self, pending: _Pending) -> bool:
        """Answer ``pending`` from the cache: no tokens spent, a hit counted. False on a miss."""
        assert self.cache is not None
        completions = self.cache.get(self.model_identity, pending.handle.request)
        if completions is None:
            return False
        tokens = (completions[0].prompt_tokens if completions else 0) + sum(c.token_count for c in completions)
        self.charge(pending.sinks, cache_hits=1, cache_hit_tokens=tokens, completions=len(completions))
        pending.handle.future.set_result(completions)
        return True

    @property
    def name(self) -> str:
        return getattr(self.backend, "name", type(self.backend).__name__)

    @property
    def samples_in_flight(self) -> int:
        """Samples queued here or running in the backend (what adaptive look-ahead fills up to the
        engine's slots)."""
        return self._samples_queued + self._samples_running

    def submit(
        self, request: Request, usage: Usage | Sinks = (), *, verifier: bool = False, tenant: str | None = None
    ) -> Handle:
        """Queue ``request``; charge its usage to ``usage`` (one sink or several) and the scheduler's total.
        ``verifier``: the request is a verifier's (a judge's), so its tokens are charged as verifier tokens."""
        self.capabilities.check(request, self.name)
        loop = asyncio.get_running_loop()
        handle = Handle(request, loop.create_future(), self._cancel)
        # a waiter cancelled by asyncio (a timeout, a client gone) withdraws the request as cancel() does
        handle.future.add_done_callback(functools.partial(self._cancelled_waiter, handle))
        self._queue.append(_Pending(handle, (usage,) if isinstance(usage, Usage) else usage, verifier, tenant or ""))
        self._samples_queued += request.params.n
        self.stats.logical_requests += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return handle

    def _cancelled_waiter(self, handle: Handle, fut: asyncio.Future[list[Completion]]) -> None:
        if fut.cancelled():
            self._cancel(handle)

    def _cancel(self, handle: Handle) -> None:
        for i, pending in enumerate(self._queue):
            if pending.handle is handle:
                del self._queue[i]
                self._samples_queued -= handle.request.params.n
                self.charge(pending.sinks, cancelled=1)
                return
        for _, waiting in self.fair.items() if self.fair is not None else ():
            for pending in waiting:
                if pending.handle is handle:  # waiting for its tenant's turn: dropped when it comes
                    self.charge(pending.sinks, cancelled=1)
                    return
        # in flight: the backend handle is cancelled once none of its logical requests wants it
        for backend_handle, group in list(self._inflight.items()):
            if any(p.handle is handle for p in group):
                self.charge(next(p.sinks for p in group if p.handle is handle), cancelled=1)
                if all(p.handle is handle or p.handle.done() for p in group):
                    backend_handle.cancel()

    def charge(self, sinks: Sinks, **counts: Any) -> None:
        """Add ``counts`` (Usage fields) to every sink and to the scheduler's total."""
        for target in (self.usage, *sinks):
            for key, value in counts.items():
                setattr(target, key, getattr(target, key) + value)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue, self._queue = self._queue, []
        self._samples_queued = 0
        if self.cache is not None:
            asked = len(queue)
            queue = [p for p in queue if p.handle.done() or not self._from_cache(p)]
            for listener in self.on_deliver if len(queue) < asked else ():
                listener()
        if not queue:
            return
        self.stats.flushes += 1
        # mergeable requests grouped by prompt first, then (only where a prompt repeats) by their
        # sampling parameters but n: most prompts are unique and cost no parameter copy
        by_prompt: dict[Any, list[_Pending]] = {}
        singles: list[list[_Pending]] = []
        for pending in queue:
            req = pending.handle.request
            p = req.params
            if self.merge and p.seed is None and not p.greedy and p.beam_width is None and req.watch is None:
                key = (req.prompt, req.assistant_prefix, req.priority, pending.tenant)
                by_prompt.setdefault(key, []).append(pending)
            else:
                singles.append([pending])
        batches: list[list[_Pending]] = []
        for same_prompt in by_prompt.values():
            if len(same_prompt) == 1:
                batches.append(same_prompt)
                continue
            groups: dict[SamplingParams, list[_Pending]] = {}
            for pending in same_prompt:
                groups.setdefault(pending.handle.request.params.with_n(1), []).append(pending)
            batches += groups.values()
        batches += singles
        batches.sort(key=lambda g: g[0].handle.request.priority)
        for group in batches:
            first = group[0].handle.request
            if len(group) == 1:
                request = first
            else:
                total = sum(p.handle.request.params.n for p in group)
                request = Request(first.prompt, first.params.with_n(total), first.priority, first.assistant_prefix)
                self.stats.merged_requests += len(group) - 1
            if self.fair is None:
                self._send(request, group)
            else:
                self.fair.push(group[0].tenant, (request, group), request.params.n, request.params.max_tokens)
        if self.fair is not None:
            self._release()

    def _release(self) -> None:
        """Send what the fair share releases (requests cancelled while they waited are dropped)."""
        assert self.fair is not None
        for tenant, (request, group), sequences, estimate in self.fair.pop():
            live = [p for p in group if not p.handle.done()]
            if len(live) < len(group):
                request = Request(
                    request.prompt,
                    request.params.with_n(sum(p.handle.request.params.n for p in live)),
                    request.priority,
                    request.assistant_prefix,
                )
            if not live:
                self.fair.done(tenant, sequences, estimate, 0, 0)
                continue
            self._send(request, live, fair=(tenant, sequences, estimate))

    def _fair_done(self, fair: tuple[str, int, float], fut: asyncio.Future[list[Completion]]) -> None:
        assert self.fair is not None
        tenant, sequences, estimate = fair
        done = [] if fut.cancelled() or fut.exception() is not None else fut.result()
        self.fair.done(tenant, sequences, estimate, sum(c.token_count for c in done), len(done))
        self._release()

    def _deliver(
        self,
        backend_handle: Handle,
        group: list[_Pending],
        fut: asyncio.Future[list[Completion]],
        earlier: list[Completion] | None = None,
        attempt: int = 0,
    ) -> None:
        if self._inflight.pop(backend_handle, None) is not None:
            self._samples_running -= backend_handle.request.params.n
        exc = fut.exception()
        if exc is not None:
            for p in group:
                if not isinstance(exc, Cancelled):
                    self.charge(p.sinks, failures=1)
                if not p.handle.done():
                    p.handle.future.set_exception(exc)
            return
        completions = [*earlier, *fut.result()] if earlier else fut.result()
        wanted = sum(p.handle.request.params.n for p in group)
        if len(completions) < wanted and attempt < MAX_TOP_UPS and not all(p.handle.done() for p in group):
            self._top_up(group, completions, wanted, attempt + 1)
            return
        start = 0
        for i, p in enumerate(group):
            n = p.handle.request.params.n
            mine = completions[start : start + n]
            start += n
            aborted = p.handle.cancelled()  # cancelled in flight: charge what the engine generated
            if len(mine) < n and not aborted:
                self.charge(
                    p.sinks, failures=1, completions=len(mine), completion_tokens=sum(c.token_count for c in mine)
                )
                if not p.handle.done():
                    p.handle.future.set_exception(
                        BackendError(
                            f"backend {self.name!r} returned {len(mine)} of {n} samples after {attempt} top-up "
                            "requests; check the server's n support or lower n."
                        )
                    )
                continue
            if mine:
                prompt_tokens = mine[0].prompt_tokens
                cached = mine[0].cached_prompt_tokens if i == 0 else prompt_tokens
                if i > 0:
                    for c in mine:
                        c.cached_prompt_tokens = prompt_tokens
            else:
                prompt_tokens = cached = 0
            completion_tokens = sum(c.token_count for c in mine)
            if p.verifier:
                counts: dict[str, Any] = {
                    "calls": 1,
                    "verifier_prompt_tokens": prompt_tokens,
                    "verifier_completion_tokens": completion_tokens,
                }
            else:
                counts = {
                    "calls": 1,
                    "prompt_tokens": prompt_tokens,
                    "cached_prompt_tokens": cached,
                    "completion_tokens": completion_tokens,
                    "completions": sum(c.finish_reason != "abort" for c in mine),
                }
            if self.pricing is not None:
                counts["cost"] = self.pricing.cost(prompt_tokens, cached, completion_tokens)
            self.charge(p.sinks, **counts)
            if not p.handle.done():
                p.handle.future.set_result(mine)
            if self.cache is not None and not aborted:
                self.cache.put(self.model_identity, p.handle.request, mine)
        for listener in self.on_deliver:
            listener()

    def _top_up(self, group: list[_Pending], got: list[Completion], wanted: int, attempt: int) -> None:
        """Ask again for the samples a backend did not return (a server that caps n, say)."""
        first = group[0].handle.request
        params = first.params.with_n(wanted - len(got))
        if params.seed is not None:  # the same seed would repeat the same samples
            params = params.model_copy(update={"seed": params.seed + 7919 * attempt})
        request = Request(first.prompt, params, first.priority, first.assistant_prefix)
        log.info(
            "backend %s returned %d of %d samples; asking for the rest (top-up %d)",
            self.name,
            len(got),
            wanted,
            attempt,
        )
        self.stats.top_ups += 1
        self._send(request, group, earlier=got, attempt=attempt)

    def _send(
        self, request: Request, group: list[_Pending], fair: tuple[str, int, float] | None = None, **deliver: Any
    ) -> None:
        """Hand ``request`` (for every logical request of ``group``) to the backend; a backend that
        refuses it fails the group. ``fair``: (tenant, sequences, estimate) the fair share released."""
        try:
            backend_handle = self.backend.submit(request)
        except Exception as exc:
            if fair is not None and self.fair is not None:
                self.fair.done(*fair, 0, 0)
                asyncio.get_running_loop().call_soon(self._release)  # the next waiting request goes
            for p in group:
                self.charge(p.sinks, failures=1)
                if not p.handle.done():
                    p.handle.future.set_exception(exc)
            return
        self.stats.backend_requests += 1
        self._inflight[backend_handle] = group
        self._samples_running += backend_handle.request.params.n
        if fair is not None:
            backend_handle.future.add_done_callback(functools.partial(self._fair_done, fair))
        backend_handle.future.add_done_callback(functools.partial(self._deliver, backend_handle, group, **deliver))
