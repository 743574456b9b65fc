"""The ASGI application: OpenAI-compatible routes over served pipelines (Starlette, run by uvicorn).

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health`` (never needs the key),
``GET /metrics`` (Prometheus text).

The chat route is a plain ASGI endpoint, so it controls what a request costs and when it stops:

- the bearer token (when the server has one) is checked first (401), then the concurrency limit
  (429, before the body is read), then the body size (413, from ``Content-Length`` or while
  reading);
- each of the request's ``n`` choices is one :func:`tts.runner.solve` on the pipeline's shared
  scheduler, all in flight together;
- while they run, the endpoint also waits for the client to go away: a disconnect cancels the
  runs, which withdraws their queued requests and aborts those in flight (the backend sees the
  cancel), and the request is counted with status 499;
- streaming sends a chunk with an empty ``delta`` and a ``tts_progress`` field (samples landed and
  the answers' votes so far, per choice) each time samples land, then each choice's answer as one
  ``delta.content``, its finish reason (with the ``tts`` extras), the usage chunk when
  ``stream_options.include_usage`` is set, and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tts.errors import ConfigError
from tts.runner import solve
from tts.secrets import redact, register_secret
from tts.serve.metrics import ServerMetrics
from tts.serve.pipelines import Pipelines, Plan, ServeOptions
from tts.serve.protocol import (
    ApiError,
    ChatRequest,
    choice_extras,
    chunk,
    completion_body,
    error_body,
    parse_request,
    question_of,
    reply_of,
    usage_body,
)
from tts.task import Task
from tts.types import Problem, Result, Trace, TraceEvent, Usage

__all__ = ["ProgressTrace", "Server", "create_app", "read_api_key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

RETURN_HEADER = b"x-tts-return"
"""Header naming extras to return (``candidates,trace``), beside the body's ``tts_return``."""


def read_api_key(path: str) -> str:
    """The bearer token in file ``path`` (surrounding whitespace dropped), registered as a secret."""
    try:
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path!r} cannot be read ({exc.strerror}); pass a readable file.") from None
    if len(key) < 8 or any(ch.isspace() for ch in key):
        raise ConfigError(f"--api-key-file {path!r} must hold one token of at least 8 characters, without spaces.")
    register_secret(key)
    return key


