"""Verifiers: score, prune and rerank candidates (installed as ``tts.verifiers``).

Each family lives in its own module; every verifier has a pydantic ``Options`` model and declares
its cost (:mod:`tts.verifiers.base`). Answer extraction, canonical keys and the pure part of
equivalence live in :mod:`tts.answers` (tasks use them too); :mod:`tts.verifiers.math` adds the
symbolic (math-verify) step.
"""
