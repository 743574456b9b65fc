"""Retrieval with real models (``slow``): recall@5 of dense, BM25 and hybrid on the fictional corpus
with the packaged all-MiniLM-L6-v2 embedder, and cross-encoder reranking with a tiny BERT
cross-encoder built here (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts.retrieval import CrossEncoderReranker, Index, Retriever, SentenceTransformerEmbedder
from tts.retrieval._fictional import fictional_corpus

pytestmark = pytest.mark.slow


def test_recall_at_5_with_minilm() -> None:
    corpus = fictional_corpus(people=300, towns=60, seed=0)
    index = Index.build(corpus.documents, kind="hybrid", embedder=SentenceTransformerEmbedder(device="cpu"))
    assert index.manifest()["embedder"] == "all-MiniLM-L6-v2" and index.dimension == 384

    def recall(kind: str | None) -> float:
        hits = sum(q["gold"] in [p.id for p in index.search(q["question"], 5, kind)] for q in corpus.questions)  # type: ignore[arg-type]
        return hits / len(corpus.questions)

    dense, bm25, hybrid = recall("dense"), recall("bm25"), recall(None)
    print(f"recall@5 dense={dense:.3f} bm25={bm25:.3f} hybrid={hybrid:.3f}")
    assert hybrid >= 0.9 and bm25 >= 0.9 and dense >= 0.5


def _tiny_cross_encoder(path: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tests._tiny_models import word_tokenizer

    words = "lighthouse keeper vrellmoor ansgar tull bread rain garden who kept the was of a".split()  # noqa: SIM905
    tok = word_tokenizer(words)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=1, pad_token_id=0,
    )  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def test_cross_encoder_reranks_by_its_scores(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _tiny_cross_encoder(tmp_path / "ce")
    texts = ["the lighthouse keeper was ansgar tull", "bread and rain", "a garden of vrellmoor", "who kept the bread"]
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    index = Index.build(docs, kind="bm25")
    reranker = CrossEncoderReranker(str(tmp_path / "ce"), device="cpu")
    query = "who kept the lighthouse of vrellmoor"
    found = index.search(query, 4)
    reranked = reranker.rerank(query, found)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ce").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "ce")
    with torch.no_grad():
        logits = [float(model(**tok(query, p.text, return_tensors="pt")).logits[0, 0]) for p in found]
    expected = [found[i].id for i in sorted(range(len(found)), key=lambda i: -logits[i])]
    assert [p.id for p in reranked] == expected and len(set(expected)) == len(found)
    scores = [p.score for p in reranked]
    assert scores == sorted(scores, reverse=True) and scores != [p.score for p in found]
    retriever = Retriever(index, k=2, reranker=reranker, rerank_depth=4)
    assert [p.id for p in retriever.search(query)] == expected[:2]
