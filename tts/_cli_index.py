"""``tts-scale index``: build and query retrieval indexes (:mod:`tts.retrieval`).

- ``index build DOCS --out DIR [--kind dense|bm25|hybrid]``: DOCS is a folder of text files or a
  JSONL file with ``id`` and ``text`` fields; prints the index's manifest as JSON.
- ``index query DIR [QUESTION] [--questions FILE.jsonl] --k 5 --json``: exactly one of QUESTION
  and ``--questions``. With ``--json``: one JSON list of ``{"id", "score", "text", "chunk"}`` for
  a question, or one such list a line for a questions file (a ``question`` field each), all in
  one process (the index and embedder load once).

Stdout carries only the results; logs and progress go to stderr. Configuration errors exit 2 in
one line; runtime failures exit 1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import typer

from tts._cli_usage import OneLineGroup
from tts.errors import ConfigError, DatasetError, TTSError

index_app = typer.Typer(
    cls=OneLineGroup,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
    help="Build and query retrieval indexes (dense, BM25, hybrid).",
)


def _fail(exc: BaseException) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@index_app.command("build")
def build(
    docs: Path = typer.Argument(..., help="A folder of text files (.txt, .md) or a JSONL file with id and text."),
    out: Path = typer.Option(..., "--out", help="Folder to write the index to (new or empty)."),
    kind: str = typer.Option("hybrid", help="dense (embeddings), bm25 (words) or hybrid (both, fused)."),
    faiss: str = typer.Option("flat", help="Dense index: flat (exact), ivf or hnsw."),
    chunk_by: str = typer.Option("tokens", help="tokens (overlapping windows), paragraph or none."),
    chunk_size: int = typer.Option(200, help="Whitespace tokens per chunk."),
    overlap: int = typer.Option(40, help="Tokens shared by consecutive chunks."),
    embedder: str | None = typer.Option(
        None, help="Sentence-transformers model id or folder (default: the packaged all-MiniLM-L6-v2)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an index already in --out."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does (INFO)."),
) -> None:
    """Build an index from documents and print its manifest (JSON)."""
    _logging(verbose)
    try:
        from tts.errors import parse_options
        from tts.retrieval.chunking import read_documents
        from tts.retrieval.embedders import SentenceTransformerEmbedder, make_embedder
        from tts.retrieval.index import Index, IndexOptions

        options = parse_options(
            IndexOptions,
            {"kind": kind, "faiss": faiss, "chunking": {"by": chunk_by, "size": chunk_size, "overlap": overlap}},
            where="index build",
        )
        if not docs.exists():
            raise DatasetError(f"{docs}: no such file or folder; pass a folder of text files or a JSONL file.")
        emb = None
        if options.kind != "bm25":
            emb = make_embedder(embedder)
            if isinstance(emb, SentenceTransformerEmbedder):
                emb.progress = True
        index = Index.build(read_documents(docs), options, embedder=emb, out=out, overwrite=force)
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({"index": str(out), **index.manifest()}))


def _questions(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"--questions {path}: no such file; pass a JSONL file with a 'question' field a line.")
    out: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not a JSON object ({exc.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise DatasetError(f"{path}:{n}: each line needs a string 'question' field.")
        out.append(row["question"])
    return out


@index_app.command("query")
def query(
    index: Path = typer.Argument(..., help="Folder of an index (tts-scale index build ... --out DIR)."),
    question: str | None = typer.Argument(None, help="One question (or pass --questions)."),
    questions: Path | None = typer.Option(None, "--questions", help="JSONL file with a 'question' field a line."),
    k: int = typer.Option(5, "--k", help="Passages per question (one per document)."),
    kind: str | None = typer.Option(None, help="Search one part of a hybrid index: dense or bm25."),
    embedder: str | None = typer.Option(
        None, help="The embedder the index was built with (default: the recorded one)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one list per question."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does (INFO)."),
) -> None:
    """Search an index for one question or for each question of a file."""
    _logging(verbose)
    try:
        if (question is None) == (questions is None):
            raise ConfigError("give exactly one of QUESTION and --questions FILE.jsonl.")
        if k < 1:
            raise ConfigError(f"--k must be >= 1, got {k}.")
        if kind not in (None, "dense", "bm25", "hybrid"):
            raise ConfigError(f"--kind must be dense, bm25 or hybrid, got {kind!r}.")
        from tts.retrieval.embedders import make_embedder
        from tts.retrieval.index import Index

        asked = [question] if question is not None else _questions(questions)  # type: ignore[arg-type]
        idx = Index.load(index, make_embedder(embedder) if embedder else None)
        part: Literal["dense", "bm25", "hybrid"] | None = kind  # type: ignore[assignment]
        for q in asked:
            found = idx.search(q, k, part)
            if as_json:
                typer.echo(json.dumps([p.to_dict() for p in found], ensure_ascii=False))
                continue
            typer.echo(f"# {q}")
            for rank, p in enumerate(found, 1):
                text = " ".join(p.text.split())
                typer.echo(f"{rank}. {p.id} (chunk {p.chunk}, score {p.score:.4g}): {text[:160]}")
    except (TTSError, OSError) as exc:
        _fail(exc)
