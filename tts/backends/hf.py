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

Decoding controls are applied by logits processors this module builds itself, in a fixed order
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
import hashlib
import inspect
import itertools
import logging
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

from tts.backends.base import Batcher, Capabilities, Handle
from tts.errors import BackendError, ConfigError, ModelNotFound, TTSError
from tts.models import import_transformers, resolve_model
from tts.sampling import Constraint, SamplingParams
from tts.types import Completion, FinishReason, Request

__all__ = ["HFBackend"]

log = logging.getLogger(__name__)

_GENERATE_LOCK = threading.Lock()
"""Serialises generate calls of every HFBackend in the process: seeding uses torch's global RNG."""


@dataclass(frozen=True, slots=True)
class _Prompt:
    """A rendered prompt: the text the model sees and its token ids."""

    text: str
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Unit:
    """Some samples of one request inside one generate call (a request's n may span calls)."""

    request: int
    count: int
    offset: int


class HFBackend:
    """transformers ``generate`` behind the backend protocol (see module docstring).

    Counters: ``prefill_tokens`` (prompt positions computed), ``generate_calls``,
    ``completion_tokens`` (generated tokens up to and including end-of-sequence) and
    ``completions_generated``.
    """

    name: ClassVar[str] = "hf"
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        n_sampling=True,
        prefix_reuse=False,
        logprobs=True,
        constraints=frozenset({"regex", "choice", "json", "grammar"}),
        beam_search=True,
        priorities=True,
        penalties=True,
        banned_words=True,
        min_p=True,
        seeds=True,
    )

    def __init__(self, *, model: str | None = None, device: str = "auto", dtype: str = "auto",
                 max_batch_sequences: int = 64, seed: int = 0, threads: int | None = None) -> None:
        if max_batch_sequences < 1:
            raise ConfigError(f"max_batch_sequences must be >= 1, got {max_batch_sequences}.")
        try:
            self._transformers = import_transformers()
            import torch
        except ImportError as exc:
            raise ConfigError(f"backend 'hf' needs torch and transformers ({exc}); "
                              "install them with pip install 'tts-scale[cpu]'.") from exc

        self._torch = torch
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        self.device = _pick_device(torch, device)
        self.dtype = _pick_dtype(torch, dtype, self.device)
        self.model_path = resolve_model(model)
        self.seed = seed
        self.max_batch_sequences = max_batch_sequences
        self.capabilities = self.CAPABILITIES
        self.tokenizer, self.model = self._load(self.model_path)
        self._eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
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
        """Queue ``request``; requests of one event-loop turn run as one batch."""
        self.capabilities.check(request, self.name)
        return self._batcher.submit(request)

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
            raise ModelNotFound(f"model {path!r} not found ({str(exc).splitlines()[0]}); pass --model with a "
                                "local folder or a hub id reachable from this machine.") from exc
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
        prompts: dict[int, _Prompt] = {}
        for i, request in enumerate(requests):
            try:
                prompts[i] = self._render(request)
            except Exception as exc:
                results[i] = _as_error(exc)
        for params, members in _group([requests[i] for i in prompts], list(prompts)).items():
            for units in _pack(members, requests, self.max_batch_sequences):
                try:
                    outputs = self._generate_call(units, [prompts[u.request] for u in units], params,
                                                  self._call_seed(params))
                except Exception as exc:
                    error = _as_error(exc)
                    for unit in units:
                        results[unit.request] = error
                    continue
                for unit, completions in zip(units, outputs, strict=True):
                    done = results[unit.request]
                    if not isinstance(done, BaseException):
                        done.extend(completions)
        return results

    def _render(self, request: Request) -> _Prompt:
        """The prompt text (chat template with the generation prompt, then the assistant prefix)
        and its token ids (the template already holds special tokens; raw text gets the
        tokenizer's defaults)."""
        if isinstance(request.prompt, str):
            text = request.prompt + request.assistant_prefix
            special = True
        else:
            try:
                text = self.tokenizer.apply_chat_template(request.messages(), tokenize=False,
                                                          add_generation_prompt=True)
            except ValueError as exc:
                raise ConfigError(f"model {self.model_path!r} has no chat template ({exc}); send raw text "
                                  "prompts or use an instruction-tuned model.") from exc
            text += request.assistant_prefix
            special = False
        ids = tuple(self.tokenizer(text, add_special_tokens=special).input_ids)
        if not ids:
            raise ConfigError("prompt must not be empty, got ''.")
        return _Prompt(text, ids)

    def _call_seed(self, params: SamplingParams) -> int:
        """A seed per generate call: from the request seed when set (the same seeded request
        reproduces), else from a call counter (fresh samples every call)."""
        source = f"seed={params.seed}" if params.seed is not None else f"call={next(self._call_counter)}"
        digest = hashlib.blake2b(f"{self.seed}|{source}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") & (2**63 - 1)

    # ---------------------------------------------------------------- one generate call

    def _generate_call(self, units: list[_Unit], prompts: list[_Prompt], params: SamplingParams,
                       seed: int) -> list[list[Completion]]:
        """One ``model.generate`` over ``units``: prefill once, expand, decode, collect."""
        torch = self._torch
        beam = params.beam_width is not None
        rows = [params.beam_width or u.count for u in units]  # sequences decoded per unit
        prompt_ids, prompt_mask = self._pad([p.ids for p in prompts])
        width = prompt_ids.shape[1]
        index = torch.repeat_interleave(torch.arange(len(units)), torch.tensor(rows)).to(self.device)
        row_ids, row_mask = prompt_ids[index], prompt_mask[index]
        recorder = _LogprobRecorder(torch, params.logprobs or 0) \
            if params.logprobs is not None and not beam else None
        processors = self._processors(params, row_ids, row_mask, width, recorder)  # may refuse a grammar
        # beam search expands the prompts itself (the prefilled cache is expanded to the beams)
        input_ids, mask = (prompt_ids, prompt_mask) if beam else (row_ids, row_mask)
        with _GENERATE_LOCK, torch.inference_mode(), torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            cache = self._prefill(prompt_ids, prompt_mask, rows)
            self._prompt_phase = "generate"
            self.generate_calls += 1
            try:
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                          logits_processor=processors, **self._generate_kwargs(params))
            finally:
                self._prompt_phase = None
        logprobs: list[list[float]] | None = None
        top: list[list[dict[str, float]]] | None = None
        if beam:
            logprobs = self._beam_logprobs(out)
        elif recorder is not None:
            logprobs, top = recorder.result(out.sequences[:, -1], self.tokenizer)
        return self._collect(units, prompts, params, out.sequences[:, width:].tolist(), logprobs, top)

    def _collect(self, units: list[_Unit], prompts: list[_Prompt], params: SamplingParams,
                 sequences: list[list[int]], logprobs: list[list[float]] | None,
                 top: list[list[dict[str, float]]] | None) -> list[list[Completion]]:
        """Completions per unit from the generated rows (in unit order, ``unit.count`` rows each)."""
        completions: list[list[Completion]] = []
        row = 0
        for unit, prompt in zip(units, prompts, strict=True):
            completions.append([
                self._completion(sequences[row + j], params, prompt, unit.offset + j,
                                 logprobs[row + j] if logprobs is not None else None,
                                 top[row + j] if top is not None else None)
                for j in range(unit.count)])
            row += unit.count
        return completions

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _pad(self, prompts: list[tuple[int, ...]]) -> tuple[Any, Any]:
        """Left-padded ids and attention mask, on the model's device."""
        torch = self._torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
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
            self.model(input_ids=input_ids[:, :-1], attention_mask=prefix_mask, position_ids=positions,
                       past_key_values=cache, use_cache=True, **extra)
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
        kw: dict[str, Any] = {"max_new_tokens": params.max_tokens, "return_dict_in_generate": True,
                              "pad_token_id": self._pad_id}
        if params.ignore_eos:
            kw["eos_token_id"] = None
        else:
            kw["eos_token_id"] = list(self._eos_ids)
        if params.stop:
            kw["stop_strings"] = list(params.stop)
            kw["tokenizer"] = self.tokenizer
        if params.beam_width is not None:
            kw.update(num_beams=params.beam_width, num_return_sequences=params.n, do_sample=False,
                      length_penalty=params.length_penalty, early_stopping=True, output_scores=True)
        elif params.temperature == 0:
            kw["do_sample"] = False
        else:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k or 0, min_p=params.min_p or None)
        return kw

    def _processors(self, params: SamplingParams, input_ids: Any, mask: Any, width: int,
                    recorder: _LogprobRecorder | None) -> Any:
        """The logits processors of one call, raw-logprob recorder first (it must see raw logits)."""
        tf = self._transformers
        torch = self._torch
        procs: list[Any] = []
        if recorder is not None:
            procs.append(recorder)
        if params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            procs.append(_PenaltyProcessor(torch, input_ids, mask, params))
        if params.banned_words:
            procs.append(tf.NoBadWordsLogitsProcessor(self._banned_ids(params.banned_words),
                                                      eos_token_id=list(self._eos_ids)))
        if params.min_tokens and not params.ignore_eos:
            procs.append(tf.MinNewTokensLengthLogitsProcessor(
                width, params.min_tokens, torch.tensor(self._eos_ids, device=self.device), device=self.device))
        if params.constraint is not None:
            procs.append(_GrammarProcessor(self._compile(params.constraint), input_ids.shape[0]))
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
            return self._compile_with(self._grammars, constraint)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"constraint.{field} must be valid for kind={constraint.kind!r}, "
                              f"got an error from xgrammar: {first}") from exc

    @staticmethod
    def _compile_with(compiler: Any, constraint: Constraint) -> Any:
        if constraint.kind == "regex":
            return compiler.compile_regex(constraint.pattern)
        if constraint.kind == "choice":
            return compiler.compile_regex("(?:" + "|".join(re.escape(c) for c in constraint.choices) + ")")
        if constraint.kind == "json":
            if constraint.schema_ is None:
                return compiler.compile_builtin_json_grammar()
            return compiler.compile_json_schema(constraint.schema_)
        return compiler.compile_grammar(constraint.grammar)

    def _beam_logprobs(self, out: Any) -> list[list[float]]:
        """Per-token log-probabilities along each returned beam (generate's processed scores)."""
        scores = self.model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                      normalize_logits=False)
        return [row.tolist() for row in scores.float().cpu()]

    # ---------------------------------------------------------------- outputs

    def _completion(self, tokens: list[int], params: SamplingParams, prompt: _Prompt, index: int,
                    logprobs: list[float] | None, top: list[dict[str, float]] | None) -> Completion:
        """One completion: the text up to end-of-sequence or the first stop string, its token
        count, finish reason and (when asked) log-probabilities of its tokens."""
        count, text, finish = self._cut(tokens, params)
        cumulative = None
        if logprobs is not None:
            logprobs = logprobs[:count]
            cumulative = float(sum(logprobs))
            if params.logprobs is None:  # beam search: the cumulative score only
                logprobs = None
        self.completion_tokens += count
        self.completions_generated += 1
        return Completion(text=text, token_count=count, finish_reason=finish, cumulative_logprob=cumulative,
                          logprobs=logprobs, top_logprobs=top[:count] if top is not None else None,
                          prompt_tokens=len(prompt.ids), cached_prompt_tokens=0, prompt_text=prompt.text,
                          index=index)

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
            cut = _first_stop(text, params.stop)
            if cut is not None:
                text = text[:cut]
                count = _shortest_prefix(tokens, count, lambda k: _first_stop(decode(tokens[:k]), params.stop))
                finish = "stop"
        return count, text, finish

    def _decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))


