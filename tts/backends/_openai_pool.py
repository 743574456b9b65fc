"""The HTTP side of the OpenAI-compatible backend: one pooled ``aiohttp`` session per event loop,
least-outstanding load balancing with endpoint ejection, and retries with backoff.

:meth:`Pool.call` is one logical call: it returns the parsed JSON answer, raises
:class:`Rejected` for a non-retryable 4xx, and :class:`tts.errors.BackendError` (or
:class:`tts.errors.RequestTimeout` when the last attempt timed out) once the retries are spent or
the request's ``deadline`` has passed. A 200 whose body is cut short, is not JSON or is not shaped
like an answer is retried like a 5xx (and counted in ``OpenAIStats.malformed``).

Endpoints: an endpoint not yet known to accept connections (at start, and after an ejection) takes
one probe call at a time; the others wait until some endpoint has sent a request's headers (a few
milliseconds), so a first burst of concurrent calls does not all go to a dead server. A refused
connection takes the endpoint out of rotation at once.

Closing: the session closes with :meth:`Pool.aclose`; otherwise when its event loop shuts down
(``asyncio.run`` closes async generators on exit, and the pool keeps one for this), and, should the
loop be gone without that, quietly at interpreter exit: never "Unclosed client session".
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tts.backends._openai_options import OpenAIOptions
from tts.backends._openai_wire import error_message, loads, retry_after
from tts.errors import BackendError, RequestTimeout
from tts.secrets import redact, register_secret

__all__ = ["EndpointState", "Flight", "OpenAIStats", "Pool", "Rejected"]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429})


@dataclass
class EndpointState:
    """Load-balancing state and counters of one server."""

    url: str
    outstanding: int = 0
    calls: int = 0
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    dead_until: float = 0.0
    reachable: bool = False
    """A request's headers reached the server since the endpoint was (re)admitted."""
    probing: bool = False
    """A probe call to the endpoint (not yet reachable) is in flight."""

    def alive(self, now: float) -> bool:
        return self.dead_until <= now


@dataclass
class OpenAIStats:
    """Totals over all endpoints. ``failures`` counts requests that failed after their retries."""

    requests: int = 0
    http_calls: int = 0
    retries: int = 0
    failures: int = 0
    timeouts: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    split_calls: int = 0
    cancelled_in_flight: int = 0
    """Requests cancelled while a call was in flight (charged in full)."""
    malformed: int = 0
    """200 answers that were cut short, not JSON or wrongly shaped (retried)."""
    deadline_exceeded: int = 0
    """Requests given up because their ``deadline`` passed."""
    by_status: dict[int, int] = field(default_factory=dict)


class _Retryable(Exception):
    def __init__(self, message: str, *, timeout: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry_after = retry_after


class Flight:
    """One logical call, for whoever cancels it: ``open`` while a POST awaits its answer (the
    server may be generating), ``sent`` POSTs begun, ``samples`` asked, ``result`` once parsed."""

    __slots__ = ("open", "result", "samples", "sent")

    def __init__(self, samples: int = 1) -> None:
        self.open = False
        self.sent = 0
        self.samples = samples
        self.result: Any = None


class Rejected(Exception):
    """A non-retryable HTTP error (4xx other than 408/409/425/429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(redact(message))
        self.status = status


_LIVE: weakref.WeakSet[Pool] = weakref.WeakSet()


def _close_quietly(session: Any) -> None:
    """Close ``session`` without its event loop (gone, or not running): no warnings at exit."""
    connector = getattr(session, "_connector", None)
    if connector is None:
        return
    with contextlib.suppress(Exception):  # the loop is gone: the sockets die with the process
        connector._close()  # marks it closed; closes sockets while the loop still exists
    session.detach()


def _finish(closer: AsyncGenerator[None, None] | None) -> None:
    """End a pool's shutdown hook without its loop (its session is already closed, so the hook's
    ``finally`` awaits nothing): nothing is left for the loop's async-generator finalizer."""
    if closer is None:
        return
    step = closer.aclose()
    try:
        step.send(None)
    except BaseException:  # StopIteration: finished, as expected
        return
    step.close()


@atexit.register
def _close_all() -> None:
    for pool in list(_LIVE):
        if pool._session is not None and not pool._session.closed:
            _close_quietly(pool._session)
            _finish(pool._closer)


