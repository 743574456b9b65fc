"""Retrieval (installed as ``tts.retrieval``): embedders, chunking, indexes (FAISS dense, BM25,
hybrid by reciprocal-rank fusion), cross-encoder rerank, evidence ordering, and retrievers that
``ctx.retrieve`` calls. Importing it loads no torch, sentence-transformers, faiss or bm25s: they
load on first use.

    index = Index.build(docs, kind="hybrid", out="my-index")     # or `tts-scale index build`
    retriever = Retriever(Index.load("my-index"), k=5)           # or `retriever: {name: hybrid, ...}`
    tts.run(RAG(inner={"name": "cot"}), problems, backend, retriever=retriever)
"""

from tts.retrieval.chunking import Chunk, ChunkOptions, Document, chunk_document, read_documents
from tts.retrieval.embedders import Embedder, HashEmbedder, SentenceTransformerEmbedder, make_embedder
from tts.retrieval.index import Index, IndexOptions, Passage, rrf_fuse
from tts.retrieval.ordering import Evidence, ends_first, evidence_block, select_sentences
from tts.retrieval.rerank import CrossEncoderReranker
from tts.retrieval.retrievers import BM25Retriever, DenseRetriever, HybridRetriever, Retriever

__all__ = [
    "BM25Retriever",
    "Chunk",
    "ChunkOptions",
    "CrossEncoderReranker",
    "DenseRetriever",
    "Document",
    "Embedder",
    "Evidence",
    "HashEmbedder",
    "HybridRetriever",
    "Index",
    "IndexOptions",
    "Passage",
    "Retriever",
    "SentenceTransformerEmbedder",
    "chunk_document",
    "ends_first",
    "evidence_block",
    "make_embedder",
    "read_documents",
    "rrf_fuse",
    "select_sentences",
]