# -------------------------------------------------------------------- helpers


def _pick_device(torch: Any, device: str) -> Any:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from exc


def _pick_dtype(torch: Any, dtype: str, device: Any) -> Any:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ConfigError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}.")
    return value


def _eos_ids(generation_config: Any, tokenizer: Any) -> tuple[int, ...]:
    """End-of-sequence ids: the generation config's (int or list) plus the tokenizer's."""
    ids: list[int] = []
    eos = generation_config.eos_token_id
    for value in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    return tuple(ids)


def _as_error(exc: Exception) -> TTSError:
    """Errors of ours pass through; anything else is the engine failing (:class:`BackendError`)."""
    if isinstance(exc, TTSError):
        return exc
    error = BackendError(f"hf backend: generation failed ({type(exc).__name__}: {exc}).")
    error.__cause__ = exc
    return error


def _group(requests: list[Request], indices: list[int]) -> dict[SamplingParams, list[int]]:
    """``indices`` (of ``requests``) by generate-call key: the sampling parameters, ``n`` aside
    (beam search keeps ``n``: it sets the number of returned beams for the whole call)."""
    groups: dict[SamplingParams, list[int]] = defaultdict(list)
    for i, request in zip(indices, requests, strict=True):
        p = request.params
        groups[p if p.beam_width is not None else p.with_n(1)].append(i)
    return groups


