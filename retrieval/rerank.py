"""Cross-encoder reranking: a model reads (query, passage) pairs and scores each.

Users name any sentence-transformers cross-encoder (a hub id or a local folder), e.g.
``cross-encoder/ms-marco-MiniLM-L-6-v2``; nothing ships with the package. The model loads on
first use; each passage's ``score`` becomes the cross-encoder's.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tts.errors import ModelNotFound
from tts.retrieval.embedders import RETRIEVAL_HINT
from tts.retrieval.index import Passage

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker:
    """Reorders passages by a cross-encoder's score of (query, passage text)."""

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 32) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError:
                    raise ModelNotFound(f"reranking needs sentence-transformers: run `{RETRIEVAL_HINT}`.") from None
                local = Path(self.model).is_dir()
                try:
                    self._model = CrossEncoder(self.model, device=self.device, local_files_only=local)
                except OSError as exc:
                    raise ModelNotFound(
                        f"cross-encoder {self.model!r} not found ({exc}); pass a local folder or a hub id "
                        "you can download."
                    ) from None
            return self._model

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """The cross-encoder's score of each (query, text) pair."""
        if not texts:
            return []
        raw = self._load().predict(
            [(query, t) for t in texts], batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return [float(x) for x in (raw.reshape(len(texts), -1)[:, -1])]

    def rerank(self, query: str, passages: Sequence[Passage], k: int | None = None) -> list[Passage]:
        """``passages`` sorted by cross-encoder score (best first; ties keep their order), the best ``k``."""
        scores = self.scores(query, [p.text for p in passages])
        order = sorted(range(len(passages)), key=lambda i: -scores[i])
        out = [dataclasses.replace(passages[i], score=scores[i]) for i in order]
        return out[:k] if k is not None else out
