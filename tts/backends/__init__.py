"""Backends: ``fake`` (tests, simulations), ``hf`` (transformers, the embedded CPU default),
``vllm`` (the real engine) and ``openai`` (any OpenAI-compatible server).

Heavy engines are imported inside the backend classes, never at ``import tts``.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from tts.backends.base import Backend, Batcher, Capabilities, Handle
from tts.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "Batcher", "Capabilities", "Handle", "known_capabilities", "make_backend"]

BACKENDS: dict[str, str] = {
    "fake": "tts.backends.fake:FakeBackend",
    "hf": "tts.backends.hf:HFBackend",
    "vllm": "tts.backends.vllm:VLLMBackend",
    "openai": "tts.backends.openai:OpenAIBackend",
}
"""Backend name -> ``module:Class`` (imported on first use)."""


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(sorted(BACKENDS))}, got {name!r}.")
    module, _, attr = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"backend {name!r} is not available ({exc}); install its extra, "
                          f"e.g. pip install 'tts-scale[{'cpu' if name == 'hf' else name}]'.") from exc


@functools.cache
def known_capabilities() -> dict[str, Capabilities]:
    """Declared capabilities of every importable backend, read once from the backend classes."""
    table: dict[str, Capabilities] = {}
    for name in BACKENDS:
        try:
            table[name] = backend_class(name).CAPABILITIES
        except (ConfigError, AttributeError):
            continue
    return table


def make_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name with its options (``make_backend("hf", model="path")``)."""
    return backend_class(name)(**options)
