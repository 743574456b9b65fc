"""Loading transformers classifiers for the model-based verifiers (reward models, NLI), in one place:
device choice, a :class:`~tts.errors.ModelNotFound` that says what to pass, and a pad token for
batching. transformers and torch are imported on call, never at import."""

from __future__ import annotations

import threading
from typing import Any

from tts.errors import ModelNotFound

__all__ = ["LazyClassifier", "device_of", "load_classifier"]


def device_of(device: str) -> str:
    """``device``, with ``auto`` resolved to ``cuda`` where available, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_classifier(
    name: str, auto_class: Any, *, what: str, hint: str, trust_remote_code: bool = False, **model_kw: Any
) -> tuple[Any, Any]:
    """(tokenizer, model) of ``name`` loaded with ``auto_class`` (e.g.
    ``AutoModelForSequenceClassification``); padding set up so batches work. A missing model is a
    ``ModelNotFound`` naming the ``what`` and the ``hint``."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = auto_class.from_pretrained(name, trust_remote_code=trust_remote_code, **model_kw)
    except OSError as exc:
        raise ModelNotFound(f"{what} {name!r} not found ({exc}); {hint}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


class LazyClassifier:
    """A transformers classifier loaded on first use (once, thread-safe: :meth:`load` returns what
    the subclass's ``_load`` built), and how texts are encoded for it."""

    def __init__(
        self, model: str, *, device: str = "auto", max_length: int | None = None, trust_remote_code: bool = False
    ) -> None:
        self.model_name = model
        self.device = device
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self._lock = threading.Lock()
        self._loaded: Any = None

    def _load(self) -> Any:
        raise NotImplementedError

    def load(self) -> Any:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
        return self._loaded

    def encode(self, tokenizer: Any, model: Any, *texts: list[str]) -> Any:
        """A padded (and, with ``max_length``, truncated) batch of ``texts`` (or text pairs) on
        the model's device."""
        kw: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if self.max_length is not None:
            kw.update(truncation=True, max_length=self.max_length)
        return tokenizer(*texts, **kw).to(model.device)
