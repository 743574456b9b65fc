"""Options of the vLLM backend and the translation of sampling parameters into vLLM's.

Engine options of :class:`VLLMOptions` reach ``vllm.LLM`` / ``AsyncEngineArgs`` under the same
names (``ENGINE_FIELDS``); the rest configure the backend itself. ``vllm`` is imported inside the
functions only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tts.backends.base import BackendOptions, Capabilities
from tts.errors import ConfigError
from tts.sampling import SamplingParams

__all__ = ["ENGINE_FIELDS", "VLLM_CAPABILITIES", "VLLMOptions", "beam_params", "sampling_params"]

VLLM_CAPABILITIES = Capabilities(
    n_sampling=True,
    prefix_reuse=True,
    logprobs=True,
    constraints=frozenset({"regex", "choice", "json", "grammar"}),
    beam_search=True,
    priorities=True,
    aborts=True,
    penalties=True,
    banned_words=True,
    min_p=True,
    seeds=True,
)
"""Every control a vLLM engine has (the vllm backend, and the openai backend talking to ``vllm serve``)."""


class VLLMOptions(BackendOptions):
    """Options of the vLLM backend. Engine options are passed to ``vllm.LLM`` / ``AsyncEngineArgs``
    under the same names; ``None`` keeps vLLM's default."""

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
        for name in ENGINE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                args[name] = value
        clash = sorted(set(self.engine_kwargs) & (set(args) | {"model"}))
        if clash:
            raise ConfigError(
                f"vllm backend: engine_kwargs repeats {', '.join(clash)}; set it as a backend option instead."
            )
        args.update(self.engine_kwargs)
        return args


_BACKEND_FIELDS = frozenset({"model", "mode", "chat_template", "engine_kwargs", "max_batch", "pricing"})
ENGINE_FIELDS = tuple(name for name in VLLMOptions.model_fields if name not in _BACKEND_FIELDS)


def sampling_params(p: SamplingParams, *, seed: int | None, final_only: bool = False) -> Any:
    """The ``vllm.SamplingParams`` for ``p`` with ``seed`` as the per-request seed."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import RequestOutputKind

    kw: dict[str, Any] = dict(
        n=p.n,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k or 0,
        min_p=p.min_p,
        max_tokens=p.max_tokens,
        min_tokens=p.min_tokens,
        stop=list(p.stop) or None,
        seed=seed,
        logprobs=p.logprobs,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
        repetition_penalty=p.repetition_penalty,
        bad_words=list(p.banned_words) or None,
        ignore_eos=p.ignore_eos,
        structured_outputs=_structured(p),
    )
    if final_only:
        kw["output_kind"] = RequestOutputKind.FINAL_ONLY
    return VSamplingParams(**kw)


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


def beam_params(p: SamplingParams) -> Any:
    """vLLM's ``BeamSearchParams`` for a beam-search request (greedy beams)."""
    from vllm.sampling_params import BeamSearchParams

    assert p.beam_width is not None
    return BeamSearchParams(
        beam_width=p.beam_width,
        max_tokens=p.max_tokens,
        ignore_eos=p.ignore_eos,
        temperature=0.0,
        length_penalty=p.length_penalty,
    )
