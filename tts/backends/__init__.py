"""Backends: ``fake`` (tests, simulations), ``hf`` (transformers, the embedded CPU default),
``vllm`` (the real engine) and ``openai`` (any OpenAI-compatible server).

Heavy engines are imported inside the backend classes, never at ``import tts``. Every backend
takes a pydantic ``Options`` (a :class:`BackendOptions`) and an optional ``pricing``
(:class:`Pricing`, USD per million tokens) from which the scheduler charges ``Usage.cost``.
"""

from __future__ import annotations

import functools
from typing import Any

from tts.backends.base import Backend, BackendOptions, Batcher, Capabilities, Handle, Pricing
from tts.errors import ConfigError

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "Batcher",
    "Capabilities",
    "Handle",
    "Pricing",
    "known_capabilities",
]

BACKENDS: dict[str, str] = {
    "fake": "tts.backends.fake:FakeBackend",
    "hf": "tts.backends.hf:HFBackend",
    "vllm": "tts.backends.vllm:VLLMBackend",
    "openai": "tts.backends.openai:OpenAIBackend",
}
"""Backend name -> ``module:Class`` (imported on first use)."""


def backend_class(name: str) -> Any:
    """The backend class registered as ``name`` (:data:`tts.registry.REGISTRY`, plugins included)."""
    from tts.registry import REGISTRY

    return REGISTRY.get("backend", name)


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
