"""The backend protocol: ``submit(request) -> Handle``.

A backend takes one :class:`~tts.types.Request` at a time and returns a :class:`Handle` at once;
awaiting the handle gives the request's completions, ``handle.cancel()`` withdraws it. Batching
happens behind the handles (see :class:`Batcher`), so priorities, streaming and aborts can change
inside a backend without changing any caller.

A backend declares :class:`Capabilities`; :meth:`Capabilities.check` refuses a request that asks
for a control the backend lacks, naming the control and the backends that have it.

Every built-in backend takes its options as a pydantic model deriving from :class:`BackendOptions`
(``Backend(options)`` or ``Backend(**options)``, validated by :func:`tts.errors.parse_options`), and
every backend may carry ``pricing`` (:class:`Pricing`, USD per million tokens): the scheduler
charges ``Usage.cost`` from ``backend.pricing`` when it is set.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import Cancelled, ConfigError, UnsupportedControl, parse_options
from tts.types import Completion, Request

__all__ = ["Backend", "BackendOptions", "Batcher", "Capabilities", "Handle", "Pricing", "backend_options"]

OptionsT = TypeVar("OptionsT", bound="BackendOptions")

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True)


class Pricing(BaseModel):
    """What a backend's tokens cost, in USD per million tokens (``Usage.cost`` is charged from it).

    ``backend: {name: openai, pricing: {prompt: 0.15, cached_prompt: 0.075, completion: 0.6}}``
    """

    model_config = _STRICT

    prompt: float = Field(ge=0)
    """USD per million prompt tokens computed (not served from a prefix cache)."""
    completion: float = Field(ge=0)
    """USD per million generated tokens."""
    cached_prompt: float | None = Field(default=None, ge=0)
    """USD per million prompt tokens served from the prefix cache; ``None``: the ``prompt`` price."""

    def cost(self, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one request; ``prompt_tokens`` counts the cached ones too (as ``Usage`` does)."""
        cached = min(cached_prompt_tokens, prompt_tokens)
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        return (
            (prompt_tokens - cached) * self.prompt + cached * cached_price + completion_tokens * self.completion
        ) / 1e6


class BackendOptions(BaseModel):
    """Options every backend shares; each backend's ``Options`` derives from it.

    Strict types (no ``"4"`` for an int, no NaN), unknown keys refused with a did-you-mean.
    """

    model_config = _STRICT

    pricing: Pricing | None = None
    """USD per million prompt, cached prompt and completion tokens; ``None``: cost is not counted."""


def backend_options(
    model: type[OptionsT], options: OptionsT | Mapping[str, Any] | None, kw: Mapping[str, Any], *, name: str
) -> OptionsT:
    """A backend's options from ``options`` (an instance or a mapping) or keyword arguments, not both;
    a failure is one :class:`ConfigError` line, ``NAME backend: field must be ..., got V.``."""
    if options is not None and kw:
        raise ConfigError(f"{name} backend: pass either options=... or keyword options, not both.")
    return parse_options(model, kw if options is None else options, where=f"{name} backend")


