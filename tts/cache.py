"""The request cache: engine answers kept in SQLite, so a repeated request costs no tokens.

The scheduler looks every request up before it reaches the engine (:class:`~tts.scheduler.Scheduler`
``cache=``) and stores what the engine returns. The key covers the model (the backend's name, its
options and its reply model: :func:`identity`), the prompt as sent (text or chat messages, and the
assistant prefix; the model and its options fix how it is rendered) and every sampling field,
the seed and ``n`` included (:func:`request_key`).

Rules:

- **Seeded** requests are served by key, any number of times: the same seed gives the same
  samples, so serving them is exact.
- **Unseeded** requests are served only from entries an earlier run stored, each entry at most
  once per run: a run never gets the same unseeded sample twice (that would fake agreement), and
  never its own samples back.
- A hit costs no tokens: the scheduler charges ``Usage.cache_hits`` and ``Usage.cache_hit_tokens``
  (what the answer cost when generated) instead of prompt and completion tokens, so
  ``Usage.original_tokens`` (curves, allocation) stays what a fresh run costs and
  ``Usage.spent_tokens`` is what this one did.
- Bounded: past ``max_entries`` the least recently used entries are evicted.
- Safe across processes and runs: one SQLite file in WAL mode, every write one short transaction.
  The file is per machine; workers on other nodes keep their own.
- Per-run opt-out: a pipeline's ``run: {cache: {enabled: false}}`` (studies) or a scheduler built
  without a cache.

An optional **semantic layer** (``semantic: {threshold: 0.95}``, off by default) answers a
near-duplicate question (cosine similarity of the last user message's embedding at or above the
threshold, same model and sampling fields) from the cache, counted apart (``stats.semantic_hits``).
Studies refuse it: it would answer a different question.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import ConfigError, parse_options
from tts.types import Completion, Request

__all__ = ["CacheOptions", "CacheStats", "RequestCache", "SemanticOptions", "default_cache_path", "identity"]

_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SemanticOptions(BaseModel):
    """The optional near-duplicate layer (refused in studies)."""

    model_config = _STRICT

    threshold: float = Field(default=0.95, gt=0, le=1)
    """Cosine similarity at or above which a stored answer is served for another question."""
    embedder: str | None = None
    """Embedder name (``hash-256`` for the dependency-free fake; ``None``: all-MiniLM-L6-v2 from the
    retrieval extra)."""


class CacheOptions(BaseModel):
    """``run: {cache: {...}}``: the request cache of a run."""

    model_config = _STRICT

    enabled: bool = True
    """``false``: this run neither reads nor writes the cache (the per-run opt-out)."""
    path: str | None = None
    """SQLite file; ``None``: ``$TTS_SCALE_CACHE`` or ``~/.cache/tts-scale/requests.sqlite``."""
    max_entries: int = Field(default=100_000, ge=1)
    """Entries kept; the least recently used beyond it are evicted."""
    semantic: SemanticOptions | None = None
    """Near-duplicate answers (off by default; refused in studies)."""


@dataclasses.dataclass
class CacheStats:
    """What the cache did since it was opened."""

    lookups: int = 0
    hits: int = 0
    """Exact hits (same key)."""
    semantic_hits: int = 0
    """Near-duplicate hits of the semantic layer (counted apart from ``hits``)."""
    stores: int = 0
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits (exact and semantic) over lookups (0 with none)."""
        return (self.hits + self.semantic_hits) / self.lookups if self.lookups else 0.0