class ProgressTrace(Trace):
    """A trace that also counts the samples landed and their answers' votes, and sets ``changed``."""

    __slots__ = ("changed", "samples", "task", "votes")

    def __init__(self, task: Task, changed: asyncio.Event) -> None:
        super().__init__()
        self.task = task
        self.changed = changed
        self.samples = 0
        self.votes: Counter[str] = Counter()

    def add(self, event: TraceEvent) -> None:
        super().add(event)
        if event.kind != "generate" or not event.completions:
            return
        prefix = self.task.assistant_prefix
        for c in event.completions:
            if c.finish_reason == "abort":
                continue
            self.samples += 1
            answer = self.task.extract(prefix + c.text)
            if answer is not None:
                self.votes[self.task.canonical(answer)] += 1
        self.changed.set()

    def progress(self) -> dict[str, Any]:
        return {"samples": self.samples, "votes": dict(self.votes.most_common())}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone away (the request body is already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    """A whole JSON response."""
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _total(results: Sequence[Result]) -> Usage:
    usage = Usage()
    for r in results:
        usage.add(r.usage)
    return usage


def _failure(results: Sequence[Result]) -> ApiError | None:
    bad = next((r for r in results if not r.ok), None)
    if bad is None:
        return None
    if bad.status == "timeout":
        return ApiError(504, f"the pipeline timed out: {bad.error}", type="timeout_error")
    return ApiError(500, f"the pipeline failed: {redact(bad.error or 'unknown error')}", type="server_error")


class Server:
    """The served pipelines, the server's options and key, its metrics, and the ASGI app."""

    def __init__(self, pipelines: Pipelines, options: ServeOptions | None = None, api_key: str | None = None) -> None:
        self.pipelines = pipelines
        self.options = options or ServeOptions()
        self._auth = None if api_key is None else f"Bearer {api_key}".encode()
        self.metrics = ServerMetrics(pipelines.names())
        self.created = int(time.time())
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", _Chat(self), methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.render_metrics, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        for scheduler in self.pipelines.schedulers():
            close = getattr(scheduler.backend, "aclose", None)
            if close is not None:
                await close()

    # ---------------------------------------------------------------------------- small routes

    def _authorized(self, scope: Scope) -> bool:
        if self._auth is None:
            return True
        given = _header(scope, b"authorization")
        return given is not None and hmac.compare_digest(given, self._auth)

    def _refused(self, scope: Scope) -> Response | None:
        if self._authorized(scope):
            return None
        return Response(error_body(401, _UNAUTHORIZED), 401, {"WWW-Authenticate": "Bearer"}, "application/json")

    async def models(self, request: HttpRequest) -> Response:
        refused = self._refused(request.scope)
        if refused is not None:
            return refused
        data = [
            {"id": n, "object": "model", "created": self.created, "owned_by": "tts-scale"}
            for n in self.pipelines.names()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok", "pipelines": self.pipelines.names(), "in_flight": self.metrics.in_flight})

    async def render_metrics(self, request: HttpRequest) -> Response:
        refused = self._refused(request.scope)
        if refused is not None:
            return refused
        text = self.metrics.render(self.pipelines.schedulers())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # ---------------------------------------------------------------------------- chat

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        metrics = self.metrics
        model: str | None = None
        usage: Usage | None = None
        try:
            if not self._authorized(scope):
                raise ApiError(401, _UNAUTHORIZED, type="authentication_error")
            if metrics.in_flight >= self.options.max_concurrent_requests:
                raise ApiError(
                    429,
                    f"the server is answering {metrics.in_flight} requests, its limit; retry shortly.",
                    type="rate_limit_error",
                )
            metrics.in_flight += 1
            try:
                body = await self._body(scope, receive)
                req = parse_request(body)
                served = self.pipelines.get(req.model)
                model = served.name
                system, question = question_of(req.messages)
                plan = served.plan(req)
                task = served.task_for(system)
                returned = self._returned(scope, req)
                if req.stream:
                    status, usage = await self._stream(send, receive, req, plan, task, question, returned)
                else:
                    status, usage = await self._complete(send, receive, req, plan, task, question, returned)
            finally:
                metrics.in_flight -= 1
        except ApiError as exc:
            status = exc.status
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 429 else {}
            await _send(send, status, error_body(status, exc.message, exc.type, exc.param), headers)
        except _Gone:
            status = 499
        except Exception:  # a bug: answer 500 (when nothing was sent yet) and keep serving
            log.exception("chat completion failed")
            status = 500
            with contextlib.suppress(Exception):
                await _send(send, 500, error_body(500, "internal server error; see the server's log.", "server_error"))
        metrics.finished(model, status, time.perf_counter() - start, usage)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.options.max_body_bytes
        too_big = ApiError(413, f"request body is larger than {limit} bytes, the server's limit; send less.")
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise too_big
            chunks.append(part)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _returned(scope: Scope, req: ChatRequest) -> frozenset[str]:
        asked: set[str] = set(req.tts_return)
        header = _header(scope, RETURN_HEADER)
        if header:
            for item in header.decode("latin-1").split(","):
                if item.strip() not in ("candidates", "trace"):
                    raise ApiError(400, f"X-TTS-Return must list candidates and/or trace, got {item.strip()!r}.")
                asked.add(item.strip())
        return frozenset(asked)

    async def _run(
        self, plan: Plan, task: Task, question: str, rid: str, n: int, traces: Sequence[Trace] | None
    ) -> list[Result]:
        seeded = plan.seed is not None

        def one(i: int) -> Awaitable[Result]:
            return solve(
                plan.strategy,
                Problem(id=f"{rid}-{i}" if n > 1 else rid, question=question),
                plan.scheduler,
                task=task,
                seed=plan.choice_seed(i),
                limits=plan.limits,
                seed_requests=seeded,
                trace=traces[i] if traces is not None else None,
                retriever=plan.pipeline.retriever,
            )

        if n == 1:
            return [await one(0)]
        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def _until_done_or_gone(self, work: asyncio.Future[Any], gone: asyncio.Future[None], *more: Any) -> set[Any]:
        """Wait for ``work``, the client's departure or any of ``more``; on departure cancel ``work``
        (its samples are withdrawn) and raise :class:`_Gone`."""
        done, _ = await asyncio.wait((work, gone, *more), return_when=asyncio.FIRST_COMPLETED)
        if gone in done and not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise _Gone
        return done

    async def _complete(
        self,
        send: Send,
        receive: Receive,
        req: ChatRequest,
        plan: Plan,
        task: Task,
        question: str,
        returned: frozenset[str],
    ) -> tuple[int, Usage]:
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        work = asyncio.ensure_future(self._run(plan, task, question, rid, req.n, None))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._until_done_or_gone(work, gone)
        finally:
            gone.cancel()
        results = work.result()
        usage = _total(results)
        failure = _failure(results)
        if failure is not None:
            await _send(send, failure.status, error_body(failure.status, failure.message, failure.type))
            return failure.status, usage
        body = completion_body(rid, int(time.time()), plan.pipeline.name, results, usage, returned)
        await _send(send, 200, json.dumps(body).encode())
        return 200, usage

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        req: ChatRequest,
        plan: Plan,
        task: Task,
        question: str,
        returned: frozenset[str],
    ) -> tuple[int, Usage]:
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created, model = int(time.time()), plan.pipeline.name
        changed = asyncio.Event()
        traces = [ProgressTrace(task, changed) for _ in range(req.n)]
        work = asyncio.ensure_future(self._run(plan, task, question, rid, req.n, traces))
        gone = asyncio.ensure_future(_disconnected(receive))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )

        async def event(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        shown = [0] * req.n
        try:
            while True:
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    done = await self._until_done_or_gone(work, gone, waiter)
                finally:
                    waiter.cancel()
                changed.clear()
                for i, trace in enumerate(traces):
                    if trace.samples != shown[i]:
                        shown[i] = trace.samples
                        choice = {"index": i, "delta": {}, "finish_reason": None}
                        await event(chunk(rid, created, model, [choice], tts_progress=trace.progress()))
                if work in done:
                    break
        finally:
            gone.cancel()
        results = work.result()
        usage = _total(results)
        failure = _failure(results)
        status = 200
        if failure is not None:
            status = failure.status
            await event(b"data: " + error_body(status, failure.message, failure.type) + b"\n\n")
        else:
            for i, result in enumerate(results):
                content, finish = reply_of(result)
                answer = {"index": i, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
                await event(chunk(rid, created, model, [answer]))
                end = {"index": i, "delta": {}, "finish_reason": finish, "tts": choice_extras(result, returned)}
                await event(chunk(rid, created, model, [end]))
            if req.stream_options is not None and req.stream_options.include_usage:
                await event(chunk(rid, created, model, [], usage=usage_body(usage)))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        return status, usage


_UNAUTHORIZED = "missing or wrong API key: send the server's token as 'Authorization: Bearer TOKEN'."


class _Gone(Exception):
    """The client went away before its answer."""


class _Chat:
    """``POST /v1/chat/completions`` as a plain ASGI endpoint (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.server.chat(scope, receive, send)


def create_app(pipelines: Pipelines, options: ServeOptions | None = None, api_key: str | None = None) -> Starlette:
    """The ASGI app serving ``pipelines`` (``Server(...).app``)."""
    return Server(pipelines, options, api_key).app
