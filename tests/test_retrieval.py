"""Retrieval: chunking, dense (flat/IVF/HNSW) / BM25 / hybrid indexes on a fictional corpus (recall@5),
persistence and refusal of another embedder, streaming builds and adds, edge cases (empty corpus,
empty and 10 MB documents), ordering and evidence budgets, retrievers off the event loop, the
pipeline's ``retriever`` section and ``tts-scale index``. Fast tests use the hashing fake embedder;
the real MiniLM embedder and a tiny cross-encoder are in the ``slow`` tests at the end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tts.config import build_pipeline, parse_pipeline
from tts.errors import ConfigError, DatasetError
from tts.registry import REGISTRY
from tts.retrieval import (
    ChunkOptions,
    Document,
    HashEmbedder,
    HybridRetriever,
    Index,
    Retriever,
    chunk_document,
    ends_first,
    evidence_block,
    rrf_fuse,
    select_sentences,
)
from tts.retrieval._fictional import fictional_corpus

ROOT = Path(__file__).resolve().parents[1]
CORPUS = fictional_corpus(people=300, towns=60, seed=0)


def recall_at(index: Index, k: int = 5, kind: str | None = None) -> float:
    hits = sum(any(p.id == q["gold"] for p in index.search(q["question"], k, kind)) for q in CORPUS.questions)  # type: ignore[arg-type]
    return hits / len(CORPUS.questions)


# ---------------------------------------------------------------- import cost


def test_import_loads_no_heavy_engine() -> None:
    code = (
        "import sys, tts.retrieval, tts.retrieval.retrievers, tts.retrieval.rerank, tts.strategies.rag\n"
        "from tts.registry import REGISTRY; REGISTRY.names('retriever')\n"
        "print([m for m in ('torch', 'faiss', 'sentence_transformers', 'bm25s', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- chunking


def test_token_chunks_overlap_and_keep_offsets_and_ids() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    doc = Document("d", text, {"source": "x"})
    chunks = chunk_document(doc, ChunkOptions(by="tokens", size=10, overlap=3))
    assert [c.text.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]
    assert [len(c.text.split()) for c in chunks] == [10, 10, 10, 4]
    assert all(text[c.offset :].startswith(c.text) and c.doc_id == "d" for c in chunks)
    assert chunks[0].metadata == {"source": "x"}


def test_paragraph_chunks_and_whole_documents() -> None:
    text = "First para one two.\n\n  Second para three.\n\n\n" + " ".join(["x"] * 7)
    chunks = chunk_document(Document("d", text), ChunkOptions(by="paragraph", size=5, overlap=0))
    assert [c.text for c in chunks] == ["First para one two.", "Second para three.", "x x x x x", "x x"]
    assert all(text[c.offset :].startswith(c.text) for c in chunks)
    assert [c.text for c in chunk_document(Document("d", "  a b  "), ChunkOptions(by="none"))] == ["a b"]
    assert chunk_document(Document("d", " \n ")) == []
    with pytest.raises(ValueError, match="overlap must be < size=4, got 4"):
        ChunkOptions(size=4, overlap=4)


# ---------------------------------------------------------------- recall on the fictional corpus


@pytest.fixture(scope="module")
def hybrid() -> Index:
    return Index.build(CORPUS.documents, kind="hybrid", embedder=HashEmbedder(256))


def test_fictional_corpus_shape() -> None:
    assert len(CORPUS.questions) == 300 and len(CORPUS.documents) == 660
    gold = {d["id"]: d["text"] for d in CORPUS.documents}
    for q in CORPUS.questions:  # the answer is in the gold document; the namesake shares the name, not the answer
        assert q["answer"] in gold[q["gold"]] and q["name"] in q["question"]
        assert q["name"] in gold[q["gold"].replace("bio", "namesake")]


def test_recall_at_5_bm25_dense_hybrid(hybrid: Index) -> None:
    bm25, dense, fused = recall_at(hybrid, 5, "bm25"), recall_at(hybrid, 5, "dense"), recall_at(hybrid, 5)
    assert fused >= 0.9
    assert bm25 >= 0.9 and 0.5 <= dense < bm25  # the hashing fake knows words, not names' pieces
    assert recall_at(hybrid, 1) < fused  # the namesake competes for rank 1


@pytest.mark.parametrize("faiss", ["ivf", "hnsw"])
def test_ivf_and_hnsw_agree_with_flat(faiss: str) -> None:
    flat = Index.build(CORPUS.documents, kind="dense", embedder=HashEmbedder(256))
    approx = Index.build(CORPUS.documents, kind="dense", faiss=faiss, nlist=8, nprobe=8, embedder=HashEmbedder(256))
    assert type(approx._dense).__name__ == ("IndexIVFFlat" if faiss == "ivf" else "IndexHNSWFlat")
    assert abs(recall_at(approx) - recall_at(flat)) <= 0.02


def test_streaming_batches_give_the_same_index_and_ivf_trains_midway() -> None:
    whole = Index.build(CORPUS.documents, kind="dense", embedder=HashEmbedder(64))
    emb = HashEmbedder(64)
    streamed = Index.build(iter(CORPUS.documents), kind="dense", batch_size=50, embedder=emb)
    assert emb.calls == 14  # 660 chunks in batches of 50
    q = CORPUS.questions[7]["question"]
    assert [p.id for p in whole.search(q, 5)] == [p.id for p in streamed.search(q, 5)]
    ivf = Index.build(
        iter(CORPUS.documents), kind="dense", faiss="ivf", nlist=4, batch_size=100, embedder=HashEmbedder(64)
    )
    assert ivf._dense.nlist == 4 and ivf._dense.ntotal == 660  # trained on the first 156+ vectors, rest added


def test_one_passage_per_document_its_best_chunk() -> None:
    long = (
        " ".join(["filler words here"] * 40) + " The vault code of Quenmoor is 7741. " + " ".join(["more filler"] * 40)
    )
    docs = [Document("long", long), Document("other", "Quenmoor keeps a garden and a vault.")]
    index = Index.build(docs, kind="bm25", chunking={"by": "tokens", "size": 20, "overlap": 5})
    found = index.search("vault code of Quenmoor", 5)
    assert [p.id for p in found] == ["long", "other"]
    assert "7741" in found[0].text and long[found[0].chunk :].startswith(found[0].text)


def test_rrf_fuse_is_the_reciprocal_rank_sum() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1]], k=10)
    assert [r for r, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 11 + 1 / 12) and fused[1][1] == pytest.approx(1 / 13 + 1 / 11)


# ---------------------------------------------------------------- persistence, adds, refusals, edge cases


def test_save_load_round_trip_and_add_documents(tmp_path: Path) -> None:
    out = tmp_path / "ix"
    built = Index.build(CORPUS.documents, kind="hybrid", embedder=HashEmbedder(128), out=out)
    assert sorted(p.name for p in out.iterdir()) == ["bm25", "dense.faiss", "docs.jsonl", "index.json", "offsets.npy"]
    manifest = json.loads((out / "index.json").read_text())
    assert (manifest["embedder"], manifest["dimension"], manifest["documents"], manifest["chunks"]) == (
        "hash-128",
        128,
        660,
        660,
    )
    loaded = Index.load(out)
    for q in CORPUS.questions[:20]:
        a, b = built.search(q["question"], 5), loaded.search(q["question"], 5)
        assert [(p.id, p.text, p.chunk) for p in a] == [(p.id, p.text, p.chunk) for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b])
    new = {"id": "late", "text": "Ostrid Fenwhale was born in 1801 in the town of Glimmerholt.", "source": "addendum"}
    assert loaded.add([new]) == 1
    loaded.save(out)
    again = Index.load(out)
    top = again.search("Where was Ostrid Fenwhale born?", 1)[0]
    assert (top.id, top.metadata, len(again), again.documents) == ("late", {"source": "addendum"}, 661, 661)
    assert again.search("Ostrid Fenwhale", 1, "bm25")[0].id == "late"  # BM25 re-indexed with the new chunk


def test_another_embedder_is_refused(tmp_path: Path) -> None:
    Index.build(CORPUS.documents[:20], kind="dense", embedder=HashEmbedder(128), out=tmp_path / "ix")
    with pytest.raises(ConfigError, match=r"built with embedder 'hash-128' \(128 dimensions\), not 'hash-64'"):
        Index.load(tmp_path / "ix", HashEmbedder(64))

    class Renamed(HashEmbedder):  # same name, other dimension: refused at the first query
        @property
        def name(self) -> str:
            return "hash-128"

    index = Index.load(tmp_path / "ix", Renamed(64))
    with pytest.raises(ConfigError, match="gives 64-dimensional vectors but the index holds 128-dimensional"):
        index.search("x", 1)
    with pytest.raises(ConfigError, match=r"is not an index .no such folder.; build one with `tts-scale index build"):
        Index.load(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="already holds an index; pass overwrite=True"):
        Index.build(["a b"], kind="bm25", out=tmp_path / "ix")


def test_empty_corpus_and_empty_documents(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DatasetError, match=r"^the corpus has no text to index \(0 empty documents\)"):
        Index.build([], kind="bm25")
    with pytest.raises(DatasetError, match=r"\(2 empty documents\)"):
        Index.build(["", "   "], kind="dense", embedder=HashEmbedder(16))
    index = Index.build([Document("e", ""), Document("f", "fjord lantern")], kind="hybrid", embedder=HashEmbedder(16))
    assert (index.documents, index.skipped, len(index)) == (1, 1, 1)
    assert "document 'e' has no text; skipped" in caplog.text
    with pytest.raises(DatasetError, match="document 0 needs a string 'text' field"):
        Index.build([{"id": "x"}], kind="bm25")


def test_a_10_mb_document_is_chunked_and_searched(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    rng = np.random.default_rng(0)
    words = np.array([f"tok{i}" for i in range(5000)])
    body = " ".join(words[rng.integers(0, 5000, size=1_400_000)])
    needle = " The lighthouse keeper of Vrellmoor was Ansgar Tull. "
    text = body[: len(body) // 2] + needle + body[len(body) // 2 :]
    assert len(text) > 10_000_000
    start = time.perf_counter()
    index = Index.build([Document("big", text), Document("small", "a lighthouse elsewhere")], kind="bm25")
    elapsed = time.perf_counter() - start
    top = index.search("lighthouse keeper of Vrellmoor", 1)[0]
    assert top.id == "big" and "Ansgar Tull" in top.text and text[top.chunk :].startswith(top.text)
    assert len(index) == 1 + -(-(1_400_000 + 8 - 40) // 160)  # 200-token windows every 160 tokens
    assert "document 'big': 10." in caplog.text and elapsed < 120


# ---------------------------------------------------------------- ordering and evidence


def test_ends_first_puts_the_strongest_at_both_ends() -> None:
    assert ends_first([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert ends_first([1, 2, 3, 4]) == [1, 3, 4, 2]


def test_sentence_selection_and_the_evidence_budget() -> None:
    text = "Rain fell all week. Ansgar Tull kept the Vrellmoor light. Bread was cheap. The light was red."
    assert select_sentences(text, "Who kept the Vrellmoor light?", 8) == "Ansgar Tull kept the Vrellmoor light."
    assert select_sentences(text, "anything", 100) == text
    passages = [{"id": str(i), "text": f"passage {i} " + "word " * 8} for i in range(1, 6)]  # 10 tokens each
    ev = evidence_block(passages, budget=35, order="ends")
    assert [p["id"] for p in ev.passages] == ["1", "3", "4", "2"]  # 3 whole + 5 tokens of the 4th, best at the ends
    assert ev.tokens == 35 and ev.text.splitlines()[0].startswith("[1] passage 1 ")
    assert [line.split()[2] for line in ev.text.splitlines()] == ["1", "3", "4", "2"]
    assert evidence_block(passages, budget=100, order="rank").text.count("\n") == 4


# ---------------------------------------------------------------- retrievers and ctx.retrieve


def test_registered_retrievers_build_from_specs(tmp_path: Path) -> None:
    Index.build(CORPUS.documents, kind="hybrid", embedder=HashEmbedder(128), out=tmp_path / "h")
    Index.build(CORPUS.documents, kind="bm25", out=tmp_path / "b")
    assert {"dense", "bm25", "hybrid"} <= set(REGISTRY.names("retriever"))
    retriever = REGISTRY.get("retriever", "hybrid")(index=str(tmp_path / "h"), k=5)
    qs = CORPUS.questions[:20]

    async def all_of_them() -> list[list[str]]:
        return [
            [p.id for p in found] for found in await asyncio.gather(*(retriever.retrieve(q["question"]) for q in qs))
        ]

    ids = asyncio.run(all_of_them())
    assert ids == [[p.id for p in retriever.index.search(q["question"], 5)] for q in qs]  # concurrent == one by one
    assert all(len(i) == 5 for i in ids) and sum(q["gold"] in i for q, i in zip(qs, ids, strict=True)) >= 12
    q = CORPUS.questions[1]
    dense = REGISTRY.get("retriever", "dense")(index=str(tmp_path / "h"))
    assert dense.kind == "dense" and len(dense.search(q["question"], 2)) == 2
    with pytest.raises(ConfigError, match="is a bm25 index, retriever 'hybrid' needs a hybrid or hybrid one"):
        HybridRetriever(index=str(tmp_path / "b"))


def test_pipeline_retriever_section_is_validated_and_built(tmp_path: Path) -> None:
    Index.build(CORPUS.documents[:50], kind="hybrid", embedder=HashEmbedder(64), out=tmp_path / "ix")
    base = {"backend": {"name": "fake"}, "dataset": {"name": "larger", "limit": 2}, "strategy": {"name": "rag"}}
    spec = parse_pipeline({**base, "retriever": {"name": "hybrid", "index": str(tmp_path / "ix"), "k": 4}})
    pipeline = build_pipeline(spec)
    assert isinstance(pipeline.retriever, Retriever) and pipeline.retriever.k == 4
    assert pipeline.run_options()["retriever"] is pipeline.retriever
    assert spec.resolved()["retriever"]["k"] == 4
    with pytest.raises(ConfigError, match=r"^<pipeline>: retriever.k must be >= 1, got 0"):
        parse_pipeline({**base, "retriever": {"name": "hybrid", "index": "x", "k": 0}})
    with pytest.raises(ConfigError, match=r"retriever.name must be a registered retriever \(bm25, dense, hybrid\)"):
        parse_pipeline({**base, "retriever": {"name": "hybird", "index": "x"}})
    with pytest.raises(ConfigError, match="is not an index"):
        build_pipeline(parse_pipeline({**base, "retriever": {"name": "hybrid", "index": str(tmp_path / "no")}}))


class SlowEmbedder(HashEmbedder):
    def embed(self, texts):  # type: ignore[no-untyped-def]
        time.sleep(0.3)  # a blocking model call
        return super().embed(texts)


async def test_retrieval_runs_off_the_event_loop() -> None:
    emb = SlowEmbedder(32)
    index = Index.build(["alpha beta", "gamma delta"], kind="dense", embedder=HashEmbedder(32))
    index.embedder = emb
    retriever = Retriever(index, k=1, workers=2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    found = await asyncio.gather(retriever.retrieve("alpha"), retriever.retrieve("gamma"))
    elapsed = time.perf_counter() - start
    task.cancel()
    assert [f[0].id for f in found] == ["0", "1"]
    assert ticks >= 15  # the loop kept turning while both searches slept in the pool
    assert elapsed < 0.55  # two workers: the searches overlapped


def test_rows_are_normalised_unless_the_embedder_says_they_are() -> None:
    class Scaled:
        name, normalized = "scaled-4", False

        def embed(self, texts: Sequence[str]) -> Any:
            return np.array([[3.0, 4.0, 0.0, 0.0]] * len(texts))

    index = Index.build(["a b", "c d"], kind="dense", embedder=Scaled())
    assert np.allclose(index.embed_query("x"), [[0.6, 0.8, 0.0, 0.0]])
    assert np.allclose(index._embed(["x", "y"]), [[0.6, 0.8, 0.0, 0.0]] * 2)
    Scaled.normalized = True  # taken at its word: the rows are used as they come
    assert np.allclose(index.embed_query("x"), [[3.0, 4.0, 0.0, 0.0]])


def test_store_rows_read_back_exactly(tmp_path: Path) -> None:
    from tts.retrieval.chunking import Chunk
    from tts.retrieval.store import DocStore

    rows = [Chunk("a", 'text with "meta": inside \u00fc \n', 0), Chunk("b", "x", 7, {"big": 2**70, "f": 0.1})]
    store = DocStore(tmp_path / "s")
    store.add(rows)
    store.save(tmp_path / "s")
    for loaded in (store, DocStore.load(tmp_path / "s")):
        assert loaded.get(0) == {"id": "a", "chunk": 0, "text": rows[0].text}
        assert loaded.get(1) == {"id": "b", "chunk": 7, "text": "x", "meta": {"big": 2**70, "f": 0.1}}
        assert isinstance(loaded.get(1)["meta"]["big"], int)


async def test_workers_run_off_the_loop_thread_and_hand_back_errors() -> None:
    import threading

    from tts.retrieval.retrievers import Workers

    workers = Workers(2)
    loop_thread = threading.get_ident()
    names = await asyncio.gather(*(workers.run(lambda: threading.current_thread().name) for _ in range(6)))
    assert set(names) <= {"tts-retrieval-0", "tts-retrieval-1"} and threading.get_ident() == loop_thread

    def fail(x: int) -> None:
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 3"):
        await workers.run(fail, 3)
    slow = asyncio.ensure_future(workers.run(time.sleep, 0.2))
    await asyncio.sleep(0.05)
    slow.cancel()  # the caller gives up; the worker finishes its call and serves the next
    assert await workers.run(sum, [1, 2, 3]) == 6
    workers.close()
    for thread in workers.threads:
        thread.join(timeout=2)
    assert not any(t.is_alive() for t in workers.threads)


async def test_a_dropped_retriever_stops_its_threads() -> None:
    import gc

    index = Index.build(["alpha beta", "gamma delta"], kind="hybrid", embedder=HashEmbedder(32))
    retriever = Retriever(index, k=1, workers=2)
    assert [p.id for p in await retriever.retrieve("gamma")] == ["1"]
    threads = retriever.pool.threads
    assert all(t.is_alive() for t in threads)
    del retriever
    gc.collect()
    for thread in threads:
        thread.join(timeout=2)
    assert not any(t.is_alive() for t in threads)


# ---------------------------------------------------------------- CLI


def test_cli_index_build_and_query(tmp_path: Path) -> None:
    from tts.cli import app

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in CORPUS.documents))
    runner = CliRunner()
    out = tmp_path / "ix"
    res = runner.invoke(
        app, ["index", "build", str(docs), "--out", str(out), "--kind", "hybrid", "--embedder", "hash-128"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["chunks"] == 660
    q = CORPUS.questions[3]
    res = runner.invoke(app, ["index", "query", str(out), q["question"], "--k", "5", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 5 and set(rows[0]) == {"id", "score", "text", "chunk"} and q["gold"] in [r["id"] for r in rows]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"question": x["question"]}) + "\n" for x in CORPUS.questions[:4]))
    res = runner.invoke(app, ["index", "query", str(out), "--questions", str(qfile), "--k", "2", "--json"])
    lines = res.stdout.strip().splitlines()
    assert res.exit_code == 0 and len(lines) == 4 and all(len(json.loads(line)) == 2 for line in lines)
    res = runner.invoke(app, ["index", "query", str(out), "q", "--questions", str(qfile)])
    assert res.exit_code == 2 and "exactly one of QUESTION and --questions" in res.stderr
    res = runner.invoke(app, ["index", "query", str(out), "q", "--embedder", "hash-64"])
    assert res.exit_code == 2 and "not 'hash-64'" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    res = runner.invoke(app, ["index", "build", str(empty), "--out", str(tmp_path / "e"), "--kind", "bm25"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines()[-1].startswith("error: the corpus has no text")


def test_cli_folder_of_text_files(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("The quorn harvest in Dellwick starts in May.")
    (folder / "sub" / "b.md").write_text("Nothing about crops here.")
    out = subprocess.run(
        [sys.executable, "-m", "tts", "index", "build", str(folder), "--out", str(tmp_path / "ix"), "--kind", "bm25"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "tts", "index", "query", str(tmp_path / "ix"), "quorn harvest", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    rows = json.loads(out.stdout)  # stdout is JSON only
    assert [r["id"] for r in rows] == ["a.txt"] and rows[0]["chunk"] == 0


def test_cli_index_help_reads_cleanly() -> None:
    from tts.cli import app

    for args in (["index"], ["index", "build"], ["index", "query"]):
        res = CliRunner().invoke(app, [*args, "--help"], terminal_width=120)
        assert res.exit_code == 0 and "<bool>" not in res.output and "``" not in res.output, res.output
    assert "index" in CliRunner().invoke(app, ["--help"]).output


def test_an_add_that_was_never_saved_leaves_the_saved_index_intact(tmp_path: Path) -> None:
    Index.build(CORPUS.documents[:30], kind="bm25", out=tmp_path / "ix")
    index = Index.load(tmp_path / "ix")
    index.add({"id": f"new-{i}", "text": f"fresh note {i}"} for i in range(5000))  # flushed to docs.jsonl, not saved
    assert (tmp_path / "ix" / "docs.jsonl").stat().st_size > 0
    again = Index.load(tmp_path / "ix")  # the unsaved rows are dropped
    assert len(again) == 30 and again.search("fresh", 1) == []
