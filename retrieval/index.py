"""Indexes: dense (FAISS flat, IVF or HNSW over unit-length embeddings), BM25 (``bm25s``) and
hybrid (both, fused by reciprocal rank), persisted to a folder.

One :class:`Index` holds the :class:`~tts.retrieval.store.DocStore` (every chunk's text, document
id, offset and metadata) and the parts its ``kind`` needs. Building streams: documents are read,
chunked and embedded ``batch_size`` chunks at a time, each batch added to FAISS and appended to
the store's file, so no more than a batch of text is in memory (the vectors are, inside FAISS).
:meth:`Index.add` adds documents to an index; BM25 is re-indexed from the store then (``bm25s``
has no incremental add), the dense part only embeds the new chunks.

A folder holds ``index.json`` (kind, FAISS type, chunking, counts, and the embedder's name and
dimension), ``docs.jsonl`` + ``offsets.npy`` (the store), ``dense.faiss`` and ``bm25/``.
:meth:`Index.load` with another embedder is refused: vectors of two models are not comparable.

Results are :class:`Passage` s, one per document (its best chunk): ``id`` is the document's id,
``chunk`` the chunk's character offset in it. faiss, bm25s and sentence-transformers are imported
on first use.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import ConfigError, DatasetError, parse_options
from tts.retrieval.chunking import Chunk, ChunkOptions, Document, as_documents, chunk_document
from tts.retrieval.embedders import RETRIEVAL_HINT, Embedder, make_embedder
from tts.retrieval.store import DocStore

__all__ = ["Index", "IndexOptions", "Passage", "rrf_fuse"]

log = logging.getLogger(__name__)

Kind = Literal["dense", "bm25", "hybrid"]
MANIFEST = "index.json"
DENSE = "dense.faiss"
BM25_DIR = "bm25"
FORMAT = 1
BIG_DOCUMENT = 1_000_000
"""Characters from which a document's size and chunk count are logged."""


@dataclass(slots=True)
class Passage:
    """A retrieved document: its id, score, the text of its best chunk and where that chunk starts."""

    id: str
    score: float
    text: str
    chunk: int = 0
    """Character offset of the chunk in its document."""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "chunk": self.chunk}