def _pack(members: list[int], requests: list[Request], cap: int) -> list[list[_Unit]]:
    """Split a group into generate calls of at most ``cap`` sequences; a request's samples
    are split across calls only when its n alone exceeds ``cap`` (a beam request never is)."""
    calls: list[list[_Unit]] = []
    current: list[_Unit] = []
    used = 0
    for i in members:
        p = requests[i].params
        pieces = [(p.beam_width, 0)] if p.beam_width is not None else \
            [(min(cap, p.n - start), start) for start in range(0, p.n, cap)]
        for rows, offset in pieces:
            if current and used + rows > cap:
                calls.append(current)
                current, used = [], 0
            current.append(_Unit(i, p.n if p.beam_width is not None else rows, offset))
            used += rows
    if current:
        calls.append(current)
    return calls


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _shortest_prefix(tokens: list[int], upper: int, has_stop: Any) -> int:
    """The fewest leading tokens whose text holds a stop string (binary search: once a stop
    string appears in the decoded prefix it stays)."""
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi) // 2
        if has_stop(mid) is not None:
            hi = mid
        else:
            lo = mid + 1
    return lo


class _LogprobRecorder:
    """Records each chosen token's log-probability under the raw model logits.

    Placed first among the logits processors, it sees the unprocessed logits of step t and,
    at step t + 1, reads the token chosen at step t from ``input_ids``; only one step of
    log-probabilities is held at a time (``output_logits`` would keep every step).
    """

    def __init__(self, torch: Any, top_k: int) -> None:
        self._torch = torch
        self._top_k = top_k
        self._previous: Any = None
        self._chosen: list[Any] = []
        self._top: list[tuple[Any, Any]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        logprobs = self._torch.log_softmax(scores.float(), dim=-1)
        self._take(input_ids[:, -1])
        self._previous = logprobs
        if self._top_k:
            values, ids = logprobs.topk(self._top_k, dim=-1)
            self._top.append((values.cpu(), ids.cpu()))
        return scores

    def _take(self, tokens: Any) -> None:
        if self._previous is not None:
            self._chosen.append(self._previous.gather(1, tokens.view(-1, 1)).squeeze(1).cpu())
            self._previous = None

    def result(self, last_tokens: Any, tokenizer: Any) -> tuple[list[list[float]], list[list[dict[str, float]]] | None]:
        """Per-row logprob lists (and top-k dicts), given the tokens chosen at the last step."""
        self._take(last_tokens)
        torch = self._torch
        chosen = torch.stack(self._chosen, dim=1).tolist() if self._chosen else []
        if not self._top_k:
            return chosen, None
        values = torch.stack([v for v, _ in self._top], dim=1).tolist()
        ids = torch.stack([i for _, i in self._top], dim=1).tolist()
        vocab: dict[int, str] = {}
        top: list[list[dict[str, float]]] = []
        for row_values, row_ids in zip(values, ids, strict=True):
            steps = []
            for step_values, step_ids in zip(row_values, row_ids, strict=True):
                alternatives: dict[str, float] = {}
                for value, token in zip(step_values, step_ids, strict=True):
                    text = vocab.setdefault(token, tokenizer.decode([token]))
                    alternatives.setdefault(text, value)
                steps.append(alternatives)
            top.append(steps)
        return chosen, top


class _PenaltyProcessor:
    """Repetition (multiplicative, on prompt and output tokens), presence and frequency
    (additive, on output tokens) penalties, vLLM's definitions; padding is ignored."""

    def __init__(self, torch: Any, input_ids: Any, mask: Any, params: SamplingParams) -> None:
        self._torch = torch
        self._start = input_ids.shape[1]
        self._prompt = (input_ids, mask)
        self._prompt_seen: Any = None
        self._repetition = params.repetition_penalty
        self._presence = params.presence_penalty
        self._frequency = params.frequency_penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self._torch
        generated = input_ids[:, self._start:]
        counts = torch.zeros_like(scores)
        if generated.shape[1]:
            counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        if self._repetition != 1.0:
            seen = (counts > 0) | self._seen_in_prompt(scores)
            penalised = torch.where(scores > 0, scores / self._repetition, scores * self._repetition)
            scores = torch.where(seen, penalised, scores)
        if self._presence:
            scores = scores - self._presence * (counts > 0).to(scores.dtype)
        if self._frequency:
            scores = scores - self._frequency * counts
        return scores

    def _seen_in_prompt(self, scores: Any) -> Any:
        if self._prompt_seen is None:
            ids, mask = self._prompt
            hits = self._torch.zeros_like(scores).scatter_add_(1, ids, mask.to(scores.dtype))
            self._prompt_seen = hits > 0
        return self._prompt_seen


class _GrammarProcessor:
    """Masks tokens an xgrammar matcher rejects, one matcher per row.

    Unlike xgrammar's contrib processor it tolerates rows that ended for another reason (a stop
    string): their padding tokens are not grammar tokens, so such a row's matcher is retired.
    """

    def __init__(self, compiled: Any, rows: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self._matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self._live = [True] * rows
        self._bitmask = xgr.allocate_token_bitmask(rows, compiled.tokenizer_info.vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._started:
            last = input_ids[:, -1].tolist()
            for i, matcher in enumerate(self._matchers):
                if self._live[i] and not matcher.is_terminated() and not matcher.accept_token(last[i]):
                    self._live[i] = False
        self._started = True
        for i, matcher in enumerate(self._matchers):
            if self._live[i] and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._bitmask, i)
        device = scores.device
        if device.type == "cuda":
            self._xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(device))
            return scores
        scores = scores.cpu()
        self._xgr.apply_token_bitmask_inplace(scores, self._bitmask)
        return scores.to(device)
