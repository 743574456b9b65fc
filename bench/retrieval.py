"""Retrieval overhead: our search path against raw FAISS, and build throughput with the real embedder.

A flat inner-product index over 20,000 synthetic documents of 60-120 words (one chunk each,
384-dimensional hashed vectors: the vectors' origin does not change a flat search's cost).
1,000 queries are issued one at a time through the call ``ctx.retrieve`` makes
(``await retriever.retrieve(query, k)``: the retriever's thread pool, the FAISS search, the
per-document dedup and the document store, texts and ids returned), and ``faiss.Index.search`` is
called one query at a time on the same vectors in the same thread setting (one OpenMP thread).
Query embedding is excluded from both (our path gets the precomputed vector from a dict lookup,
which stays in our time) and reported apart, for the hashing fake and for all-MiniLM-L6-v2.
Then the build throughput of the real embedder on 2,000 documents of 60-120 words (chunking,
embedding, FAISS, store), in documents per second and in word pieces per second. These documents
are English prose (sentences of the fictional corpus, :mod:`tts.retrieval._fictional`), not the
search part's hashed "words" (``ka17 lo233 ...``), which the embedder's tokenizer cuts into about
2.5 word pieces each, so that every one of those documents would be truncated at 256 word pieces.

    flock /tmp/h3/engine.lock python bench/retrieval.py      # about two minutes on 2 CPU cores

The last line is ``overhead_ratio=<ours/raw>`` (target: at most 1.2).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tts.retrieval import HashEmbedder, Index, Retriever, SentenceTransformerEmbedder
from tts.retrieval._fictional import fictional_corpus

DOCS = 20_000
QUERIES = 1_000
K = 5
DIM = 384
BUILD_DOCS = 2_000


def synthetic_docs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze") for b in range(300)]
    return [{"id": f"doc-{i}", "text": " ".join(rng.choices(vocab, k=rng.randint(60, 120)))} for i in range(n)]


def prose_docs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` documents of 60-120 words, each made of sentences of the fictional corpus."""
    rng = random.Random(seed)
    corpus = fictional_corpus(people=600, towns=80, seed=seed)
    sentences = [s.strip() + "." for d in corpus.documents for s in d["text"].split(". ") if s.strip(" .")]
    docs = []
    for i in range(n):
        want, words = rng.randint(60, 120), []
        while len(words) < want:
            words.extend(rng.choice(sentences).split())
        docs.append({"id": f"prose-{i}", "text": " ".join(words[:want])})
    return docs


class Precomputed:
    """An embedder answering from vectors computed beforehand (a dict lookup per query): the
    index's own unit vectors, so it says ``normalized`` as the real embedders do."""

    normalized = True

    def __init__(self, name: str, vectors: dict[str, Any]) -> None:
        self.name = name
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> Any:
        return self.vectors[texts[0]] if len(texts) == 1 else np.vstack([self.vectors[t] for t in texts])


def main() -> None:
    import argparse

    import faiss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-only", action="store_true", help="stop before the real embedder (no model)")
    args = parser.parse_args()

    started = time.perf_counter()
    docs = synthetic_docs(DOCS)
    hasher = HashEmbedder(DIM)
    t0 = time.perf_counter()
    index = Index.build(docs, kind="dense", faiss="flat", embedder=hasher, chunking={"by": "none"})
    print(f"index: {len(index)} documents, {DIM} dims, flat inner product, built in {time.perf_counter() - t0:.1f}s")

    rng = random.Random(1)
    queries = [" ".join(rng.sample(d["text"].split(), 8)) for d in rng.sample(docs, QUERIES)]
    t0 = time.perf_counter()
    qvecs = {q: index.embed_query(q) for q in queries}
    hash_embed_us = (time.perf_counter() - t0) / QUERIES * 1e6

    raw_index = index._dense  # the same vectors
    index.embedder = Precomputed(hasher.name, qvecs)
    retriever = Retriever(index, k=K, workers=1, faiss_threads=1)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the raw side's thread, as the retriever's worker threads

    async def measure() -> tuple[list[float], list[float]]:
        """Raw and ours alternate query by query, so the machine's load falls on both alike."""
        raw, ours = [], []
        for q in queries[:50]:  # warm both paths
            raw_index.search(qvecs[q], K)
            await retriever.retrieve(q, K)
        for q in queries:
            v = qvecs[q]
            t = time.perf_counter()
            raw_index.search(v, K)
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            found = await retriever.retrieve(q, K)
            ours.append(time.perf_counter() - t)
            assert len(found) == K and found[0].text and found[0].id.startswith("doc-")
        return raw, ours

    raw, ours = asyncio.run(measure())
    direct = []
    for q in queries:
        t = time.perf_counter()
        retriever.search(q, K)
        direct.append(time.perf_counter() - t)
    retriever.close()
    faiss.omp_set_num_threads(threads)  # back to the default (torch may share this OpenMP runtime)

    mean_raw, mean_ours, mean_direct = (statistics.fmean(x) * 1e6 for x in (raw, ours, direct))
    med_raw, med_ours = statistics.median(raw) * 1e6, statistics.median(ours) * 1e6
    print(f"queries: {QUERIES} one at a time, k={K}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"raw faiss.Index.search: mean {mean_raw:.0f} us, median {med_raw:.0f} us")
    print(f"ours (await retriever.retrieve, as ctx.retrieve): mean {mean_ours:.0f} us, median {med_ours:.0f} us")
    print(f"ours without the worker thread (retriever.search): mean {mean_direct:.0f} us")
    print(f"median ratio {med_ours / med_raw:.3f}")
    print(f"query embedding (excluded above): hashing fake {hash_embed_us:.0f} us", flush=True)
    if args.search_only:
        print(f"overhead_ratio={mean_ours / mean_raw:.3f}")
        return
    # query embedding, reported apart: the real model, one query at a time
    model = SentenceTransformerEmbedder(device="cpu")
    model.embed(["warm up"])
    t0 = time.perf_counter()
    for q in queries[:100]:
        model.embed([q])
    minilm_ms = (time.perf_counter() - t0) / 100 * 1e3

    import torch

    build_docs = prose_docs(BUILD_DOCS)
    tokenizer = model._load().tokenizer
    pieces = sum(min(len(ids), 256) for ids in tokenizer([d["text"] for d in build_docs])["input_ids"])
    t0 = time.perf_counter()
    Index.build(build_docs, kind="dense", embedder=model)
    build_s = time.perf_counter() - t0

    print(f"query embedding with all-MiniLM-L6-v2, one at a time: {minilm_ms:.1f} ms")
    print(
        f"build with all-MiniLM-L6-v2 (torch threads {torch.get_num_threads()}): {BUILD_DOCS} documents of 60-120 "
        f"words ({pieces / BUILD_DOCS:.0f} word pieces each) in {build_s:.1f}s = {BUILD_DOCS / build_s:.1f} docs/s, "
        f"{pieces / build_s:.0f} word pieces/s; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"bench wall time {time.perf_counter() - started:.0f}s")
    print(f"overhead_ratio={mean_ours / mean_raw:.3f}")


if __name__ == "__main__":
    main()
