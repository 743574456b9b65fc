"""Verifiers: score, prune and rerank candidates (installed as ``tts.verifiers``).

Each family lives in its own module; ``tts.verifiers.math`` holds answer extraction, canonical
forms and equivalence for math answers.
"""
