"""A deterministic fake backend for tests and simulations, with an engine cost model on a virtual clock.

Reply models (one method: ``reply(request, prompt_text, index, rng) -> (text, tokens, logprob)``):

- :class:`Scripted`: replies by prompt (a substring of the rendered prompt selects a reply list,
  cycled for repeated samples), from a queue, or from a function.
- :class:`OracleModel`: a stochastic model with a known per-problem probability of a correct
  answer, a distribution over wrong answers and token lengths, so expected accuracies are known in
  closed form. Problems carry a ``[oracle:ID]`` marker in their question that selects their spec.

Costs (:class:`CostModel`) advance a :class:`VirtualClock`, never the wall clock: a batch costs
``per_batch + prefill_per_token * uncached prompt tokens + sum over waves of the longest
completion in the wave x (decode_step + decode_per_seq x sequences in the wave)``, where a wave is
up to ``max_concurrency`` sequences decoded together. Prompt tokens are whitespace-separated
words; with ``prefix_cache=True``, full blocks of ``block_size`` words already seen are cached,
as in vLLM's automatic prefix caching.

Streaming: a request's watcher (:mod:`tts.watch`) reads each sample one token at a time (the
sample's chosen-token logprob is its mean logprob at every step); a cut keeps the tokens until it
(the text in proportion), ``finish_reason="cut"``, and the decode waves cost the cut length.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tts.backends._hf_batching import DynamicBatchSize
from tts.backends.base import BackendOptions, Batcher, Capabilities, Handle, backend_options, first_stop
from tts.errors import ConfigError
from tts.types import Completion, Problem, Request
from tts.watch import Watcher

__all__ = [
    "CostModel",
    "FakeBackend",
    "FakeOptions",
    "OracleModel",
    "OracleSpec",
    "ReplyModel",
    "Scripted",
    "VirtualClock",
    "render_plain",
]


class ReplyModel(Protocol):
    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        """Text, completion token count and mean per-token logprob (or None) of one sample."""
        ...


def render_plain(request: Request) -> str:
    """How the fake backend renders a prompt: raw text as is, chat as ``role: content`` lines."""
    if isinstance(request.prompt, str):
        text = request.prompt
    else:
        text = "\n".join(f"{m.role}: {m.content}" for m in request.prompt) + "\nassistant:"
    return text + (" " + request.assistant_prefix if request.assistant_prefix else "")


class VirtualClock:
    """Simulated seconds; only the fake engine advances it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CostModel(BaseModel):
    """Engine cost model of the fake backend (virtual seconds)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    prefill_per_token: float = Field(default=0.0, ge=0)
    """Cost of one uncached prompt token."""
    decode_step: float = Field(default=0.0, ge=0)
    """Cost of one decode step for up to ``max_concurrency`` sequences."""
    max_concurrency: int = Field(default=256, ge=1)
    """Sequences decoded together in one step (C)."""
    per_batch: float = Field(default=0.0, ge=0)
    """Fixed overhead of one engine call."""
    decode_per_seq: float = Field(default=0.0, ge=0)
    """Added cost of one decode step per sequence in the wave: a step costs
    ``decode_step + decode_per_seq x batch`` (a wider batch takes longer per step)."""


class FakeOptions(BackendOptions):
    """Options of the fake backend (the reply model is passed beside them)."""

    cost: CostModel = CostModel()
    """Engine cost model on the virtual clock (all zero by default)."""
    prefix_cache: bool = False
    """Cache full blocks of prompt words already seen, as vLLM's automatic prefix caching does."""
    block_size: int = Field(default=16, ge=1)
    """Prefix-cache block size in words."""
    max_batch: int | None = Field(default=None, ge=1)
    """Most requests per engine batch (``None``: all that are queued)."""
    seed: int = 0
    """Seed of the reply models' random draws."""
    step_time_cap: float | None = Field(default=None, gt=0)
    """Dynamic batch size: decode waves grow while the P95 step time stays under this many
    virtual seconds and shrink when it does not (``None``: waves of ``max_concurrency``)."""


class Scripted:
    """Scripted replies.

    ``by_prompt`` maps a substring of the rendered prompt to a reply or a list of replies (cycled
    across samples of that prompt); ``queue`` is consumed in order for prompts no key matches;
    ``default`` answers the rest (without one, an unmatched prompt raises ConfigError).
    """

    def __init__(
        self,
        by_prompt: Mapping[str, str | Sequence[str]] | None = None,
        queue: Iterable[str] | None = None,
        default: str | Callable[[str], str] | None = None,
    ) -> None:
        self.by_prompt = {k: ([v] if isinstance(v, str) else list(v)) for k, v in (by_prompt or {}).items()}
        self.queue = list(queue or [])
        self.default = default
        self._cursor: dict[str, int] = {}

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        for key, replies in self.by_prompt.items():
            if key in prompt:
                i = self._cursor.get(key, 0)
                self._cursor[key] = i + 1
                text = replies[i % len(replies)]
                return text, len(text.split()), None
        if self.queue:
            text = self.queue.pop(0)
            return text, len(text.split()), None
        if self.default is not None:
            text = self.default(prompt) if callable(self.default) else self.default
            return text, len(text.split()), None
        raise ConfigError(
            f"fake backend: no scripted reply for prompt {prompt[:80]!r}; add a by_prompt key, "
            "a queue entry or a default."
        )


