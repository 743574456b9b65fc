"""Short text answers (capitals, names, QA): extraction from a free-form reply and equivalence.

Part of :mod:`tts.answers` (which re-exports these names), kept apart to keep each file short.
"""

from __future__ import annotations

import re
import string
import unicodedata

# "The answer is X" / "Final answer: X", in math replies and text replies alike
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)\**\s*(?:is\b|=|:)\**\s*:?\s*(.+?)\s*(?:\.(?=\s|$)|\n|$)", re.IGNORECASE
)


_AFTER_ANSWER_RE = re.compile(r"\**\s*(?:is\b|=|:)\**\s*:?\s*(.+?)\s*(?:\.(?=\s|$)|\n|$)")
"""What follows the word "answer" in :data:`_ANSWER_IS_RE`, matched in the lower-cased text where
the word is found (lower-case: the case-blind pattern costs twice as much)."""


def _stated_answers(text: str) -> list[str]:
    """What follows every "the answer is" / "final answer:" in ``text``, in order, as
    ``_ANSWER_IS_RE.findall`` finds it. Each "answer" is found with ``str.find`` on the lower-cased
    text and the rest matched there (a regex scan that tries the pattern at every position of a long
    reply costs microseconds per sample); "final" changes nothing that is captured."""
    lower = text.lower()
    if len(lower) != len(text):  # lower-casing moved positions (a rare letter): scan with the regex
        return _ANSWER_IS_RE.findall(text)
    out: list[str] = []
    at = lower.find("answer")
    while at >= 0:
        m = _AFTER_ANSWER_RE.match(lower, at + 6)
        if m is None:
            at = lower.find("answer", at + 1)
        else:
            out.append(text[m.start(1) : m.end(1)])
            at = lower.find("answer", m.end())
    return out


_ANSWER_TAIL_RE = re.compile(r",\s+(?:since|because|which|as|so|and|but|that|if|when|where)\b.*$", re.DOTALL)


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, accents folded (``Brasília`` -> ``brasilia``), punctuation
    and the articles a/an/the dropped, spaces squeezed. An answer that is nothing but an article
    (the choice letter ``A``, "An") keeps it: dropping it would leave no answer at all."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES_RE.sub(" ", text).split()) or " ".join(text.split())


_SENTENCE_END_RE = re.compile(r"(?<=\w\w\w[.!?])\s+|(?<=\d[.!?])\s+")  # not after "St." or "Mt."
_CLAUSE_RE = re.compile(r",\s+(?=[a-z]).*$", re.DOTALL)  # "Sucre, though ...", not "Washington, D.C."
_COPULA_RE = re.compile(r"^(.+?)\s+(?:is|are|was|would be|will be)\s+(.+)$", re.IGNORECASE)
_SUBJECT_WORDS = ("the", "a", "an", "it", "its", "it's", "that", "this", "my", "our")


def _described(sentence: str) -> str | None:
    """From "X is Y", the side a description points at: Y when X is one ("The capital of Tunisia
    is Tunis", "It is Paris"), X when Y is one ("Paris is the capital of France"); else None."""
    m = _COPULA_RE.match(sentence)
    if m is None:
        return None
    subject, rest = m.group(1).split(), m.group(2).split()
    if subject and subject[0].lower() in _SUBJECT_WORDS:
        return m.group(2).strip()
    if rest and rest[0].lower() in _SUBJECT_WORDS:
        return m.group(1).strip()
    return None


def _tidy_text(answer: str) -> str:
    return answer.strip().strip("*_`\"'").strip().rstrip(".!;:,").strip().strip("*_`\"'").strip()


_SHORT_SENTENCE = 5  # words: "Tunis. It lies in the north." -> "Tunis"; longer first sentences are free text


def extract_short_answer(text: str) -> str | None:
    """The answer in a reply: after the last "The answer is" / "Answer:"; else, from a first
    sentence "X is Y", the side a description points at ("The capital of Tunisia is Tunis." ->
    ``Tunis``, "Paris is the capital of France." -> ``Paris``); else a short first sentence; else
    the whole first line (free text). None for an empty reply."""
    if not text or not text.strip():
        return None
    for stated in reversed(_stated_answers(text)):
        answer = _tidy_text(_ANSWER_TAIL_RE.sub("", stated))
        if answer:
            return answer
    line = _tidy_text(next(ln for ln in text.strip().splitlines() if ln.strip()))
    sentence = _tidy_text(_SENTENCE_END_RE.split(line, maxsplit=1)[0])
    side = _described(sentence)
    if side is not None and _tidy_text(_CLAUSE_RE.sub("", side)):
        return _tidy_text(_CLAUSE_RE.sub("", side))
    if len(sentence.split()) <= _SHORT_SENTENCE:
        return sentence or None
    return line or None


def text_equivalent(a: str | None, b: str | None) -> bool:
    """True when the normalised answers match; ``|`` separates accepted alternatives on either side
    (a reference ``Kyiv|Kiev`` accepts both)."""
    if a is None or b is None:
        return False
    keys = {normalize_answer(x) for x in a.split("|")} - {""}
    return any(normalize_answer(y) in keys for y in b.split("|"))