class IndexOptions(BaseModel):
    """What an index is made of (recorded in its folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind = "hybrid"
    """``dense`` (embeddings), ``bm25`` (words) or ``hybrid`` (both, fused by reciprocal rank)."""
    faiss: Literal["flat", "ivf", "hnsw"] = "flat"
    """Dense index: exact inner product, inverted lists (trained on the first vectors) or HNSW."""
    nlist: int = Field(default=256, ge=1)
    """IVF lists (fewer when there are fewer than 39 training vectors a list)."""
    nprobe: int = Field(default=16, ge=1)
    """IVF lists searched per query."""
    hnsw_m: int = Field(default=32, ge=4)
    """HNSW links per node."""
    ef_search: int = Field(default=256, ge=1)
    """HNSW search breadth."""
    chunking: ChunkOptions = Field(default_factory=ChunkOptions)
    batch_size: int = Field(default=1024, ge=1)
    """Chunks embedded and added per step of a build (what a streaming build holds in memory)."""
    rrf_k: float = Field(default=60.0, gt=0)
    """Reciprocal-rank fusion constant of ``hybrid``: score = sum of 1 / (rrf_k + rank)."""
    depth: int = Field(default=50, ge=1)
    """Candidates each side contributes to the fusion (and chunks searched before per-document dedup)."""


def rrf_fuse(rankings: Sequence[Sequence[int]], k: float = 60.0) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of rankings of row numbers: ``(row, sum of 1/(k + rank))``, best
    first (ties keep first appearance). Pure."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, 1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"dense indexes need faiss: run `{RETRIEVAL_HINT}`.") from None
    return faiss


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise ConfigError(f"BM25 indexes need bm25s: run `{RETRIEVAL_HINT}`.") from None
    return bm25s


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    tokens: list[list[str]] = _bm25s().tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)
    return tokens


class Index:
    """A searchable collection of chunks: ``Index.build(docs, kind=...)``, ``index.search(q, k)``,
    ``index.save(DIR)``, ``Index.load(DIR)``."""

    def __init__(self, options: IndexOptions | None = None, embedder: Embedder | None = None, **kw: Any) -> None:
        self.options = o = options or parse_options(IndexOptions, kw, where="index")
        self.store = DocStore()
        self.documents = 0
        """Documents with text added so far."""
        self.skipped = 0
        """Documents without text (no chunk)."""
        self.embedder: Embedder | None = None
        self.embedder_name: str | None = None
        self.dimension: int | None = None
        self._dense: Any = None
        self._untrained: list[Any] = []  # IVF vectors waiting for training
        self._bm25: Any = None
        self._bm25_rows = 0  # rows the BM25 index covers
        if o.kind != "bm25":
            self.embedder = embedder or make_embedder(None)
            self.embedder_name = _embedder_name(self.embedder)

    # ---------------------------------------------------------------------------------- building

    @classmethod
    def build(
        cls,
        docs: Iterable[Document | Mapping[str, Any] | str],
        options: IndexOptions | None = None,
        *,
        embedder: Embedder | None = None,
        out: str | Path | None = None,
        overwrite: bool = False,
        **kw: Any,
    ) -> Index:
        """An index of ``docs`` (streamed); with ``out``, written there as it is built."""
        index = cls(options, embedder, **kw)
        if out is not None:
            _prepare(Path(out), overwrite)
            index.store = DocStore(out)
        index.add(docs)
        if len(index.store) == 0:
            raise DatasetError(
                f"the corpus has no text to index ({index.skipped} empty documents); "
                "give documents with a non-empty 'text'."
            )
        if out is not None:
            index.save(out)
        return index

    def add(self, docs: Iterable[Document | Mapping[str, Any] | str]) -> int:
        """Chunk, embed and add ``docs``; returns the number of chunks added."""
        o = self.options
        batch: list[Chunk] = []
        added = 0
        for doc in as_documents(docs):
            chunks = chunk_document(doc, o.chunking)
            if not chunks:
                self.skipped += 1
                log.warning("document %r has no text; skipped", doc.id)
                continue
            if len(doc.text) >= BIG_DOCUMENT:
                log.info("document %r: %.1f MB in %d chunks", doc.id, len(doc.text) / 1e6, len(chunks))
            self.documents += 1
            batch.extend(chunks)
            while len(batch) >= o.batch_size:
                added += self._add_batch(batch[: o.batch_size])
                batch = batch[o.batch_size :]
        if batch:
            added += self._add_batch(batch)
        self._finish_dense()
        if o.kind != "dense" and added:
            self._index_bm25()
        return added

    def _add_batch(self, chunks: list[Chunk]) -> int:
        self.store.add(chunks)
        if self.options.kind != "bm25":
            vectors = self._embed([c.text for c in chunks])
            self._add_vectors(vectors)
        return len(chunks)

    def _embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        assert self.embedder is not None
        vectors = np.ascontiguousarray(np.asarray(self.embedder.embed(texts), dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ConfigError(
                f"embedder {self.embedder_name!r} returned shape {vectors.shape} for {len(texts)} texts; "
                "it must return one row per text."
            )
        if self.dimension is None:
            self.dimension = int(vectors.shape[1])
        elif vectors.shape[1] != self.dimension:
            raise ConfigError(
                f"embedder {self.embedder_name!r} gives {vectors.shape[1]}-dimensional vectors but the index "
                f"holds {self.dimension}-dimensional ones; use the index's embedder or rebuild the index."
            )
        if getattr(self.embedder, "normalized", False):  # it says its rows are unit length
            return vectors
        if len(vectors) == 1:  # a query: one dot product, no division when already unit length
            norm = float(vectors[0] @ vectors[0]) ** 0.5
            if norm > 0 and abs(norm - 1.0) > 1e-6:
                vectors /= norm
            return vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms == 0, 1.0, norms)
        return vectors

    def _add_vectors(self, vectors: Any) -> None:
        faiss = _faiss()
        o = self.options
        assert self.dimension is not None
        if self._dense is None:
            if o.faiss == "flat":
                self._dense = faiss.IndexFlatIP(self.dimension)
            elif o.faiss == "hnsw":
                self._dense = faiss.IndexHNSWFlat(self.dimension, o.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                self._dense.hnsw.efSearch = o.ef_search
            else:  # ivf: trained once enough vectors are in (or when the build ends)
                self._untrained.append(vectors)
                if sum(len(v) for v in self._untrained) >= 39 * o.nlist:
                    self._finish_dense()
                return
        self._dense.add(vectors)

    def _finish_dense(self) -> None:
        """Train an IVF index on the vectors held back for training, and add them."""
        if not self._untrained:
            return
        import numpy as np

        faiss = _faiss()
        assert self.dimension is not None
        train = np.concatenate(self._untrained)
        self._untrained = []
        nlist = max(1, min(self.options.nlist, len(train) // 39))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(train)
        ivf.nprobe = min(self.options.nprobe, nlist)
        ivf.add(train)
        self._dense = ivf
        log.info("IVF index trained on %d vectors, %d lists", len(train), nlist)

    def _index_bm25(self) -> None:
        bm25s = _bm25s()
        self.store.flush()
        retriever = bm25s.BM25()
        retriever.index(_tokens(list(self.store.texts())), show_progress=False)
        self._bm25, self._bm25_rows = retriever, len(self.store)

    # ---------------------------------------------------------------------------------- searching

    def embed_query(self, query: str) -> Any:
        """The query's unit vector, shape (1, dimension)."""
        return self._embed([query])

    def search(self, query: str, k: int = 5, kind: Kind | None = None) -> list[Passage]:
        """The ``k`` best documents for ``query`` (one passage each: its best chunk)."""
        kind = self.check_kind(kind)
        vector = self.embed_query(query) if kind != "bm25" else None
        return self.search_with(query, vector, k, kind)

    def check_kind(self, kind: Kind | None) -> Kind:
        """``kind`` (default the index's) if this index has the parts it needs, else a one-line error."""
        have = self.options.kind
        kind = kind or have
        if have != "hybrid" and kind != have:
            raise ConfigError(
                f"a {kind} search needs a {kind} or hybrid index, this one is {have}; "
                f"rebuild it with --kind hybrid or search it as {have}."
            )
        return kind

    def search_with(self, query: str, vector: Any, k: int = 5, kind: Kind | None = None) -> list[Passage]:
        """:meth:`search` with the query's vector already computed (``None`` for ``bm25``);
        ``kind`` searches one part of a hybrid index (default: the index's kind)."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}.")
        kind = kind or self.options.kind
        one_chunk_each = len(self.store) == self.documents
        depth = k if one_chunk_each and kind == "dense" else max(self.options.depth, 4 * k)
        while True:
            if kind == "dense":
                ranked = self._dense_rows(vector, depth)
            elif kind == "bm25":
                ranked = self._bm25_rows_for(query, depth)
            else:
                dense = [r for r, _ in self._dense_rows(vector, depth)]
                sparse = [r for r, _ in self._bm25_rows_for(query, depth)]
                ranked = rrf_fuse([dense, sparse], self.options.rrf_k)
            found = self._passages(ranked, k)
            if len(found) == k or depth >= len(self.store):
                return found
            depth *= 4  # the best chunks were of fewer than k documents: look deeper

    def _dense_rows(self, vector: Any, depth: int) -> list[tuple[int, float]]:
        if self._dense is None or self._dense.ntotal == 0:
            return []
        scores, rows = self._dense.search(vector, min(depth, self._dense.ntotal))
        return [(r, s) for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True) if r >= 0]

    def _bm25_rows_for(self, query: str, depth: int) -> list[tuple[int, float]]:
        if self._bm25 is None or self._bm25_rows == 0:
            return []
        rows, scores = self._bm25.retrieve(_tokens([query]), k=min(depth, self._bm25_rows), show_progress=False)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]

    def _passages(self, ranked: list[tuple[int, float]], k: int) -> list[Passage]:
        out: list[Passage] = []
        seen: set[str] = set()
        for row, score in ranked:
            item = self.store.get(row)
            if item["id"] in seen:
                continue
            seen.add(item["id"])
            out.append(Passage(item["id"], score, item["text"], item["chunk"], item.get("meta") or {}))
            if len(out) == k:
                break
        return out

    # ---------------------------------------------------------------------------------- persistence

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "options": self.options.model_dump(mode="json"),
            "embedder": self.embedder_name,
            "dimension": self.dimension,
            "documents": self.documents,
            "skipped": self.skipped,
            "chunks": len(self.store),
        }

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder`` (created); returns it."""
        target = Path(folder)
        self._finish_dense()
        self.store.save(target)
        if self._dense is not None:
            _faiss().write_index(self._dense, str(target / DENSE))
        if self._bm25 is not None:
            shutil.rmtree(target / BM25_DIR, ignore_errors=True)
            self._bm25.save(str(target / BM25_DIR), show_progress=False)
        (target / MANIFEST).write_text(json.dumps(self.manifest(), indent=1) + "\n")
        return target

    @classmethod
    def load(cls, folder: str | Path, embedder: Embedder | None = None) -> Index:
        """The index saved in ``folder``; ``embedder`` must be the one it was built with (default:
        that one, by its recorded name)."""
        src = Path(folder)
        manifest = read_manifest(src)
        options = IndexOptions.model_validate(manifest["options"])
        recorded, dim = manifest.get("embedder"), manifest.get("dimension")
        if embedder is not None and options.kind != "bm25":
            name = _embedder_name(embedder)
            if name != recorded:
                raise ConfigError(
                    f"index {src} was built with embedder {recorded!r} ({dim} dimensions), not {name!r}; "
                    f"query it with {recorded!r} or rebuild the index with {name!r}."
                )
        index = cls.__new__(cls)
        index.options = options
        index.store = DocStore.load(src)
        index.documents, index.skipped = int(manifest["documents"]), int(manifest.get("skipped", 0))
        index.embedder_name, index.dimension = recorded, dim
        index.embedder = None
        index._dense, index._untrained, index._bm25, index._bm25_rows = None, [], None, 0
        if options.kind != "bm25":
            index.embedder = embedder or make_embedder(recorded)
            index._dense = _faiss().read_index(str(src / DENSE))
            if options.faiss == "hnsw":
                index._dense.hnsw.efSearch = options.ef_search
            elif options.faiss == "ivf":
                index._dense.nprobe = min(options.nprobe, index._dense.nlist)
        if options.kind != "dense":
            index._bm25 = _bm25s().BM25.load(str(src / BM25_DIR), show_progress=False)
            index._bm25_rows = len(index.store)
        return index

    def __len__(self) -> int:
        return len(self.store)


def _embedder_name(embedder: Any) -> str:
    name = getattr(embedder, "name", None)
    return str(name) if isinstance(name, str) and name else type(embedder).__name__


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder``'s ``index.json``, or a one-line error saying how to make one."""
    path = folder / MANIFEST
    if not path.is_file():
        what = "no such folder" if not folder.exists() else f"no {MANIFEST} in it"
        raise ConfigError(
            f"{folder} is not an index ({what}); build one with `tts-scale index build DOCS --out {folder}`."
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(
            f"{path} has format {manifest.get('format')!r}, this version reads {FORMAT}; rebuild the index."
        )
    return manifest


def _prepare(out: Path, overwrite: bool) -> None:
    if (out / MANIFEST).exists():
        if not overwrite:
            raise ConfigError(f"{out} already holds an index; pass overwrite=True (--force) or another folder.")
        for name in (MANIFEST, DENSE, "docs.jsonl", "offsets.npy"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / BM25_DIR, ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is a non-empty folder that is not an index; choose an empty or new folder.")