STREAMING_FIX = (
    "backend {backend!r} cannot stream, so it cannot cut samples mid-generation (a request's watcher); "
    "use vllm with mode: async, openai with stream: true, or fake, or drop the watcher (cut: false)."
)
"""The one-line refusal of a watched request by a backend that cannot stream."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Requests asking for anything else are refused, never ignored."""

    n_sampling: bool = True
    """n samples of one prompt share one prefill."""
    prefix_reuse: bool = False
    """Prompts sharing a prefix reuse its KV cache across requests (prefix caching)."""
    logprobs: bool = False
    constraints: frozenset[str] = frozenset()
    """Supported constraint kinds among regex, choice, json, grammar."""
    beam_search: bool = False
    """Token-level beam search (``SamplingParams.beam_width``)."""
    priorities: bool = False
    """Lower ``Request.priority`` values are served first."""
    streaming: bool = False
    """Samples stream as they are generated: a request's watcher (:mod:`tts.watch`) can cut them."""
    aborts: bool = False
    """Cancelling an in-flight request stops its generation in the engine."""
    penalties: bool = False
    """repetition / presence / frequency penalties."""
    banned_words: bool = False
    min_p: bool = False
    seeds: bool = True
    """Per-request seeds give reproducible samples."""
    scoring: bool = False
    """Can score given texts (reward / pooling models)."""

    def missing(self, request: Request) -> list[str]:
        """The controls ``request`` asks for that this backend lacks."""
        p = request.params
        out = []
        if p.logprobs is not None and not self.logprobs:
            out.append("logprobs")
        if p.constraint is not None and p.constraint.kind not in self.constraints:
            out.append(f"constraint:{p.constraint.kind}")
        if p.beam_width is not None and not self.beam_search:
            out.append("beam_search")
        if (p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty) and not self.penalties:
            out.append("penalties")
        if p.banned_words and not self.banned_words:
            out.append("banned_words")
        if p.min_p and not self.min_p:
            out.append("min_p")
        if request.watch is not None and not self.streaming:
            out.append("streaming")
        return out

    def check(self, request: Request, backend: str) -> None:
        missing = self.missing(request)
        if missing:
            control = missing[0]
            if control == "streaming":
                raise UnsupportedControl(STREAMING_FIX.format(backend=backend))
            from tts.backends import known_capabilities

            others = [
                name
                for name, caps in known_capabilities().items()
                if name != backend and not caps.missing_control(control)
            ]
            where = f"; backends that have it: {', '.join(others)}" if others else ""
            raise UnsupportedControl(
                f"backend {backend!r} does not support {control.replace(':', ' ')}{where}. "
                f"Switch backend or drop the control from the sampling parameters."
            )

    def missing_control(self, control: str) -> bool:
        if control.startswith("constraint:"):
            return control.split(":", 1)[1] not in self.constraints
        attr = {
            "beam_search": "beam_search",
            "logprobs": "logprobs",
            "penalties": "penalties",
            "banned_words": "banned_words",
            "min_p": "min_p",
            "streaming": "streaming",
        }[control]
        return not getattr(self, attr)

    def describe(self) -> dict[str, Any]:
        return {f.name: (sorted(v) if isinstance(v := getattr(self, f.name), frozenset) else v) for f in fields(self)}


class Handle:
    """The awaitable outcome of one submitted request.

    ``await handle`` gives the list of completions; ``handle.cancel()`` withdraws queued work (and
    aborts in-flight work where the backend can). Awaiting a cancelled handle raises
    :class:`tts.errors.Cancelled` when nothing had run; when the engine had already generated
    (an in-flight request aborted, a running batch), it gives what was generated, the aborted
    samples marked ``finish_reason="abort"``, so whoever counts usage charges every token.
    """

    __slots__ = ("_cancel_hook", "future", "request")

    def __init__(
        self,
        request: Request,
        future: asyncio.Future[list[Completion]],
        cancel_hook: Callable[[Handle], bool | None] | None = None,
    ) -> None:
        self.request = request
        self.future = future
        self._cancel_hook = cancel_hook

    def __await__(self) -> Generator[Any, None, list[Completion]]:
        return self.future.__await__()

    def done(self) -> bool:
        return self.future.done()

    def cancelled(self) -> bool:
        fut = self.future
        return fut.done() and (fut.cancelled() or isinstance(fut.exception(), Cancelled))

    def cancel(self) -> bool:
        """Withdraw the request. Returns False when it had already finished.

        The owner's cancel hook withdraws queued work or aborts in-flight work. A hook that returns
        ``False`` keeps the handle open: the owner will still resolve it (with the partial or full
        output of work already running), so whoever counts usage sees every generated token.
        """
        if self.future.done():
            return False
        settle = True
        if self._cancel_hook is not None:
            settle = self._cancel_hook(self) is not False
        if settle and not self.future.done():
            self.future.set_exception(Cancelled("request cancelled"))
            self.future.exception()  # mark retrieved: nobody has to await a cancelled handle
        return True


@runtime_checkable
class Backend(Protocol):
    """One required method: ``submit``. ``name`` and ``capabilities`` describe the backend.

    Optional: ``pricing`` (a :class:`Pricing` or ``None``), read by the scheduler to charge cost.
    """

    name: ClassVar[str]
    capabilities: Capabilities

    def submit(self, request: Request) -> Handle:
        """Queue ``request``; return at once a handle to await or cancel."""
        ...