class Pool:
    """Connections, endpoints and retries of one backend (see the module docstring)."""

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.endpoints = [EndpointState(url) for url in options.urls]
        self.stats = OpenAIStats()
        self.model: str | None = options.model
        self._path = "/chat/completions" if options.endpoint == "chat" else "/completions"
        self._session: Any = None
        self._timeout: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None
        self._reachable: asyncio.Event | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._errors: tuple[type[BaseException], ...] = ()
        self._aiohttp: Any = None
        _LIVE.add(self)

    def is_ready(self) -> bool:
        """The session is open on the running loop and the model name known."""
        return (
            self._loop is asyncio.get_running_loop()
            and self.model is not None
            and self._session is not None
            and not self._session.closed
        )

    async def ready(self) -> None:
        """Open the session on the running loop (once per loop) and learn the model name."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._session is None or self._session.closed:
            await self._open(loop)
        if self.model is None:
            assert self._model_lock is not None
            async with self._model_lock:
                if self.model is None:
                    self.model = await self._discover_model()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        import aiohttp

        o = self.options
        if self._session is not None and not self._session.closed:
            if self._loop is loop:
                return
            _close_quietly(self._session)  # bound to an old event loop; its connections die with it
            _finish(self._closer)
        headers = {"Content-Type": "application/json", **o.headers}
        key = os.environ.get(o.api_key_env)
        if key:
            register_secret(key)
            headers["Authorization"] = f"Bearer {key}"
        connector = aiohttp.TCPConnector(
            limit=o.max_concurrency, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        traces = []
        if len(self.endpoints) > 1:  # one endpoint needs no probing
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(self._headers_sent)
            traces.append(trace)
        self._timeout = aiohttp.ClientTimeout(total=o.timeout)  # each call's, unless the deadline is nearer
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=self._timeout,
            skip_auto_headers=("User-Agent",),
            trace_configs=traces,
        )
        self._aiohttp = aiohttp
        self._loop = loop
        self._sem = asyncio.Semaphore(o.max_concurrency)
        self._model_lock = asyncio.Lock()
        self._reachable = asyncio.Event()
        for ep in self.endpoints:
            ep.reachable = ep.probing = False
        self._errors = (aiohttp.ClientError, OSError)
        # closed when the loop shuts down: asyncio.run closes every async generator on exit
        self._closer = self._close_on_shutdown(self._session)
        await self._closer.__anext__()

    @staticmethod
    async def _close_on_shutdown(session: Any) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not session.closed:
                try:
                    await session.close()
                except Exception:  # closing at loop shutdown: nothing left to tell anyone
                    _close_quietly(session)

    async def aclose(self) -> None:
        """Close the session (the backend's ``aclose``)."""
        session, closer = self._session, self._closer
        self._session = self._closer = None
        if session is not None and not session.closed:
            if self._loop is asyncio.get_running_loop():
                await session.close()
            else:
                _close_quietly(session)
        if closer is not None and self._loop is asyncio.get_running_loop():
            await closer.aclose()
        else:
            _finish(closer)

    async def _headers_sent(self, session: Any, ctx: Any, params: Any) -> None:
        ep = ctx.trace_request_ctx
        if isinstance(ep, EndpointState) and not ep.reachable:
            ep.reachable = True
            if self._reachable is not None:
                self._reachable.set()

    async def _discover_model(self) -> str:
        url = self.endpoints[0].url + "/models"
        try:
            async with self._session.get(url) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise BackendError(
                        f"openai backend: GET {url} answered HTTP {resp.status}; "
                        "set the model option to the served model name."
                    )
                models = loads(payload).get("data") or []
                name = str(models[0]["id"]) if models else None
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                redact(
                    f"openai backend: cannot list models at {url} ({type(exc).__name__}: {exc}); "
                    "start the server or set the model option."
                )
            ) from exc
        if name is None:
            raise BackendError(f"openai backend: {url} lists no models; set the model option.")
        return name

    async def _pick(self) -> EndpointState:
        """The endpoint for the next call: a probe to one not yet known reachable, else the least
        loaded reachable one; waits while only probes are in flight."""
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        while True:
            now = time.monotonic()
            alive = [e for e in eps if e.alive(now)]
            if not alive:  # all ejected: probe the one that comes back first
                return min(eps, key=lambda e: e.dead_until)
            for e in alive:
                if not e.reachable and not e.probing:
                    e.probing = True
                    return e
            ready = [e for e in alive if e.reachable]
            if ready:
                return min(ready, key=lambda e: (e.outstanding, e.calls))
            assert self._reachable is not None
            event = self._reachable
            event.clear()
            await event.wait()

    def _probe_done(self, ep: EndpointState) -> None:
        if ep.probing:
            ep.probing = False
            if self._reachable is not None:
                self._reachable.set()  # waiters look again (another probe, or a reachable endpoint)

    def _penalise(self, ep: EndpointState, *, eject: bool) -> None:
        ep.failures += 1
        ep.consecutive_failures += 1
        if eject or ep.consecutive_failures >= self.options.eject_after:
            if len(self.endpoints) > 1:
                log.warning(
                    "openai backend: endpoint %s out of rotation for %.1fs", ep.url, self.options.endpoint_cooldown
                )
            ep.dead_until = time.monotonic() + self.options.endpoint_cooldown
            ep.ejections += 1
            ep.consecutive_failures = 0
            ep.reachable = False

    async def call(
        self,
        payload: bytes,
        parse: Callable[[Any], _T],
        flight: Flight | None = None,
        reader: Callable[[Any], Awaitable[bytes]] | None = None,
    ) -> _T:
        """POST ``payload`` (a JSON body) with retries; ``parse`` of the decoded JSON answer, which
        raises ``ValueError`` (or ``TypeError``, ``KeyError``, ``AttributeError``) on an answer of
        the wrong shape: that answer is malformed and retried. ``reader`` reads the body of a 200
        answer instead of ``resp.read()`` (a streamed answer, as it arrives).

        Each attempt may take ``timeout`` seconds, all of them together ``deadline`` seconds from
        the first attempt's start (time queued for a connection slot before it is not counted).
        """
        o = self.options
        stats = self.stats
        last: _Retryable | None = None
        assert self._sem is not None
        flight = flight if flight is not None else Flight()
        give_up: float | None = None
        attempts = 0
        out_of_time = False
        for attempt in range(o.max_retries + 1):
            if attempt:
                delay = min(o.backoff_max, o.backoff_base * 2 ** (attempt - 1))
                delay *= 0.5 + 0.5 * random.random()
                if last is not None and last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, o.backoff_max))
                if give_up is not None and time.monotonic() + delay >= give_up:
                    out_of_time = True
                    break
                stats.retries += 1
                await asyncio.sleep(delay)
            async with self._sem:
                now = time.monotonic()
                if give_up is None:
                    give_up = now + o.deadline
                elif now >= give_up:
                    out_of_time = True
                    break
                ep = await self._pick()
                ep.outstanding += 1
                ep.calls += 1
                stats.http_calls += 1
                attempts += 1
                per_call = min(o.timeout, give_up - time.monotonic())
                flight.open, flight.sent = True, flight.sent + 1
                try:
                    async with self._session.post(
                        ep.url + self._path,
                        data=payload,
                        timeout=self._timeout if per_call >= o.timeout else self._aiohttp.ClientTimeout(total=per_call),
                        trace_request_ctx=ep,
                    ) as resp:
                        status = resp.status
                        raw = await (reader(resp) if reader is not None and status == 200 else resp.read())
                    flight.open = False  # stays True when cancelled mid-call: the server may be generating
                except asyncio.TimeoutError:
                    flight.open = False
                    stats.timeouts += 1
                    self._penalise(ep, eject=False)
                    last = _Retryable(f"no answer from {ep.url} within {per_call:.3g}s", timeout=True)
                    continue
                except self._errors as exc:
                    flight.open = False
                    last = self._connection_error(ep, exc)
                    continue
                finally:
                    ep.outstanding -= 1
                    self._probe_done(ep)
            stats.by_status[status] = stats.by_status.get(status, 0) + 1
            if status == 200:
                try:
                    result = parse(loads(raw))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    stats.malformed += 1
                    self._penalise(ep, eject=False)
                    last = _Retryable(f"malformed answer from {ep.url} ({_short(exc)})")
                    continue
                ep.successes += 1
                ep.consecutive_failures = 0
                return result
            message = error_message(raw)
            if status in _RETRY_STATUS or status >= 500:
                if status == 429:
                    stats.rate_limited += 1
                else:
                    stats.server_errors += 1
                    self._penalise(ep, eject=False)
                last = _Retryable(
                    f"HTTP {status} from {ep.url}: {message}", retry_after=retry_after(resp.headers.get("Retry-After"))
                )
                continue
            raise Rejected(status, message)
        assert last is not None
        if out_of_time:
            stats.deadline_exceeded += 1
            what = f"gave up at its {o.deadline:g}s deadline after {attempts} attempts"
        else:
            what = f"failed after {attempts} attempts"
        msg = redact(
            f"openai backend: request {what}; last error: {last}. "
            "Check the server, or raise timeout / deadline / max_retries."
        )
        raise RequestTimeout(msg) if last.timeout or out_of_time else BackendError(msg)

    def _connection_error(self, ep: EndpointState, exc: BaseException) -> _Retryable:
        aiohttp = self._aiohttp
        self.stats.connection_errors += 1
        if isinstance(exc, aiohttp.ClientConnectorError):
            self._penalise(ep, eject=True)
            return _Retryable(f"cannot connect to {ep.url} ({exc.strerror or type(exc).__name__})")
        self._penalise(ep, eject=False)
        return _Retryable(f"{type(exc).__name__} talking to {ep.url}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
