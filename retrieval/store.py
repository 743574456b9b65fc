"""The document store of an index: every chunk's text, document id, offset and metadata.

On disk, ``docs.jsonl`` holds one JSON object a chunk (``id``, ``chunk``, ``text`` and ``meta``
when there is any) and ``offsets.npy`` the byte offset where each line ends. A loaded store reads
lines through a memory map, so opening an index costs nothing per document and a lookup is one
slice and one JSON parse (orjson when installed: every search reads its ``k`` rows). A store with
a folder appends new chunks to its file as they come (a streaming build holds no text in memory);
one without keeps them in memory until saved.
"""

from __future__ import annotations

import json
import mmap
import shutil
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tts.errors import ConfigError
from tts.retrieval.chunking import Chunk

__all__ = ["DocStore"]

FILE = "docs.jsonl"
OFFSETS = "offsets.npy"
_FLUSH = 4096

_fast_loads: Callable[[bytes], Any] = json.loads
try:  # fast JSON when available
    import orjson

    _fast_loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    pass


class DocStore:
    """Chunks by row number (the row is the chunk's position in the vector and BM25 indexes)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._ends = array("q")  # byte offset where each written row ends
        self._pending: list[bytes] = []  # rows not yet in the file
        self._mm: mmap.mmap | None = None
        self._fh: IO[bytes] | None = None
        self._lock = threading.Lock()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / FILE).write_bytes(b"")

    @classmethod
    def load(cls, folder: str | Path) -> DocStore:
        import numpy as np

        store = cls.__new__(cls)
        store.folder = Path(folder)
        store._ends = array("q", np.load(store.folder / OFFSETS).astype("int64").tolist())
        store._pending, store._mm, store._fh, store._lock = [], None, None, threading.Lock()
        path = store.folder / FILE
        size, end = path.stat().st_size, (store._ends[-1] if store._ends else 0)
        if size > end:  # rows of an add that was never saved: the saved index ends before them
            with path.open("r+b") as fh:
                fh.truncate(end)
        elif size < end:
            raise ConfigError(f"{path} is shorter than {OFFSETS} records (a damaged index); rebuild it.")
        return store

    def __len__(self) -> int:
        return len(self._ends) + len(self._pending)

    def add(self, chunks: Iterable[Chunk]) -> None:
        for c in chunks:
            row: dict[str, Any] = {"id": c.doc_id, "chunk": c.offset, "text": c.text}
            if c.metadata:
                row["meta"] = c.metadata
            self._pending.append(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        if self.folder is not None and len(self._pending) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        """Write pending rows to the file (a store with a folder)."""
        if self.folder is None or not self._pending:
            return
        with self._lock:
            if self._fh is None:
                self._fh = (self.folder / FILE).open("ab")
            end = self._ends[-1] if self._ends else 0
            for row in self._pending:
                self._fh.write(row)
                end += len(row)
                self._ends.append(end)
            self._pending = []
            self._fh.flush()
            self._close_map()

    def _close_map(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def _map(self) -> mmap.mmap:
        mm = self._mm
        if mm is None:
            with self._lock:
                if self._mm is None:
                    assert self.folder is not None
                    with (self.folder / FILE).open("rb") as fh:
                        self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                mm = self._mm
        return mm

    def raw(self, i: int) -> bytes:
        """Row ``i`` as JSON bytes."""
        written = len(self._ends)
        if i >= written:
            return self._pending[i - written]
        start = self._ends[i - 1] if i else 0
        return self._map()[start : self._ends[i]]

    def get(self, i: int) -> dict[str, Any]:
        """Row ``i``: ``{"id", "chunk", "text"}`` and ``meta`` when the document had metadata."""
        raw = self.raw(i)
        # rows without metadata (id, offset, text) read the same with orjson; metadata may hold what
        # orjson reads otherwise (integers past 64 bits), so those rows go through json
        row: dict[str, Any] = json.loads(raw) if b'"meta":' in raw else _fast_loads(raw)
        return row

    def texts(self) -> Iterator[str]:
        """Every chunk's text, in row order."""
        for i in range(len(self)):
            yield self.get(i)["text"]

    def save(self, folder: str | Path) -> None:
        """Write the store to ``folder`` (appending to its own file when it is that folder)."""
        import numpy as np

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        if self.folder is None or self.folder.resolve() != target.resolve():
            if self.folder is not None and self._ends:
                self.flush()
                shutil.copyfile(self.folder / FILE, target / FILE)
            else:
                (target / FILE).write_bytes(b"")
            self.folder = target
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            self._close_map()
        self.flush()
        np.save(target / OFFSETS, np.frombuffer(self._ends.tobytes(), dtype=np.int64) if self._ends else np.zeros(0))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._close_map()