class _Entry:
    __slots__ = ("handle", "seq")

    def __init__(self, handle: Handle, seq: int) -> None:
        self.handle = handle
        self.seq = seq

    def __lt__(self, other: _Entry) -> bool:
        a, b = self.handle.request.priority, other.handle.request.priority
        return (a, self.seq) < (b, other.seq)


RunBatch = Callable[[list[Request]], Awaitable[list[list[Completion] | BaseException]]]


class Batcher:
    """Coalesces the requests submitted in one event-loop turn into one engine batch.

    ``run_batch(requests)`` runs one batch and returns each request's completions, or an exception
    for a request that failed alone; raising fails the whole batch.
    Batches run one at a time; requests submitted while a batch runs form the next batch, in
    priority order (lower first), at most ``max_batch`` requests each. Queued requests can be
    cancelled; a running batch is not interrupted: its results still reach the handles, so the
    tokens they cost are counted.
    """

    def __init__(self, run_batch: RunBatch, *, max_batch: int | None = None) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: list[_Entry] = []
        self._seq = itertools.count()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        """Engine batches run so far."""
        self.batch_sizes: list[int] = []

    def submit(self, request: Request) -> Handle:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (sync API called twice): start afresh
            self._loop, self._worker, self._queue = loop, None, []
        handle = Handle(request, loop.create_future(), self._cancel)
        heapq.heappush(self._queue, _Entry(handle, next(self._seq)))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return handle

    def _cancel(self, handle: Handle) -> bool:
        """Drop queued work; work already in a running batch finishes and is delivered (False)."""
        for i, entry in enumerate(self._queue):
            if entry.handle is handle:
                self._queue.pop(i)
                heapq.heapify(self._queue)
                return True
        return False

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let every task of this turn submit first
        while self._queue:
            take = len(self._queue) if self._max_batch is None else min(self._max_batch, len(self._queue))
            batch = [heapq.heappop(self._queue).handle for _ in range(take)]
            self.batches += 1
            self.batch_sizes.append(len(batch))
            try:
                outputs = await self._run_batch([h.request for h in batch])
            except Exception as exc:  # the engine failed: every request of the batch fails
                for h in batch:
                    if not h.future.done():
                        h.future.set_exception(exc)
                continue
            for h, out in zip(batch, outputs, strict=True):
                if h.future.done():
                    continue
                if isinstance(out, BaseException):
                    h.future.set_exception(out)
                else:
                    h.future.set_result(out)
            await asyncio.sleep(0)


def monotonic() -> float:
    return time.perf_counter()


def settle_from(future: asyncio.Future[list[Completion]], done: Any) -> None:
    """Settle ``future`` from a finished task or concurrent future ``done``: its result, its
    error, or :class:`~tts.errors.Cancelled` when it ended cancelled."""
    if future.done():
        return
    if done.cancelled():
        future.set_exception(Cancelled("request cancelled"))
        future.exception()  # mark retrieved: nobody has to await a cancelled handle
        return
    exc = done.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())


def task_handle(
    request: Request, task: asyncio.Task[list[Completion]], cancel: Callable[[], Any] | None = None
) -> Handle:
    """A handle on ``task`` (running on the caller's loop), settled by the task's outcome.

    ``handle.cancel()`` cancels the task (or calls ``cancel`` instead: an engine abort, say) and
    leaves the handle to the task, so the cost of work already running is reported: a task that
    stops before doing any work ends cancelled and the handle settles as
    :class:`~tts.errors.Cancelled`; one that had work running returns its partial completions
    (``finish_reason="abort"``) and the handle resolves with them.
    """
    future: asyncio.Future[list[Completion]] = task.get_loop().create_future()
    task.add_done_callback(functools.partial(settle_from, future))

    def hook(_handle: Handle) -> bool:
        if cancel is not None:
            cancel()
        else:
            task.cancel()
        return False

    return Handle(request, future, hook)


def first_stop(text: str, stops: tuple[str, ...] | list[str]) -> int | None:
    """Index of the earliest stop string in ``text`` (``None``: none occurs)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
