"""The OpenAI-compatible backend: chat and completions endpoints of any compatible server.

Works against ``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``, SGLang, the
llama.cpp server and hosted APIs. A lean client, not the openai SDK: one pooled ``aiohttp``
session (keep-alive, a connection limit equal to ``max_concurrency``) and orjson when installed.

- **n-sampling**: one call with ``n`` where the server supports it; ``n_mode="split"`` sends ``n``
  concurrent n=1 calls instead, and ``n_mode="auto"`` (default) switches to split for good when a
  server rejects n>1 (HTTP 400) or silently returns fewer choices.
- **Retries**: 429, 408, 5xx, connection errors and timeouts are retried up to ``max_retries``
  times with exponential backoff and jitter (``Retry-After`` is honoured); other 4xx fail at once.
  Failures after the retries raise :class:`tts.errors.BackendError`; when the last attempt timed
  out, :class:`tts.errors.RequestTimeout`. ``timeout`` bounds each HTTP call.
- **Load balancing**: several ``base_url`` values are balanced by least outstanding requests; an
  endpoint that refuses connections (or fails ``eject_after`` times in a row) is taken out of
  rotation for ``endpoint_cooldown`` seconds, then tried again. ``endpoints`` holds per-endpoint
  counters and ``stats`` the totals (calls, retries, failures, timeouts).
- **API key**: read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) when the session opens; sent as a bearer token, never logged or stored in
  the options.
- **Results**: ``reasoning_content`` (or ``reasoning``) of reasoning models goes to
  ``Completion.reasoning``; ``usage.prompt_tokens_details.cached_tokens`` to
  ``cached_prompt_tokens`` (vLLM reports it with ``--enable-prompt-tokens-details``); logprobs are
  parsed for both endpoints. When logprobs are off, the per-choice ``token_count`` of an n>1 call is
  ``usage.completion_tokens`` apportioned by text length (the sum is exact).

Server extensions (``server_extensions=True``, the default, for vLLM and SGLang): constraints as
``structured_outputs`` (regex, choice, grammar; JSON goes through the standard
``response_format``), ``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``, ``bad_words``,
``ignore_eos``, ``priority`` (the server must run ``--scheduling-policy priority``), token-level
beam search (``use_beam_search``) and ``Request.assistant_prefix`` on the chat endpoint
(``continue_final_message``). With ``server_extensions=False`` (hosted APIs) only standard fields
are sent and requests that need an extension are refused with :class:`UnsupportedControl`.

Accounting in split mode: each of the n calls submits the prompt, so ``prompt_tokens`` of the
request is the sum over its calls and ``cached_prompt_tokens`` the sum of what the server reported
cached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tts.backends.base import Capabilities, Handle
from tts.errors import BackendError, ConfigError, RequestTimeout, UnsupportedControl
from tts.sampling import format_validation_error
from tts.types import Completion, FinishReason, Request

try:  # fast JSON when available
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    _loads = json.loads

__all__ = ["EndpointState", "OpenAIBackend", "OpenAIOptions", "OpenAIStats"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429})
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort", "error": "error",
                                    "eos": "stop", "tool_calls": "stop", "function_call": "stop",
                                    "content_filter": "error"}


class OpenAIOptions(BaseModel):
    """Options of the OpenAI-compatible backend."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_url: str | tuple[str, ...] = "http://127.0.0.1:8000/v1"
    """Server base URL(s), ending in ``/v1``; several URLs are load-balanced."""
    model: str | None = None
    """Model name sent with each request; ``None`` asks the first server's ``/models`` once."""
    endpoint: Literal["chat", "completions"] = "chat"
    """``chat`` (server renders chat messages) or ``completions`` (raw-text prompts only)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (no key: no Authorization header)."""
    n_mode: Literal["auto", "native", "split"] = "auto"
    """``native``: one call with n; ``split``: n concurrent n=1 calls; ``auto``: native until the
    server rejects n>1 or returns fewer choices, then split."""
    max_concurrency: int = Field(default=64, ge=1)
    """HTTP calls in flight at once (also the connection pool size)."""
    timeout: float = Field(default=600.0, gt=0)
    """Seconds one HTTP call may take (connect, send, generate, read)."""
    max_retries: int = Field(default=4, ge=0)
    """Retries after the first attempt for 429, 408, 5xx, connection errors and timeouts."""
    backoff_base: float = Field(default=0.5, ge=0)
    """First retry delay in seconds; doubles per attempt, with jitter (a random 50-100%)."""
    backoff_max: float = Field(default=20.0, ge=0)
    """Upper bound of one retry delay (also caps ``Retry-After``)."""
    eject_after: int = Field(default=3, ge=1)
    """Consecutive failures (5xx, timeouts) that take an endpoint out of rotation; a refused
    connection takes it out at once."""
    endpoint_cooldown: float = Field(default=10.0, ge=0)
    """Seconds an ejected endpoint stays out of rotation before it is tried again."""
    server_extensions: bool = True
    """Send vLLM/SGLang extensions (structured outputs, top_k, min_p, priority, ...)."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Name of the output-length field on the chat endpoint (hosted reasoning models need
    ``max_completion_tokens``)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields merged into every request body (e.g. ``{"chat_template_kwargs": {...}}``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (not for the API key: use ``api_key_env``)."""

    @field_validator("base_url", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        urls = (value,) if isinstance(value, str) else value
        if not urls:
            raise ValueError("base_url must name at least one server, got [].")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {url!r}.")
        return value

    @property
    def urls(self) -> tuple[str, ...]:
        urls = (self.base_url,) if isinstance(self.base_url, str) else self.base_url
        return tuple(u.rstrip("/") for u in urls)


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
    by_status: dict[int, int] = field(default_factory=dict)


class _Retryable(Exception):
    def __init__(self, message: str, *, timeout: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry_after = retry_after


class _Rejected(Exception):
    """A non-retryable HTTP error (4xx other than 408/409/425/429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OpenAIBackend:
    """Backend for any OpenAI-compatible server (see the module docstring)."""

    name: ClassVar[str] = "openai"
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        n_sampling=True, prefix_reuse=True, logprobs=True,
        constraints=frozenset({"regex", "choice", "json", "grammar"}), beam_search=True, priorities=True,
        aborts=True, penalties=True, banned_words=True, min_p=True, seeds=True)

    def __init__(self, options: OpenAIOptions | None = None, **kw: Any) -> None:
        if options is None:
            unknown = sorted(set(kw) - set(OpenAIOptions.model_fields))
            if unknown:
                raise ConfigError(_unknown_option("openai", unknown[0], OpenAIOptions))
            try:
                options = OpenAIOptions(**kw)
            except ValidationError as exc:
                msg = format_validation_error(exc, model=OpenAIOptions)
                raise ConfigError(f"openai backend: {msg}") from None
        elif kw:
            raise ConfigError("openai backend: pass either options=OpenAIOptions(...) or keyword options, "
                              "not both.")
        self.options = options
        ext = options.server_extensions
        self.capabilities = self.CAPABILITIES if ext else Capabilities(
            n_sampling=True, prefix_reuse=True, logprobs=True, constraints=frozenset({"json"}), aborts=True,
            penalties=True)
        self.endpoints = [EndpointState(url) for url in options.urls]
        self.stats = OpenAIStats()
        self._split = options.n_mode == "split"
        self._model: str | None = options.model
        self._model_lock: asyncio.Lock | None = None
        self._session: Any = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._path = "/chat/completions" if options.endpoint == "chat" else "/completions"

    # ------------------------------------------------------------------ protocol

    def submit(self, request: Request) -> Handle:
        """Queue ``request``; the HTTP call starts in this event-loop turn."""
        self.capabilities.check(request, self.name)
        self._check_extensions(request)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Completion]] = loop.create_future()
        task = loop.create_task(self._run(request))
        self.stats.requests += 1

        def done(t: asyncio.Task[list[Completion]]) -> None:
            if future.done():
                return
            if t.cancelled():
                return  # cancelled through the handle, which sets Cancelled itself
            exc = t.exception()
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(t.result())

        task.add_done_callback(done)
        def cancel(_handle: Handle) -> None:
            task.cancel()

        return Handle(request, future, cancel)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    @property
    def split_mode(self) -> bool:
        """True once the backend sends n concurrent n=1 calls instead of one call with n."""
        return self._split

    # ------------------------------------------------------------------ request building

    def _check_extensions(self, request: Request) -> None:
        p = request.params
        if self.options.endpoint == "completions" and not isinstance(request.prompt, str):
            raise ConfigError("openai backend: endpoint='completions' takes raw-text prompts; use "
                              "endpoint='chat' for chat messages.")
        if self.options.server_extensions:
            return
        needs = [name for name, used in (
            ("top_k", p.top_k is not None), ("repetition_penalty", p.repetition_penalty != 1.0),
            ("min_tokens", p.min_tokens > 0), ("ignore_eos", p.ignore_eos),
            ("priority", request.priority != 0),
            ("assistant_prefix", bool(request.assistant_prefix) and self.options.endpoint == "chat"),
        ) if used]
        if needs:
            raise UnsupportedControl(
                f"openai backend: {needs[0]} needs server extensions; set server_extensions=True "
                f"(vLLM, SGLang) or drop {needs[0]} from the request.")

    def _body(self, request: Request, n: int, seed: int | None) -> dict[str, Any]:
        p = request.params
        o = self.options
        ext = o.server_extensions
        chat = o.endpoint == "chat"
        body: dict[str, Any] = {"model": self._model}
        if chat:
            messages: list[dict[str, str]] = request.messages()
            if request.assistant_prefix:
                messages.append({"role": "assistant", "content": request.assistant_prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body["messages"] = messages
            body[o.max_tokens_field] = p.max_tokens
        else:
            assert isinstance(request.prompt, str)
            body["prompt"] = request.prompt + request.assistant_prefix
            body["max_tokens"] = p.max_tokens
        if p.beam_width is not None:
            body.update(use_beam_search=True, n=p.beam_width, temperature=0.0,
                        length_penalty=p.length_penalty)
        else:
            body["n"] = n
            body["temperature"] = p.temperature
            if p.top_p != 1.0:
                body["top_p"] = p.top_p
        if p.stop:
            body["stop"] = list(p.stop)
        if seed is not None:
            body["seed"] = seed
        if p.logprobs is not None:
            if chat:
                body["logprobs"] = True
                if p.logprobs:
                    body["top_logprobs"] = p.logprobs
            else:
                body["logprobs"] = p.logprobs
        if p.presence_penalty:
            body["presence_penalty"] = p.presence_penalty
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        c = p.constraint
        if c is not None and c.kind == "json":
            if c.schema_ is None:
                body["response_format"] = {"type": "json_object"}
            else:
                schema = _loads(c.schema_.encode())
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "output", "schema": schema}}
        if ext:
            if p.top_k is not None:
                body["top_k"] = p.top_k
            if p.min_p:
                body["min_p"] = p.min_p
            if p.repetition_penalty != 1.0:
                body["repetition_penalty"] = p.repetition_penalty
            if p.min_tokens:
                body["min_tokens"] = p.min_tokens
            if p.banned_words:
                body["bad_words"] = list(p.banned_words)
            if p.ignore_eos:
                body["ignore_eos"] = True
            if request.priority:
                body["priority"] = request.priority
            if c is not None and c.kind != "json":
                body["structured_outputs"] = ({"regex": c.pattern} if c.kind == "regex" else
                                              {"choice": list(c.choices)} if c.kind == "choice" else
                                              {"grammar": c.grammar})
        if o.extra_body:
            body.update(o.extra_body)
        return body

    # ------------------------------------------------------------------ running

    async def _run(self, request: Request) -> list[Completion]:
        await self._ensure_ready()
        p = request.params
        n = p.n
        if p.beam_width is not None or n == 1 or not self._split:
            try:
                data = await self._call(self._body(request, n, p.seed))
            except _Rejected as exc:
                auto = self.options.n_mode == "auto" and p.beam_width is None
                if not (exc.status == 400 and n > 1 and auto):
                    raise self._fail(exc) from None
                # is it n? one n=1 call tells: if it succeeds, the server lacks n>1
                first = await self._run_split(request, 1, 0)
                log.info("openai backend: server rejected n=%d (%s) but took n=1; switching to concurrent "
                         "n=1 calls", n, exc)
                self._split = True
                return self._merge(first, await self._run_split(request, n - 1, 1))
            except BackendError:
                self.stats.failures += 1
                raise
            completions = self._parse(data, request)
            if p.beam_width is not None:
                return completions[:n]
            if len(completions) < n and self.options.n_mode == "auto":
                log.info("openai backend: server returned %d of n=%d choices; switching to n=1 calls",
                         len(completions), n)
                self._split = True
                completions = self._merge(completions,
                                          await self._run_split(request, n - len(completions), len(completions)))
            return completions
        return await self._run_split(request, n, 0)

    @staticmethod
    def _merge(first: list[Completion], more: list[Completion]) -> list[Completion]:
        """Completions of several calls for one request: prompt counts summed over the calls."""
        if first and more:
            prompt_tokens = first[0].prompt_tokens + more[0].prompt_tokens
            cached = first[0].cached_prompt_tokens + more[0].cached_prompt_tokens
            for c in (*first, *more):
                c.prompt_tokens, c.cached_prompt_tokens = prompt_tokens, cached
        return first + more

    async def _run_split(self, request: Request, n: int, start: int) -> list[Completion]:
        p = request.params
        self.stats.split_calls += n
        seeds = [None if p.seed is None else p.seed + i for i in range(start, start + n)]
        tasks = [asyncio.ensure_future(self._call(self._body(request, 1, seed))) for seed in seeds]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException as exc:
            for t in tasks:  # one call failed (or the request was cancelled): stop the others
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, _Rejected):
                raise self._fail(exc) from None
            if isinstance(exc, BackendError):
                self.stats.failures += 1
            raise
        completions: list[Completion] = []
        prompt_tokens = cached = 0
        for i, data in enumerate(results):
            got = self._parse(data, request)
            for c in got:
                c.index = start + i
            if got:
                prompt_tokens += got[0].prompt_tokens
                cached += got[0].cached_prompt_tokens
            completions += got
        for c in completions:
            c.prompt_tokens, c.cached_prompt_tokens = prompt_tokens, cached
        return completions

    def _fail(self, exc: _Rejected) -> BackendError:
        self.stats.failures += 1
        hint = " Check the API key in $" + self.options.api_key_env + "." if exc.status in (401, 403) else ""
        return BackendError(f"openai backend: server answered HTTP {exc.status}: {exc}.{hint}")

    async def _ensure_ready(self) -> None:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            import aiohttp

            if self._session is not None and not self._session.closed and self._session_loop is not loop:
                self._session.detach()  # bound to an old event loop; its connections die with it
            headers = {"Content-Type": "application/json", **self.options.headers}
            key = os.environ.get(self.options.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            connector = aiohttp.TCPConnector(limit=self.options.max_concurrency, limit_per_host=0,
                                             keepalive_timeout=60, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers=headers,
                                                  timeout=aiohttp.ClientTimeout(total=self.options.timeout),
                                                  skip_auto_headers=("User-Agent",))
            self._session_loop = loop
            self._sem = asyncio.Semaphore(self.options.max_concurrency)
            self._model_lock = asyncio.Lock()
        if self._model is None:
            assert self._model_lock is not None
            async with self._model_lock:
                if self._model is None:
                    self._model = await self._discover_model()

    async def _discover_model(self) -> str:
        url = self.endpoints[0].url + "/models"
        try:
            async with self._session.get(url) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise BackendError(f"openai backend: GET {url} answered HTTP {resp.status}; "
                                       "set the model option to the served model name.")
                models = _loads(payload).get("data") or []
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"openai backend: cannot list models at {url} ({type(exc).__name__}: {exc}); "
                               "start the server or set the model option.") from exc
        if not models:
            raise BackendError(f"openai backend: {url} lists no models; set the model option.")
        return str(models[0]["id"])

    def _pick(self) -> EndpointState:
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        now = time.monotonic()
        alive = [e for e in eps if e.alive(now)]
        if not alive:  # all ejected: probe the one that comes back first
            return min(eps, key=lambda e: e.dead_until)
        return min(alive, key=lambda e: (e.outstanding, e.calls))

    def _penalise(self, ep: EndpointState, *, eject: bool) -> None:
        ep.failures += 1
        ep.consecutive_failures += 1
        if eject or ep.consecutive_failures >= self.options.eject_after:
            if len(self.endpoints) > 1:
                log.warning("openai backend: endpoint %s out of rotation for %.1fs", ep.url,
                            self.options.endpoint_cooldown)
            ep.dead_until = time.monotonic() + self.options.endpoint_cooldown
            ep.ejections += 1
            ep.consecutive_failures = 0

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        """One logical call with retries; returns the parsed JSON response."""
        import aiohttp

        o = self.options
        payload = _dumps(body)
        last: _Retryable | None = None
        assert self._sem is not None
        for attempt in range(o.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                delay = min(o.backoff_max, o.backoff_base * 2 ** (attempt - 1))
                delay *= 0.5 + 0.5 * random.random()
                if last is not None and last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, o.backoff_max))
                await asyncio.sleep(delay)
            async with self._sem:
                ep = self._pick()
                ep.outstanding += 1
                ep.calls += 1
                self.stats.http_calls += 1
                try:
                    async with self._session.post(ep.url + self._path, data=payload) as resp:
                        status = resp.status
                        raw = await resp.read()
                        retry_after = resp.headers.get("Retry-After")
                except asyncio.TimeoutError:
                    self.stats.timeouts += 1
                    self._penalise(ep, eject=False)
                    last = _Retryable(f"no answer from {ep.url} within {o.timeout:g}s", timeout=True)
                    continue
                except aiohttp.ClientConnectorError as exc:
                    self.stats.connection_errors += 1
                    self._penalise(ep, eject=True)
                    last = _Retryable(f"cannot connect to {ep.url} ({exc.strerror or type(exc).__name__})")
                    continue
                except (aiohttp.ClientError, OSError) as exc:
                    self.stats.connection_errors += 1
                    self._penalise(ep, eject=False)
                    last = _Retryable(f"{type(exc).__name__} talking to {ep.url}: {exc}")
                    continue
                finally:
                    ep.outstanding -= 1
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            if status == 200:
                ep.successes += 1
                ep.consecutive_failures = 0
                try:
                    return _loads(raw)
                except ValueError as exc:
                    raise BackendError(f"openai backend: {ep.url} sent invalid JSON ({exc}).") from None
            message = _error_message(raw)
            if status in _RETRY_STATUS or status >= 500:
                if status == 429:
                    self.stats.rate_limited += 1
                else:
                    self.stats.server_errors += 1
                    self._penalise(ep, eject=False)
                last = _Retryable(f"HTTP {status} from {ep.url}: {message}",
                                  retry_after=_retry_after(retry_after))
                continue
            raise _Rejected(status, message)
        assert last is not None
        msg = (f"openai backend: request failed after {o.max_retries + 1} attempts; last error: {last}. "
               "Check the server, or raise timeout / max_retries.")
        raise RequestTimeout(msg) if last.timeout else BackendError(msg)

    # ------------------------------------------------------------------ parsing

    def _parse(self, data: dict[str, Any], request: Request) -> list[Completion]:
        p = request.params
        chat = self.options.endpoint == "chat"
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0)
        choices = sorted(data.get("choices") or [], key=lambda ch: ch.get("index", 0))
        prompt_text = None if chat else request.prompt + request.assistant_prefix  # type: ignore[operator]
        out: list[Completion] = []
        counted = True
        for i, ch in enumerate(choices):
            if chat:
                msg = ch.get("message") or {}
                text = msg.get("content") or ""
                reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            else:
                text = ch.get("text") or ""
                reasoning = ch.get("reasoning_content") or ch.get("reasoning")
            lps, tops = _parse_logprobs(ch.get("logprobs"), chat, p.logprobs)
            count = len(lps) if lps is not None else -1
            counted = counted and count >= 0
            finish = _FINISH.get(ch.get("finish_reason") or "stop", "stop")
            out.append(Completion(text=text, token_count=max(count, 0), finish_reason=finish,
                                  cumulative_logprob=sum(lps) if lps is not None else None, logprobs=lps,
                                  top_logprobs=tops, prompt_tokens=prompt_tokens, cached_prompt_tokens=cached,
                                  reasoning=reasoning, prompt_text=prompt_text, index=i))
        if out and not counted:
            total = int(usage.get("completion_tokens") or 0)
            _apportion(out, total)
        return out


def _unknown_option(backend: str, name: str, model: type[BaseModel]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(model.model_fields), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    valid = ", ".join(model.model_fields)
    return f"{backend} backend: unknown option {name!r}{hint}; valid options: {valid}."


def _apportion(completions: Sequence[Completion], total: int) -> None:
    """Split ``total`` tokens over completions by text length (largest remainder; sum exact)."""
    if len(completions) == 1:
        completions[0].token_count = total
        return
    weights = [len(c.text) + len(c.reasoning or "") + 1 for c in completions]
    scale = total / sum(weights)
    shares = [w * scale for w in weights]
    counts = [int(s) for s in shares]
    rest = total - sum(counts)
    for i in sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])[:rest]:
        counts[i] += 1
    for c, k in zip(completions, counts, strict=True):
        c.token_count = k


def _parse_logprobs(lp: Any, chat: bool,
                    k: int | None) -> tuple[list[float] | None, list[dict[str, float]] | None]:
    if not lp:
        return None, None
    if chat:
        content = lp.get("content") or []
        values = [float(t["logprob"]) for t in content]
        tops = ([{a["token"]: float(a["logprob"]) for a in (t.get("top_logprobs") or [])} for t in content]
                if k else None)
        return values, tops
    values = [float(v) if v is not None else 0.0 for v in (lp.get("token_logprobs") or [])]
    tops = [dict(t or {}) for t in (lp.get("top_logprobs") or [])] if k else None
    return values, tops


def _error_message(raw: bytes) -> str:
    try:
        data = _loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace").strip() or "(empty body)"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)[:500]
    return str(err)[:500]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