@dataclass(frozen=True)
class OracleSpec:
    """One simulated problem: the model answers correctly with probability ``p_correct``; otherwise
    it picks among ``wrong`` (uniformly, or by ``wrong_weights``). Completion lengths are uniform in
    ``length``; mean token logprobs are drawn around ``logprob_correct`` or ``logprob_wrong``."""

    p_correct: float
    answer: str = "42"
    wrong: tuple[str, ...] = ("1", "2", "3", "4")
    wrong_weights: tuple[float, ...] | None = None
    length: tuple[int, int] = (64, 64)
    logprob_correct: float = -0.3
    logprob_wrong: float = -0.6
    logprob_noise: float = 0.15


_ORACLE_RE = re.compile(r"\[oracle:([^\]]+)\]")


@dataclass
class OracleModel:
    """A stochastic model whose accuracy per problem is known (see module docstring)."""

    specs: dict[str, OracleSpec] = field(default_factory=dict)

    @staticmethod
    def problem(pid: str, spec: OracleSpec, question: str = "What is the answer?") -> Problem:
        return Problem(
            id=pid, question=f"[oracle:{pid}] {question}", reference=spec.answer, metadata={"p_correct": spec.p_correct}
        )

    def add(self, pid: str, spec: OracleSpec) -> Problem:
        self.specs[pid] = spec
        return self.problem(pid, spec)

    def problems(self, specs: Mapping[str, OracleSpec] | Sequence[OracleSpec]) -> list[Problem]:
        items = specs.items() if isinstance(specs, Mapping) else ((f"p{i}", s) for i, s in enumerate(specs))
        return [self.add(pid, spec) for pid, spec in items]

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        m = _ORACLE_RE.search(prompt)
        if m is None or m.group(1) not in self.specs:
            raise ConfigError(
                "oracle model: the prompt carries no known [oracle:ID] marker; build problems "
                "with OracleModel.add/problems and keep the question in the prompt."
            )
        spec = self.specs[m.group(1)]
        if rng.random() < spec.p_correct:
            answer, mean_lp = spec.answer, spec.logprob_correct
        else:
            answer = (
                rng.choices(spec.wrong, weights=spec.wrong_weights)[0]
                if spec.wrong_weights
                else spec.wrong[int(rng.random() * len(spec.wrong))]
            )
            mean_lp = spec.logprob_wrong
        tokens = spec.length[0] if spec.length[0] == spec.length[1] else rng.randint(*spec.length)
        lp = min(0.0, mean_lp + spec.logprob_noise * rng.gauss(0.0, 1.0))
        return f"Reasoning with {tokens} tokens. The answer is {answer}.", tokens, lp


