"""Retrievers: an index (and an optional reranker) as the context's retriever.

A pipeline names one (``retriever: {name: hybrid, index: DIR, k: 5}``): ``dense``, ``bm25`` or
``hybrid`` search that part of a saved :class:`~tts.retrieval.index.Index` (a hybrid index serves
all three). In Python, ``Retriever(index)`` wraps an index object.

``ctx.retrieve(query, k)`` awaits :meth:`Retriever.retrieve`, which runs the search (query
embedding included) on the retriever's own worker threads: retrieval for one problem runs beside
generation for the others and never blocks the event loop the scheduler runs on. The hand-off is
the least a thread hop can be: the call goes on a queue the workers wait on, and the result comes
back through ``loop.call_soon_threadsafe`` straight into an asyncio future (no
``concurrent.futures`` future, no executor bookkeeping: ``loop.run_in_executor`` cost about 70 us
more per search here, 225 us against 155 us for the two hops). Each worker runs FAISS with
``faiss_threads`` OpenMP threads (one query at a time gains nothing from more, and contends with
the engine for cores). :meth:`Retriever.search` is the same work, called directly (the CLI and
benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.errors import ConfigError, parse_options
from tts.retrieval.chunking import read_documents
from tts.retrieval.embedders import make_embedder
from tts.retrieval.index import MANIFEST, Index, Kind, Passage, read_manifest
from tts.retrieval.rerank import CrossEncoderReranker

__all__ = ["BM25Retriever", "DenseRetriever", "HybridRetriever", "Retriever", "RetrieverOptions", "Workers"]

log = logging.getLogger(__name__)


class Retriever:
    """Searches ``index`` for ``k`` passages (one per document), reranked when a reranker is given."""

    def __init__(
        self,
        index: Index,
        *,
        k: int = 5,
        kind: Kind | None = None,
        reranker: CrossEncoderReranker | None = None,
        rerank_depth: int = 20,
        workers: int = 2,
        faiss_threads: int = 1,
    ) -> None:
        self.index = index
        self.k = k
        self.kind: Kind = index.check_kind(kind)
        self.reranker = reranker
        self.rerank_depth = rerank_depth
        self.workers = workers
        self.faiss_threads = faiss_threads
        self._workers: Workers | None = None
        self._lock = threading.Lock()

    def search(self, query: str, k: int | None = None) -> list[Passage]:
        """The best ``k`` (default the retriever's) passages for ``query``, in this thread."""
        k = k or self.k
        if self.reranker is None:
            return self.index.search(query, k, self.kind)
        found = self.index.search(query, max(k, self.rerank_depth), self.kind)
        return self.reranker.rerank(query, found, k)

    @property
    def pool(self) -> Workers:
        """The worker threads (started on first use; stopped by :meth:`close` or when the retriever
        is garbage collected: they hold no reference to it)."""
        with self._lock:
            if self._workers is None:
                init = functools.partial(_omp_threads, self.faiss_threads) if self.kind != "bm25" else None
                self._workers = Workers(self.workers, init)
                weakref.finalize(self, self._workers.close)
            return self._workers

    async def retrieve(self, query: str, k: int | None = None) -> list[Passage]:
        """:meth:`search` on the retriever's worker threads (what ``ctx.retrieve`` awaits)."""
        found: list[Passage] = await self.pool.run(self.search, query, k)
        return found

    def close(self) -> None:
        with self._lock:
            if self._workers is not None:
                self._workers.close()
                self._workers = None


def _omp_threads(count: int) -> None:
    import faiss

    faiss.omp_set_num_threads(count)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Workers:
    """Daemon threads that run calls off the event loop: a call waits on one queue, its result is
    posted back to the caller's loop with ``call_soon_threadsafe`` (two thread wake-ups, nothing
    else)."""

    def __init__(self, count: int, initializer: Callable[[], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._initializer = initializer
        self.threads = [
            threading.Thread(target=self._serve, name=f"tts-retrieval-{i}", daemon=True) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _serve(self) -> None:
        if self._initializer is not None:
            self._initializer()
        get = self._queue.get
        while (item := get()) is not None:
            loop, future, fn, args = item
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting task
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)
            del item, loop, future, fn, args, result, error  # hold nothing between calls

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a worker thread."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return await future

    def close(self) -> None:
        """Stop the threads once the queued calls are done (does not wait)."""
        for _ in self.threads:
            self._queue.put(None)


class RetrieverOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: str | None = None
    """Folder of an index built with ``tts-scale index build`` (or ``Index.save``)."""
    docs: str | None = None
    """Documents (a folder of text files or a JSONL file) to build the index from when ``index``
    does not exist yet; without ``index`` the index is cached under the user cache folder, keyed
    by the file's path, size and time, the kind and the embedder."""
    k: int = Field(default=5, ge=1, le=1000)
    """Passages per query when the caller does not say."""
    embedder: str | None = None
    """The embedder the index was built with (default: the one it records; another is refused)."""
    rerank: str | None = None
    """A cross-encoder (hub id or folder) that reorders the top ``rerank_depth`` passages."""
    rerank_depth: int = Field(default=20, ge=1)
    """Passages the cross-encoder reads per query (the best ``k`` of them are kept)."""
    workers: int = Field(default=2, ge=1, le=64)
    """Threads that embed and search (off the event loop)."""
    faiss_threads: int = Field(default=1, ge=1)
    """OpenMP threads of each FAISS search (one query gains nothing from more)."""

    @model_validator(mode="after")
    def _source(self) -> RetrieverOptions:
        if self.index is None and self.docs is None:
            raise ValueError("index is required: give index: DIR (or docs: FILE to build one).")
        return self


class _Saved(Retriever):
    """A retriever over a saved index, built from options (the registered ones below)."""

    name: ClassVar[str]
    Options: ClassVar[type[RetrieverOptions]] = RetrieverOptions

    def __init__(self, options: RetrieverOptions | None = None, **kw: Any) -> None:
        self.options = o = options or parse_options(self.Options, kw, where=f"retriever {self.name}")
        folder = self._folder()
        kind = read_manifest(folder)["options"]["kind"]
        if self.name != kind and kind != "hybrid":
            raise ConfigError(
                f"retriever.index {folder} is a {kind} index, retriever {self.name!r} needs a "
                f"{self.name} or hybrid one; use name: {kind} or rebuild with --kind hybrid."
            )
        embedder = make_embedder(o.embedder) if o.embedder is not None and kind != "bm25" else None
        super().__init__(
            Index.load(folder, embedder),
            k=o.k,
            kind=self.name,
            reranker=CrossEncoderReranker(o.rerank) if o.rerank else None,
            rerank_depth=o.rerank_depth,
            workers=o.workers,
            faiss_threads=o.faiss_threads,
        )

    def _folder(self) -> Path:
        """The index folder, built from ``docs`` first when it does not exist."""
        o = self.options
        if o.docs is None:
            return Path(o.index or "")
        docs = Path(o.docs)
        if not docs.exists():
            raise ConfigError(
                f"retriever.docs {o.docs}: no such file or folder; pass a JSONL file or a folder of text files."
            )
        if o.index is not None:
            folder = Path(o.index)
        else:
            import platformdirs

            stat = docs.stat()
            key = f"{docs.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.name}|{o.embedder}"
            digest = hashlib.sha1(key.encode()).hexdigest()[:16]
            folder = Path(platformdirs.user_cache_dir("tts-scale")) / "indexes" / f"{docs.stem}-{self.name}-{digest}"
        if not (folder / MANIFEST).is_file():
            log.info("building a %s index of %s in %s", self.name, docs, folder)
            embedder = make_embedder(o.embedder) if self.name != "bm25" else None
            Index.build(read_documents(docs), kind=self.name, embedder=embedder, out=folder, overwrite=True)
        return folder


class DenseRetriever(_Saved):
    """Nearest chunks by embedding (inner product of unit vectors) in a saved index."""

    name: ClassVar[str] = "dense"


class BM25Retriever(_Saved):
    """BM25 over the words of a saved index's chunks."""

    name: ClassVar[str] = "bm25"


class HybridRetriever(_Saved):
    """Dense and BM25 rankings of a saved hybrid index fused by reciprocal rank."""

    name: ClassVar[str] = "hybrid"
