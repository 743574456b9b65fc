"""Secrets kept out of every error text, log line and stored result.

A server that echoes the request's ``Authorization`` header in an error body would otherwise put
the API key into results (JSONL, SQLite, CSV) and onto stderr. Backends call
:func:`register_secret` with each key they use when they are built (from their options or the
environment); whoever turns an error into text that leaves the process (backends when they raise,
the runner for ``Result.error``, the study store) passes it through :func:`redact`, which replaces
every registered secret, and anything shaped like a bearer token or an ``sk-`` key, with ``***``.

The registry is process-wide on purpose: a key is secret wherever it turns up, whichever backend
registered it. It holds the values only in memory and never prints them.
"""

from __future__ import annotations

import re
import threading

__all__ = ["MASK", "redact", "register_secret"]

MASK = "***"
"""What a secret is replaced with."""

_MIN_LENGTH = 4
"""Shorter values are not registered: masking every ``"ab"`` in a text would garble it."""

_PATTERNS = re.compile(
    r"(?i)(?P<scheme>\bbearer\s+)[A-Za-z0-9._~+/=-]+"  # Authorization: Bearer <token>
    r"|\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}"  # OpenAI-style keys (sk-..., sk-proj-...)
    r"|(?P<param>\b(?:api[_-]?key|access[_-]?token)\s*[=:]\s*[\"']?)[A-Za-z0-9._~+/-]{8,}"
)

_lock = threading.Lock()
_secrets: list[str] = []
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every later :func:`redact` call (``None``, empty and very short values are
    ignored). Registering the same value twice is harmless."""
    global _pattern
    if not value:
        return
    value = value.strip()
    if len(value) < _MIN_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)  # longest first: a key containing another is masked whole
        _pattern = re.compile("|".join(re.escape(s) for s in _secrets))


def _mask(match: re.Match[str]) -> str:
    prefix = match.group("scheme") or match.group("param") or ""
    return prefix + MASK


def redact(text: str) -> str:
    """``text`` with every registered secret and every bearer-token or key pattern replaced by ``***``."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _PATTERNS.sub(_mask, text)