class FakeBackend:
    """Deterministic fake engine (see module docstring). Counts what it generated.

    ``calls``: engine batches; ``requests``: requests served; ``completions_generated``;
    ``prefill_tokens`` (computed, not cached); ``completion_tokens``.
    """

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[FakeOptions]] = FakeOptions
    CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        n_sampling=True, logprobs=True, priorities=True, prefix_reuse=True, streaming=True
    )

    def __init__(
        self,
        model: ReplyModel | FakeOptions | None = None,
        options: FakeOptions | Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if isinstance(model, FakeOptions):  # FakeBackend(options), as components are built
            model, options = None, model
        self.options = o = backend_options(FakeOptions, options, kw, name="fake")
        self.model: ReplyModel = model if model is not None else Scripted(default="The answer is 0.")
        self.pricing = o.pricing
        self.cost = o.cost
        self.clock = VirtualClock()
        self.prefix_cache = o.prefix_cache
        self.block_size = o.block_size
        self.seed = o.seed
        self.capabilities = Capabilities(
            n_sampling=True, logprobs=True, priorities=True, prefix_reuse=o.prefix_cache, streaming=True
        )
        self._blocks: set[bytes] = set()
        self._sample_counter: dict[str, itertools.count[int]] = {}
        self._batcher = Batcher(self._run_batch, max_batch=o.max_batch)
        self.dynamic = (
            DynamicBatchSize(o.step_time_cap, o.cost.max_concurrency) if o.step_time_cap is not None else None
        )
        """The dynamic batch-size controller (with ``step_time_cap``)."""
        self.waves: list[tuple[int, int, float]] = []
        """Every decode wave: (sequences, steps, seconds per step)."""
        self.calls = 0
        self.requests = 0
        self.completions_generated = 0
        self.prefill_tokens = 0
        self.completion_tokens = 0

    @classmethod
    def scripted(
        cls,
        by_prompt: Mapping[str, str | Sequence[str]] | None = None,
        queue: Iterable[str] | None = None,
        default: str | None = None,
        **kw: Any,
    ) -> FakeBackend:
        return cls(Scripted(by_prompt, queue, default), **kw)

    def submit(self, request: Request) -> Handle:
        self.capabilities.check(request, self.name)
        return self._batcher.submit(request)

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    def _cached_tokens(self, words: list[str]) -> int:
        if not self.prefix_cache:
            return 0
        h = hashlib.blake2b(digest_size=16)
        cached, full = 0, True
        for start in range(0, len(words) - len(words) % self.block_size, self.block_size):
            h.update("\x00".join(words[start : start + self.block_size]).encode())
            digest = h.copy().digest()
            if full and digest in self._blocks:
                cached += self.block_size
            else:
                full = False
                self._blocks.add(digest)
        return min(cached, max(len(words) - 1, 0))

    def _rng(self, request: Request, prompt: str) -> random.Random:
        """One generator per request, its samples drawn in order: a seeded request always gives the
        same samples; an unseeded one gives fresh samples each time its prompt comes back."""
        if request.params.seed is not None:
            return random.Random(f"{self.seed}|{request.params.seed}|{prompt}")
        counter = self._sample_counter.setdefault(prompt, itertools.count())
        return random.Random(f"{self.seed}|*|{prompt}|{next(counter)}")

    async def _run_batch(self, requests: list[Request]) -> list[list[Completion] | BaseException]:
        self.calls += 1
        cost = self.cost
        prefill = 0
        lengths: list[int] = []
        outputs: list[list[Completion] | BaseException] = []
        for request in requests:
            prompt = render_plain(request)
            words = prompt.split()
            cached = self._cached_tokens(words)
            prefill += len(words) - cached
            p = request.params
            outs: list[Completion] = []
            try:
                rng = self._rng(request, prompt)
                replies = [self.model.reply(request, prompt, i, rng) for i in range(p.n)]
            except Exception as exc:  # this request fails alone, as in a real engine
                outputs.append(exc)
                continue
            for i, (text, tokens, mean_lp) in enumerate(replies):
                finish = "stop"
                cut = first_stop(text, p.stop) if p.stop else None
                if cut is not None:
                    text = text[:cut]
                    tokens = min(tokens, len(text.split()) + 1)  # the stop string's token was generated
                if tokens > p.max_tokens and not p.ignore_eos:
                    words_out = text.split()
                    text, tokens, finish = " ".join(words_out[: p.max_tokens]), p.max_tokens, "length"
                if p.ignore_eos:
                    tokens, finish = p.max_tokens, "length"
                if request.watch is not None:
                    text, tokens, finish = _stream(request.watch, i, text, tokens, finish, mean_lp)
                lp = None
                if p.logprobs is not None:
                    mean = mean_lp if mean_lp is not None else -0.5
                    lp = mean * tokens
                outs.append(
                    Completion(
                        text=text,
                        token_count=tokens,
                        finish_reason=finish,  # type: ignore[arg-type]
                        cumulative_logprob=lp,
                        logprobs=[mean_lp if mean_lp is not None else -0.5] * tokens
                        if p.logprobs is not None
                        else None,
                        prompt_tokens=len(words),
                        cached_prompt_tokens=cached,
                        prompt_text=prompt,
                        index=i,
                    )
                )
                lengths.append(tokens)
                self.completion_tokens += tokens
            self.completions_generated += p.n
            self.requests += 1
            outputs.append(outs)
        self.prefill_tokens += prefill
        decode = 0.0
        start = 0
        while start < len(lengths):
            c = self.dynamic.size if self.dynamic is not None else cost.max_concurrency
            wave = lengths[start : start + c]
            start += c
            step = cost.decode_step + cost.decode_per_seq * len(wave)
            decode += max(wave) * step
            self.waves.append((len(wave), max(wave), step))
            if self.dynamic is not None:
                self.dynamic.observe(step)
        self.clock.advance(cost.per_batch + prefill * cost.prefill_per_token + decode)
        return outputs

    async def aclose(self) -> None:
        return None


def _stream(
    watch: Watcher, sample: int, text: str, tokens: int, finish: str, mean_lp: float | None
) -> tuple[str, int, str]:
    """Stream one sample to its watcher a token at a time (module docstring)."""
    step = [mean_lp if mean_lp is not None else -0.5]
    for k in range(1, tokens + 1):
        if watch.watch(sample, step):
            words = text.split()
            return " ".join(words[: len(words) * k // tokens]), k, "cut"
    return text, tokens, finish
