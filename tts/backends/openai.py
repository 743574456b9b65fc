"""The OpenAI-compatible backend: chat and completions endpoints of any compatible server.

Works against ``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``, SGLang, the
llama.cpp server and hosted APIs. A lean client, not the openai SDK: one pooled ``aiohttp``
session (keep-alive, a connection limit equal to ``max_concurrency``) and orjson when installed.

- **n-sampling**: one call with ``n`` where the server supports it; ``n_mode="split"`` sends ``n``
  concurrent n=1 calls instead, and ``n_mode="auto"`` (default) switches to split for good when a
  server rejects n>1 (HTTP 400) or silently returns fewer choices.
- **Retries**: 429, 408, 5xx, connection errors and timeouts are retried up to ``max_retries``
  times with exponential backoff and jitter (``Retry-After`` is honoured); other 4xx fail at once.
  A 200 that is cut short, is not JSON or is wrongly shaped is retried the same way. Failures
  after the retries raise :class:`tts.errors.BackendError`; when the last attempt timed out or
  the request's ``deadline`` passed, :class:`tts.errors.RequestTimeout`. ``timeout`` (120 s)
  bounds each HTTP attempt, ``deadline`` (300 s) all attempts of one request together.
- **Load balancing**: several ``base_url`` values are balanced by least outstanding requests; an
  endpoint that refuses connections (or fails ``eject_after`` times in a row) is taken out of
  rotation for ``endpoint_cooldown`` seconds, then tried again. ``endpoints`` holds per-endpoint
  counters and ``stats`` the totals (calls, retries, failures, timeouts).
- **API key**: read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``) when the session opens; sent as a bearer token, never logged or stored in
  the options. The key (and secret-looking ``headers`` values) is registered with
  :mod:`tts.secrets`, and every error text the backend raises is passed through
  :func:`tts.secrets.redact`: a server echoing the key in an error body does not leak it.
- **Cancelling** a handle hangs up its HTTP calls. A call not yet sent costs nothing (the handle
  settles as :class:`tts.errors.Cancelled`). A call already sent may have generated tokens the
  server does not report, so it is **charged in full**: the handle resolves with one
  ``finish_reason="abort"`` completion per sample, empty text and ``token_count = max_tokens``
  (an upper bound; the prompt tokens are unknown and not charged); calls of a split request that
  had already answered keep their real completions. Early stopping never looks cheaper than it is.
  With ``stream=True`` (server-sent events) a call cut mid-generation resolves with what it had
  received: the text so far and the tokens generated until the cut (the server's running usage
  with vLLM's ``continuous_usage_stats``, else logprob entries, else content deltas). A watched
  request (``Request.watch``, :mod:`tts.watch`; needs ``stream=True``) sends one n=1 call per
  sample; when the watcher cuts a sample its call hangs up (the server stops generating it), the
  others go on, and the sample comes back with what was received, ``finish_reason="cut"``.
- **Closing**: :meth:`OpenAIBackend.aclose` closes the session; it also closes when the event
  loop that opened it shuts down (``asyncio.run``), or quietly at interpreter exit.
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

Where things live: options in ``tts.backends._openai_options``; request bodies, response parsing
and JSON in ``tts.backends._openai_wire`` (pure functions); connections, load balancing and
retries in ``tts.backends._openai_pool``; this module decides how a request becomes calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from tts.backends._openai_options import OpenAIOptions
from tts.backends._openai_pool import EndpointState, Flight, OpenAIStats, Pool, Rejected
from tts.backends._openai_wire import StreamState, build_body, check_request, dumps, parse_response, read_stream
from tts.backends._vllm_options import VLLM_CAPABILITIES
from tts.backends.base import Capabilities, Handle, backend_options, task_handle
from tts.errors import BackendError
from tts.secrets import redact, register_secret
from tts.types import Completion, Request

__all__ = ["EndpointState", "OpenAIBackend", "OpenAIOptions", "OpenAIStats"]

log = logging.getLogger(__name__)


class _StreamFlight(Flight):
    """A streamed call: its :class:`StreamState` holds what arrived until now."""

    __slots__ = ("state",)

    def __init__(self, samples: int, state: StreamState) -> None:
        super().__init__(samples)
        self.state = state


class OpenAIBackend:
    """Backend for any OpenAI-compatible server (see the module docstring)."""

    name: ClassVar[str] = "openai"
    Options: ClassVar[type[OpenAIOptions]] = OpenAIOptions
    CAPABILITIES: ClassVar[Capabilities] = VLLM_CAPABILITIES
    """With server extensions, what ``vllm serve`` offers; without, standard fields only."""

    def __init__(self, options: OpenAIOptions | Mapping[str, Any] | None = None, **kw: Any) -> None:
        self.options = options = backend_options(OpenAIOptions, options, kw, name="openai")
        register_secret(os.environ.get(options.api_key_env))
        for header, value in options.headers.items():
            if any(word in header.lower() for word in ("auth", "key", "token", "secret")):
                register_secret(value.split()[-1] if value.split() else value)
        self.pricing = options.pricing
        self.capabilities = (
            self.CAPABILITIES
            if options.server_extensions
            else Capabilities(
                n_sampling=True,
                prefix_reuse=True,
                logprobs=True,
                constraints=frozenset({"json"}),
                aborts=True,
                penalties=True,
            )
        )
        if options.stream:
            self.capabilities = dataclasses.replace(self.capabilities, streaming=True)
        self._pool = Pool(options)
        self.endpoints: list[EndpointState] = self._pool.endpoints
        """Per-endpoint load-balancing state and counters."""
        self.stats: OpenAIStats = self._pool.stats
        """Totals: requests, HTTP calls, retries, failures, timeouts, ..."""
        self._split = options.n_mode == "split"
        self._chat = options.endpoint == "chat"

    def submit(self, request: Request) -> Handle:
        """Queue ``request``; the HTTP call starts in this event-loop turn."""
        self.capabilities.check(request, self.name)
        check_request(self.options, request)
        self.stats.requests += 1
        return task_handle(request, asyncio.get_running_loop().create_task(self._run(request)))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._pool.aclose()

    @property
    def split_mode(self) -> bool:
        """True once the backend sends n concurrent n=1 calls instead of one call with n."""
        return self._split

    async def _run(self, request: Request) -> list[Completion]:
        flights: list[Flight] = []
        try:
            return await self._generate(request, flights)
        except asyncio.CancelledError:
            partial = self._partial(request, flights)
            if not partial:
                raise  # nothing was sent: the handle settles as Cancelled, at no cost
            self.stats.cancelled_in_flight += 1
            return partial

    @staticmethod
    def _partial(request: Request, flights: list[Flight]) -> list[Completion]:
        """What a cancelled request is charged: the answers of its calls that came back, and
        ``max_tokens`` per sample of each call still in flight (see the module docstring)."""
        out: list[Completion] = []
        for f in flights:
            if f.result is not None:
                out += f.result
            elif f.open and isinstance(f, _StreamFlight):  # streamed: what came until the cut
                got = {c.index: c for c in f.state.completions(request)}
                for i in range(f.samples):
                    c = got.get(i) or Completion(text="", token_count=0)
                    c.finish_reason = "abort"
                    out.append(c)
            elif f.open:
                out += [
                    Completion(text="", token_count=request.params.max_tokens, finish_reason="abort")
                    for _ in range(f.samples)
                ]
        if any(c.finish_reason == "abort" for c in out):
            for i, c in enumerate(out):
                c.index = i
            return out
        return []

    async def _call(
        self, request: Request, n: int, seed: int | None, flights: list[Flight], sample: int = 0
    ) -> list[Completion]:
        """One HTTP call for ``n`` samples, parsed; ``flights`` records it for :meth:`_partial`;
        ``sample``: the request's index of the call's first sample (for the request's watcher)."""
        body = dumps(build_body(self.options, self._pool.model, request, n, seed))
        chat = self._chat

        def parse(data: Any) -> list[Completion]:
            return parse_response(data, request, chat)

        if self.options.stream:
            state = StreamState(chat)
            flight: Flight = _StreamFlight(n, state)
            flights.append(flight)

            async def reader(resp: Any) -> bytes:
                return await read_stream(resp, state, request.watch, sample)

            flight.result = await self._pool.call(body, parse, flight, reader)
        else:
            flight = Flight(n)
            flights.append(flight)
            flight.result = await self._pool.call(body, parse, flight)
        return flight.result

    async def _generate(self, request: Request, flights: list[Flight]) -> list[Completion]:
        if not self._pool.is_ready():
            await self._pool.ready()
        p = request.params
        n = p.n
        o = self.options
        if p.beam_width is not None or n == 1 or (not self._split and request.watch is None):
            try:
                completions = await self._call(request, n, p.seed, flights)
            except Rejected as exc:
                auto = o.n_mode == "auto" and p.beam_width is None
                if not (exc.status == 400 and n > 1 and auto):
                    raise self._fail(exc) from None
                # is it n? one n=1 call tells: if it succeeds, the server lacks n>1
                first = await self._run_split(request, 1, 0, flights)
                log.info(
                    "openai backend: server rejected n=%d (%s) but took n=1; switching to concurrent n=1 calls", n, exc
                )
                self._split = True
                return self._merge(first, await self._run_split(request, n - 1, 1, flights))
            except BackendError:
                self.stats.failures += 1
                raise
            if p.beam_width is not None:
                return completions[:n]
            if len(completions) < n and o.n_mode == "auto":
                log.info(
                    "openai backend: server returned %d of n=%d choices; switching to n=1 calls", len(completions), n
                )
                self._split = True
                completions = self._merge(
                    completions, await self._run_split(request, n - len(completions), len(completions), flights)
                )
            return completions
        return await self._run_split(request, n, 0, flights)

    @staticmethod
    def _merge(first: list[Completion], more: list[Completion]) -> list[Completion]:
        """Completions of several calls for one request: prompt counts summed over the calls."""
        if first and more:
            prompt_tokens = first[0].prompt_tokens + more[0].prompt_tokens
            cached = first[0].cached_prompt_tokens + more[0].cached_prompt_tokens
            for c in (*first, *more):
                c.prompt_tokens, c.cached_prompt_tokens = prompt_tokens, cached
        return first + more

    async def _run_split(self, request: Request, n: int, start: int, flights: list[Flight]) -> list[Completion]:
        p = request.params
        self.stats.split_calls += n
        seeds = [None if p.seed is None else p.seed + i for i in range(start, start + n)]
        tasks = [
            asyncio.ensure_future(self._call(request, 1, seed, flights, start + i)) for i, seed in enumerate(seeds)
        ]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException as exc:
            for t in tasks:  # one call failed (or the request was cancelled): stop the others
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, Rejected):
                raise self._fail(exc) from None
            if isinstance(exc, BackendError):
                self.stats.failures += 1
            raise
        completions: list[Completion] = []
        prompt_tokens = cached = 0
        for i, got in enumerate(results):
            for c in got:
                c.index = start + i
            if got:
                prompt_tokens += got[0].prompt_tokens
                cached += got[0].cached_prompt_tokens
            completions += got
        for c in completions:
            c.prompt_tokens, c.cached_prompt_tokens = prompt_tokens, cached
        return completions

    def _fail(self, exc: Rejected) -> BackendError:
        self.stats.failures += 1
        hint = " Check the API key in $" + self.options.api_key_env + "." if exc.status in (401, 403) else ""
        return BackendError(redact(f"openai backend: server answered HTTP {exc.status}: {exc}.{hint}"))