def default_cache_path() -> Path:
    env = os.environ.get("TTS_SCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tts-scale" / "requests.sqlite"


def identity(backend: Any) -> str:
    """What identifies the model behind ``backend`` for the cache key: its name, its options
    (pricing aside) and its reply model where it has one (the fake's). A backend may say it
    itself with a ``cache_identity`` attribute."""
    own = getattr(backend, "cache_identity", None)
    if own is not None:
        return str(own() if callable(own) else own)
    parts: dict[str, Any] = {"name": getattr(backend, "name", type(backend).__name__)}
    options = getattr(backend, "options", None)
    if isinstance(options, BaseModel):
        parts["options"] = options.model_dump(mode="json", exclude={"pricing"})
    model = getattr(backend, "model", None)
    if isinstance(model, str):
        parts["model"] = model
    elif model is not None and not isinstance(model, str | int | float):
        # a dataclass reply model (the oracle) reprs its specs; any other object is only itself
        is_data = dataclasses.is_dataclass(model)
        parts["model"] = repr(model) if is_data else f"{type(model).__qualname__}@{id(model)}@{os.getpid()}"
    for attr in ("model_path", "model_name"):
        if isinstance(value := getattr(backend, attr, None), str):
            parts[attr] = value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _prompt(request: Request) -> Any:
    return request.prompt if isinstance(request.prompt, str) else [[m.role, m.content] for m in request.prompt]


def _scope(model: str, request: Request) -> str:
    """Key of everything but the prompt (the semantic layer compares prompts within one scope)."""
    params = request.params.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(json.dumps([model, params], sort_keys=True).encode()).hexdigest()


def request_key(model: str, request: Request) -> str:
    """The cache key of ``request`` on the model ``model`` (an :func:`identity`): the prompt, the
    assistant prefix and every sampling field, seed and n included (priority is not: it changes
    when an answer comes, not what it is)."""
    params = request.params.model_dump(mode="json", by_alias=True)
    blob = json.dumps([model, _prompt(request), request.assistant_prefix, params], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _question(request: Request) -> str:
    if isinstance(request.prompt, str):
        return request.prompt
    users = [m.content for m in request.prompt if m.role == "user"]
    return users[-1] if users else ""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, scope TEXT NOT NULL, seeded INTEGER NOT NULL,
    run TEXT NOT NULL, completions TEXT NOT NULL, tokens INTEGER NOT NULL, used REAL NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS entries_key ON entries (key);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
"""


class RequestCache:
    """One SQLite request cache (see module docstring).

    ``run_id``: the run this cache serves (``None``: a fresh one); :meth:`new_run` starts the next.
    Workers of one distributed run pass the same id, so no worker serves another's unseeded
    samples of that run.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_entries: int = 100_000,
        semantic: SemanticOptions | None = None,
        run_id: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self.semantic = semantic
        self.run_id = run_id or uuid.uuid4().hex
        self.stats = CacheStats()
        self._served: set[int] = set()
        self._lock = threading.Lock()
        self._embedder: Any = None
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._count = int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    @classmethod
    def from_options(cls, options: CacheOptions | dict[str, Any] | None, **kw: Any) -> RequestCache | None:
        """The cache ``options`` describe (``None`` when absent or disabled)."""
        if options is None:
            return None
        o = parse_options(CacheOptions, options, where="run.cache")
        if not o.enabled:
            return None
        return cls(o.path, max_entries=o.max_entries, semantic=o.semantic, **kw)

    def new_run(self, run_id: str | None = None) -> None:
        """Start the next run: unseeded entries stored so far become servable, once each."""
        self.run_id = run_id or uuid.uuid4().hex
        self._served.clear()

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- lookups

    def get(self, model: str, request: Request) -> list[Completion] | None:
        """The cached completions of ``request`` on ``model``, or ``None`` (a miss)."""
        key = request_key(model, request)
        seeded = request.params.seed is not None
        with self._lock:
            self.stats.lookups += 1
            if seeded:
                rows = self.db.execute("SELECT id, completions FROM entries WHERE key = ? LIMIT 1", (key,)).fetchall()
            else:
                rows = self.db.execute(
                    "SELECT id, completions FROM entries WHERE key = ? AND run != ? ORDER BY id", (key, self.run_id)
                ).fetchall()
                rows = [r for r in rows if r[0] not in self._served][:1]
            hit = rows[0] if rows else None
            if hit is None and self.semantic is not None:
                hit = self._near(model, request)
                if hit is not None:
                    self.stats.semantic_hits += 1
            elif hit is not None:
                self.stats.hits += 1
            if hit is None:
                return None
            if not seeded:
                self._served.add(hit[0])
            self.db.execute("UPDATE entries SET used = ? WHERE id = ?", (time.time(), hit[0]))
        return [Completion(**d) for d in json.loads(hit[1])]

    def put(self, model: str, request: Request, completions: list[Completion]) -> None:
        """Store what the engine returned for ``request`` (complete answers only: an aborted or
        short one is not stored, nor one whose watcher cut a sample)."""
        if len(completions) != request.params.n or any(
            c.finish_reason in ("abort", "error", "cut") for c in completions
        ):
            return
        key = request_key(model, request)
        seeded = request.params.seed is not None
        tokens = (completions[0].prompt_tokens if completions else 0) + sum(c.token_count for c in completions)
        blob = json.dumps([c.to_dict() for c in completions])
        embedding = self._embed(_question(request)) if self.semantic is not None else None
        with self._lock:
            if seeded and self.db.execute("SELECT 1 FROM entries WHERE key = ? LIMIT 1", (key,)).fetchone():
                return
            self.db.execute(
                "INSERT INTO entries (key, scope, seeded, run, completions, tokens, used, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, _scope(model, request), int(seeded), self.run_id, blob, tokens, time.time(), embedding),
            )
            self.stats.stores += 1
            self._count += 1
            if self._count > self.max_entries:
                self._evict()

    def _evict(self) -> None:
        excess = self._count - self.max_entries
        cur = self.db.execute(
            "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY used ASC, id ASC LIMIT ?)", (excess,)
        )
        self.stats.evictions += max(cur.rowcount, 0)
        self._count = int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def __len__(self) -> int:
        return self._count

    # ---------------------------------------------------------------- semantic layer

    def _embed(self, text: str) -> bytes:
        import numpy as np

        if self._embedder is None:
            from retrieval.embedders import make_embedder

            assert self.semantic is not None
            self._embedder = make_embedder(self.semantic.embedder)
        return bytes(np.asarray(self._embedder.embed([text])[0], dtype=np.float32).tobytes())

    def _near(self, model: str, request: Request) -> tuple[int, str] | None:
        import numpy as np

        assert self.semantic is not None
        rows = self.db.execute(
            "SELECT id, completions, embedding, seeded, run FROM entries WHERE scope = ? AND embedding IS NOT NULL",
            (_scope(model, request),),
        ).fetchall()
        rows = [r for r in rows if r[3] or (r[4] != self.run_id and r[0] not in self._served)]
        if not rows:
            return None
        query = np.frombuffer(self._embed(_question(request)), dtype=np.float32)
        sims = [float(np.dot(query, np.frombuffer(r[2], dtype=np.float32))) for r in rows]
        best = int(np.argmax(sims))
        return (rows[best][0], rows[best][1]) if sims[best] >= self.semantic.threshold else None


def refuse_semantic_in_study(options: CacheOptions | None, label: str) -> None:
    """Studies measure a configuration on its own questions: a near-duplicate answer is refused."""
    if options is not None and options.enabled and options.semantic is not None:
        raise ConfigError(
            f"{label}: run.cache.semantic is refused in studies (it would answer a different question); "
            "drop run.cache.semantic."
        )
