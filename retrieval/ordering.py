"""Evidence for a prompt: ordering against "lost in the middle", sentence selection, a token budget.

Models read the start and the end of a long context best and its middle worst (Liu et al., 2023,
"Lost in the Middle"). :func:`ends_first` puts the strongest passages at both ends (ranks 1, 3,
5, ... from the front, ranks 2, 4, 6, ... from the back) so the weakest sit in the middle.
:func:`select_sentences` keeps, within a long passage, the sentences that share the most words
with the question (in their original order). :func:`evidence_block` numbers the passages
``[1]``, ``[2]``, ... in the order shown, within a token budget, so an answer can cite them.

Tokens here are whitespace tokens (a model's tokenizer gives about 1.3 per English word); all
functions are pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["Evidence", "count_tokens", "ends_first", "evidence_block", "order_passages", "select_sentences"]

T = TypeVar("T")
Order = Literal["ends", "rank", "reverse"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    (  # noqa: SIM905
        "a an and are as at be by did do does for from had has have he her his how in is it its of on or she that the "
        "their them they this to was were what when where which who whom whose why will with"
    ).split()
)


def count_tokens(text: str) -> int:
    """Whitespace tokens of ``text``."""
    return len(text.split())


def ends_first(items: Sequence[T]) -> list[T]:
    """``items`` (best first) with the best at both ends: [1, 3, 5, ..., 6, 4, 2]."""
    return [*items[0::2], *reversed(items[1::2])]


def order_passages(items: Sequence[T], order: Order = "ends") -> list[T]:
    """``ends`` (:func:`ends_first`), ``rank`` (best first) or ``reverse`` (best last)."""
    if order == "ends":
        return ends_first(items)
    return list(items) if order == "rank" else list(reversed(items))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def select_sentences(text: str, question: str, max_tokens: int) -> str:
    """``text`` cut to at most ``max_tokens`` tokens by keeping the sentences sharing the most
    content words with ``question`` (ties: earlier first), in their original order. Text already
    within the budget is returned unchanged; a single sentence over it is cut at the budget."""
    if count_tokens(text) <= max_tokens:
        return text
    sentences = [s for s in _SENTENCE.split(text.strip()) if s.strip()]
    wanted = _content_words(question)
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(_content_words(sentences[i]) & wanted), i))
    keep: list[int] = []
    used = 0
    for i in ranked:
        n = count_tokens(sentences[i])
        if used + n <= max_tokens:
            keep.append(i)
            used += n
    if not keep:  # the best sentence alone is over the budget: its first max_tokens tokens
        return " ".join(sentences[ranked[0]].split()[:max_tokens])
    return " ".join(sentences[i] for i in sorted(keep))


@dataclass(frozen=True, slots=True)
class Evidence:
    """An evidence block: its text and, for each citation number (1-based), the passage shown."""

    text: str
    passages: tuple[Any, ...]
    tokens: int


def _text(p: Any) -> str:
    return p if isinstance(p, str) else str(getattr(p, "text", p["text"] if isinstance(p, dict) else p))


def evidence_block(
    passages: Sequence[Any],
    question: str = "",
    *,
    budget: int = 600,
    order: Order = "ends",
    sentences: int | None = None,
) -> Evidence:
    """Number and join ``passages`` (best first; strings, dicts or objects with ``text``) for a
    prompt: the best that fit ``budget`` tokens are kept (a passage that does not fit whole is cut
    to what is left, by sentences), then ordered by ``order``. With ``sentences``, a passage longer
    than that many tokens keeps only its sentences that match ``question``."""
    chosen: list[tuple[Any, str]] = []
    used = 0
    for p in passages:
        text = " ".join(_text(p).split())
        if sentences is not None:
            text = select_sentences(text, question, sentences)
        room = budget - used
        if room <= 0:
            break
        if count_tokens(text) > room:
            text = select_sentences(text, question, room)
        if not text:
            continue
        chosen.append((p, text))
        used += count_tokens(text)
    shown = order_passages(chosen, order)
    lines = [f"[{i}] {text}" for i, (_, text) in enumerate(shown, 1)]
    return Evidence("\n".join(lines), tuple(p for p, _ in shown), used)
