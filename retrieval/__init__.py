"""Retrieval (installed as ``tts.retrieval``): embedders, indexes, BM25, fusion, rerank, ordering."""
