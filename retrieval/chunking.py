"""Documents, chunks and the readers that stream them.

A :class:`Document` is an ``id``, its ``text`` and optional ``metadata``. Indexes store
:class:`Chunk` s: a piece of one document with the document's id and metadata, and ``offset``,
the character position of the piece in the document (results report it as ``chunk``).

Chunking (:class:`ChunkOptions`):

- ``tokens``: windows of ``size`` whitespace tokens overlapping by ``overlap`` tokens (a token is
  a run of non-space characters, so offsets are exact and no tokenizer is loaded);
- ``paragraph``: one chunk per paragraph (blank-line separated); a paragraph longer than ``size``
  tokens is split by tokens as above;
- ``none``: the whole document is one chunk.

A document with no text gives no chunk (the builder counts and logs it). :func:`read_documents`
streams documents from a folder of text files or a JSONL file with ``id`` and ``text`` fields, so
a corpus larger than memory is never held whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.errors import ConfigError, DatasetError

__all__ = ["Chunk", "ChunkOptions", "Document", "as_documents", "chunk_document", "read_documents"]

_TOKEN = re.compile(r"\S+")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass(frozen=True, slots=True)
class Document:
    """One source document."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document: its text, the document's id and metadata, and where it starts."""

    doc_id: str
    text: str
    offset: int
    """Character offset of the piece in its document."""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class ChunkOptions(BaseModel):
    """How documents are split before indexing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["tokens", "paragraph", "none"] = "tokens"
    """``tokens``: overlapping windows; ``paragraph``: blank-line paragraphs; ``none``: whole documents."""
    size: int = Field(default=200, ge=1, le=100_000)
    """Whitespace tokens per chunk (the most per paragraph with ``by: paragraph``)."""
    overlap: int = Field(default=40, ge=0)
    """Tokens shared by consecutive windows."""

    @model_validator(mode="after")
    def _check(self) -> ChunkOptions:
        if self.overlap >= self.size:
            raise ValueError(f"overlap must be < size={self.size}, got {self.overlap}.")
        return self


def _windows(text: str, base: int, size: int, overlap: int) -> Iterator[tuple[int, str]]:
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    step = size - overlap
    for i in range(0, len(spans), step):
        window = spans[i : i + size]
        yield base + window[0][0], text[window[0][0] : window[-1][1]]
        if i + size >= len(spans):
            break


def chunk_document(doc: Document, options: ChunkOptions | None = None) -> list[Chunk]:
    """``doc`` split into chunks (none for a document without text)."""
    o = options or ChunkOptions()
    if not doc.text.strip():
        return []
    if o.by == "none":
        start = len(doc.text) - len(doc.text.lstrip())
        pieces: Iterable[tuple[int, str]] = [(start, doc.text.strip())]
    elif o.by == "tokens":
        pieces = _windows(doc.text, 0, o.size, o.overlap)
    else:
        pieces = []
        pos = 0
        for sep in [*_PARAGRAPH.finditer(doc.text), None]:
            end = sep.start() if sep is not None else len(doc.text)
            para = doc.text[pos:end]
            if para.strip():
                pieces.extend(_windows(para, pos, o.size, o.overlap))
            pos = sep.end() if sep is not None else end
    return [Chunk(doc.id, text, offset, doc.metadata) for offset, text in pieces]


def as_documents(items: Iterable[Document | Mapping[str, Any] | str]) -> Iterator[Document]:
    """Documents from documents, ``{"id", "text", ...metadata}`` mappings or plain strings (their
    position is the id)."""
    for i, item in enumerate(items):
        if isinstance(item, Document):
            yield item
        elif isinstance(item, str):
            yield Document(str(i), item)
        elif isinstance(item, Mapping):
            if "text" not in item or not isinstance(item["text"], str):
                raise DatasetError(f"document {i} needs a string 'text' field, got keys {sorted(item)}.")
            meta = {k: v for k, v in item.items() if k not in ("id", "text")}
            yield Document(str(item.get("id", i)), item["text"], meta)
        else:
            raise ConfigError(f"document {i} must be a Document, a mapping or a string, got {type(item).__name__}.")


def read_documents(path: str | Path) -> Iterator[Document]:
    """Stream the documents of a folder of text files (id: the path inside the folder) or of a
    JSONL file (one ``{"id", "text", ...metadata}`` object a line)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DatasetError(
                f"{p}: no text files ({', '.join(TEXT_SUFFIXES)}) in the folder; add some or pass a JSONL file."
            )
        for f in files:
            yield Document(f.relative_to(p).as_posix(), f.read_text(encoding="utf-8", errors="replace"))
        return
    if not p.is_file():
        raise DatasetError(f"{p}: no such file or folder; pass a folder of text files or a JSONL file.")
    if p.suffix.lower() not in (".jsonl", ".json"):
        yield Document(p.name, p.read_text(encoding="utf-8", errors="replace"))
        return
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{p}:{n}: not a JSON object ({exc.msg}); write one object a line.") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DatasetError(f"{p}:{n}: each line needs a string 'text' field (and an 'id').")
            meta = {k: v for k, v in row.items() if k not in ("id", "text")}
            yield Document(str(row.get("id", n)), row["text"], meta)
