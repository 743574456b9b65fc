"""Short-answer and multiple-choice answers: SQuAD-style exact match, token F1, choice letters, aliases.

- Answers are compared after :func:`tts.answers.normalize_answer`, SQuAD's normalisation (lower-case,
  no punctuation, no articles, single spaces, accents folded), so "The Eiffel Tower." matches
  "eiffel tower".
- :func:`exact_match` and :func:`f1_score` take one reference or several acceptable ones (aliases)
  and return the best match, as SQuAD and TriviaQA score.
- :func:`extract_choice` reads the chosen letter from a reply: "(B)", "Answer: b",
  "The correct option is C.".
- :func:`references_of` gathers a problem's acceptable answers: ``reference`` split on ``|`` plus
  ``metadata["aliases"]``.

:class:`QAVerifier` and :class:`ChoiceVerifier` score candidates with them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from tts.answers import normalize_answer
from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score

from .base import VerifierCost, VerifierOptions, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "ChoiceOptions",
    "ChoiceVerifier",
    "QAOptions",
    "QAVerifier",
    "exact_match",
    "extract_choice",
    "f1_score",
    "references_of",
]


def _as_list(references: str | Iterable[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ConfigError("no reference answers given: pass a string or a non-empty list of answers.")
    return refs


def exact_match(prediction: str | None, references: str | Iterable[str]) -> bool:
    """True when the normalised prediction equals any normalised reference."""
    if prediction is None:
        return False
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(r) for r in _as_list(references))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)  # both empty: a match; one empty: nothing shared
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, references: str | Iterable[str]) -> float:
    """SQuAD token F1 between the normalised prediction and the best-matching reference."""
    if prediction is None:
        return 0.0
    tokens = normalize_answer(prediction).split()
    return max(_f1(tokens, normalize_answer(r).split()) for r in _as_list(references))


def references_of(problem: Problem, separator: str | None = "|") -> list[str]:
    """Every acceptable answer of ``problem``: ``reference`` split on ``separator`` (None: not
    split) plus ``metadata["aliases"]`` (a list or one string), blanks and repeats dropped."""
    found: list[str] = []
    if problem.reference is not None:
        found += problem.reference.split(separator) if separator else [problem.reference]
    aliases = problem.metadata.get("aliases")
    if isinstance(aliases, str):
        found.append(aliases)
    elif aliases is not None:
        found += [str(a) for a in aliases]
    out: list[str] = []
    for ref in (r.strip() for r in found):
        if ref and ref not in out:
            out.append(ref)
    return out


# --------------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------------


def _check_letters(letters: str) -> str:
    if not letters or not letters.isalpha() or len(set(letters.upper())) != len(letters):
        raise ConfigError(f"letters must be distinct option letters such as 'ABCD', got {letters!r}.")
    return letters.upper()


def _choice_patterns(letters: str) -> list[re.Pattern[str]]:
    """Patterns from most to least explicit; each has one group per way of writing the letter."""
    upper, lower = f"[{letters}]", f"[{letters.lower()}]"
    either = f"[{letters}{letters.lower()}]"
    # A bare lower-case letter counts only where it cannot start a word: "answer: b.", not "answer is a bit".
    letter = rf"(?:[(\[]({either})[)\]]|({upper})(?![\w'])|({lower})(?=\s*(?:$|[.,;!?)}}$*])))"
    cue = (
        r"(?:\b(?i:answer)(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*[:=]?"
        r"|\b(?i:correct|right|best|final)\s+(?i:option|choice)(?:\s+(?i:is))?\s*:?"
        r"|\bI\s+(?i:choose|pick|select|go\s+with)|\\(?:boxed|fbox)\{)"
        r"\s*(?:(?i:option|choice)\s+)?\**\s*"
    )
    return [
        re.compile(cue + letter),
        re.compile(rf"[(\[]({upper})[)\]]"),  # "(B)"; "(b)" may be a sub-question label
        re.compile(rf"^\s*[(\[]?\**({either})\**[)\]]?\s*[.:]?\s*$"),  # the whole reply is a letter
        re.compile(rf"(?<![\w'-])({upper})(?![\w'-])"),
    ]


def extract_choice(text: str | None, letters: str = "ABCD") -> str | None:
    """The option letter a reply chooses (upper-case), or None.

    Tried in order, the last match of each kind winning: an explicit cue ("Answer: b", "The
    correct option is C.", "the answer is (B)", "I pick D"), a parenthesised capital "(B)", a reply
    that is only a letter ("b."), then a standalone capital ("B is right"), where "A" or "I" before
    a lower-case word is taken for an article or a pronoun.
    """
    if not text:
        return None
    letters = _check_letters(letters)
    patterns = _choice_patterns(letters)
    for kind, pattern in enumerate(patterns):
        for m in reversed(list(pattern.finditer(text))):
            found = next(g for g in m.groups() if g)
            if kind == len(patterns) - 1 and found in "AI" and re.match(r"\s+[a-z]", text[m.end() :]):
                continue
            return found.upper()
    return None


# --------------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------------


def _feedback(answer: str | None, ok: bool, refs: Sequence[str], reveal: bool) -> str:
    if answer is None:
        return "No answer found."
    if reveal:
        return f"correct: {answer}" if ok else f"expected {' or '.join(refs)}, got {answer}"
    return f"The answer {answer} is correct." if ok else f"The answer {answer} is incorrect."


def _require_refs(problem: Problem, verifier: str, separator: str | None) -> list[str]:
    refs = references_of(problem, separator)
    if not refs:
        raise ConfigError(
            f"{verifier} needs a reference answer: problem {problem.id!r} has none; set "
            "Problem(reference=...) or metadata['aliases']."
        )
    return refs


class QAOptions(VerifierOptions):
    """Options of :class:`QAVerifier`."""

    metric: Literal["em", "f1"] = "em"
    """``em``: 1/0 by normalised exact match; ``f1``: token F1, passing at ``threshold``."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    reveal_reference: bool = False
    """Name the reference in feedback (it leaks the label to ``refine``)."""
    separator: str | None = "|"
    """Splits ``problem.reference`` into accepted answers (None: not split)."""


class QAVerifier:
    """Short answers against a reference and its aliases: ``em`` scores 1/0 by normalised exact
    match; ``f1`` scores the token F1 and passes at ``threshold``. ``QAVerifier("f1")`` sets the metric."""

    name: ClassVar[str] = "qa"
    Options = QAOptions

    def __init__(self, options: QAOptions | Mapping[str, Any] | str | None = None, **kw: Any) -> None:
        self.options = verifier_options(QAOptions, options, kw, self.name, first="metric")
        self.cost = VerifierCost(kind="rule", calls=0)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        """One score per candidate, in order; a candidate without a parsed answer is judged on its text."""
        o = self.options
        refs = _require_refs(problem, "QAVerifier", o.separator)
        out = []
        for c in candidates:
            answer = c.answer if c.answer is not None else (c.text.strip() or None)
            if o.metric == "em":
                value = float(exact_match(answer, refs))
                ok = value == 1.0
            else:
                value = f1_score(answer, refs)
                ok = value >= o.threshold
            out.append(
                Score(
                    value=value, passed=ok, verifier=self.name, feedback=_feedback(answer, ok, refs, o.reveal_reference)
                )
            )
        return out


class ChoiceOptions(VerifierOptions):
    """Options of :class:`ChoiceVerifier`."""

    letters: str = "ABCD"
    """The option letters, distinct (any case)."""
    reveal_reference: bool = False
    separator: str | None = "|"

    @field_validator("letters")
    @classmethod
    def _letters(cls, v: str) -> str:
        return _check_letters(v)


class ChoiceVerifier:
    """Multiple choice: the letter a candidate picks against the reference letter(s).
    ``ChoiceVerifier("ABCDE")`` sets the letters."""

    name: ClassVar[str] = "choice"
    Options = ChoiceOptions

    def __init__(self, options: ChoiceOptions | Mapping[str, Any] | str | None = None, **kw: Any) -> None:
        self.options = verifier_options(ChoiceOptions, options, kw, self.name, first="letters")
        self.cost = VerifierCost(kind="rule", calls=0)

    def _reference_letters(self, problem: Problem) -> list[str]:
        letters = self.options.letters
        refs = _require_refs(problem, "ChoiceVerifier", self.options.separator)
        found = [extract_choice(r, letters) for r in refs]
        if None in found:
            raise ConfigError(
                f"ChoiceVerifier: problem {problem.id!r} has reference {problem.reference!r}; "
                f"each reference must name one of the letters {letters!r}, "
                "e.g. 'B' or '(B)'."
            )
        return [x for x in found if x is not None]

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        """One score per candidate, in order: 1.0 when its letter is a reference letter."""
        refs = self._reference_letters(problem)
        letters = self.options.letters
        out = []
        for c in candidates:
            letter = extract_choice(c.answer, letters) if c.answer else None
            letter = letter or extract_choice(c.text, letters)
            ok = letter in refs
            out.append(
                Score(
                    value=float(ok),
                    passed=ok,
                    verifier=self.name,
                    feedback=_feedback(letter, ok, refs, self.options.reveal_reference),
                )
            )
        return out
