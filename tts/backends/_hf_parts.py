"""Small parts of the transformers backend (:mod:`tts.backends.hf`), kept apart to keep that file
short: device and dtype choice, end-of-sequence ids, error wrapping and the search for where a stop
string starts. torch is passed in, never imported here.
"""

from __future__ import annotations

from typing import Any

from tts.errors import BackendError, ConfigError, TTSError
from tts.secrets import redact

__all__ = ["as_error", "eos_ids", "pick_device", "pick_dtype", "shortest_prefix"]


def pick_device(torch: Any, device: str) -> Any:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from exc


def pick_dtype(torch: Any, dtype: str, device: Any) -> Any:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def eos_ids(generation_config: Any, tokenizer: Any) -> tuple[int, ...]:
    """End-of-sequence ids: the generation config's (int or list) plus the tokenizer's."""
    ids: list[int] = []
    eos = generation_config.eos_token_id
    for value in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    return tuple(ids)


def as_error(exc: Exception) -> TTSError:
    """Errors of ours pass through; anything else is the engine failing (:class:`BackendError`)."""
    if isinstance(exc, TTSError):
        return exc
    error = BackendError(redact(f"hf backend: generation failed ({type(exc).__name__}: {exc})."))
    error.__cause__ = exc
    return error


def shortest_prefix(tokens: list[int], upper: int, has_stop: Any) -> int:
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
