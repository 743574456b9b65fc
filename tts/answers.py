"""Answer formats: how a final answer is found in a reply, keyed for voting and compared.

Tasks (:class:`~tts.task.Task`), datasets and verifiers all read answers through this module, so one
spelling rule holds everywhere. Everything here is pure Python and string work, cheap enough to
run for every sample; the symbolic (math-verify) step that settles the remaining math cases lives
in :mod:`tts.verifiers.math`, on top of :func:`settle`.

- Numbers in free text: :func:`first_number`, :func:`last_number` (``$1,234.00`` -> ``1234``).
- Math answers: :func:`extract_answer` (the last ``\\boxed{}``, ``#### n``, "The answer is ...",
  then the number the text ends on), :func:`canonical` (a key shared by the usual spellings of one
  answer: ``1,000`` / ``1000.0``, ``\\dfrac{1}{2}`` / ``1/2`` / ``0.5``, ``50\\%`` / ``50``,
  ``x = 5`` / ``5``, sets sorted), :func:`settle` (equal keys, then exact rational arithmetic;
  None when only a symbolic check can tell) and :func:`equivalent` (``settle`` is True).
- References from dataset solutions: :func:`gsm8k_reference`, :func:`math_reference`,
  :func:`reference_answer`.
- Short text answers: :func:`normalize_answer` (SQuAD: case, punctuation, articles and accents
  ignored), :func:`extract_short_answer` ("The capital of Tunisia is Tunis." -> ``Tunis``) and
  :func:`text_equivalent` (``|`` separates accepted alternatives: ``Kyiv|Kiev``).
- :data:`ANSWER_FORMATS`: the formats a task names (``math``, ``first_number``, ``last_number``,
  ``text``), each an :class:`AnswerFormat` of extraction, canonical key and equivalence.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from tts._short_answers import (
    _ANSWER_TAIL_RE,
    _stated_answers,
    extract_short_answer,
    normalize_answer,
    text_equivalent,
)
from tts.errors import ConfigError

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "canonical",
    "equivalent",
    "extract_answer",
    "extract_boxed",
    "extract_short_answer",
    "first_number",
    "gsm8k_reference",
    "last_number",
    "math_reference",
    "normalise_latex",
    "normalize_answer",
    "plain_number",
    "reference_answer",
    "settle",
    "text_equivalent",
]

# --------------------------------------------------------------------------------------------------
# Numbers in free text
# --------------------------------------------------------------------------------------------------

# A number as people write it: optional sign and $, thousands separators, decimals.
_NUMBER_RE = re.compile(r"(-)?\\?\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: <<9*2=18>>


def _tidy_number(sign: str | None, digits: str) -> str:
    """``-`` + ``1,234.50`` -> ``-1234.5``: no separators, no trailing or leading zeros, no ``-0``."""
    s = digits.replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    whole, dot, frac = s.partition(".")
    s = (whole.lstrip("0") or "0") + dot + frac
    return "-" + s if sign and s != "0" else s


def _is_sign(text: str, at: int) -> bool:
    """Whether the "-" at ``at`` is a sign (``x = -4``, ``is -4``) rather than a minus (``10-4``,
    ``10 - 4``, ``x-4``): a minus follows an operand, adjacent or across spaces after a number."""
    if at == 0:
        return True
    if text[at - 1].isalnum() or text[at - 1] in ")]}_":
        return False
    before = text[:at].rstrip()
    return not before or not (before[-1].isdigit() or before[-1] in ")]}")


def _numbers(text: str) -> list[str]:
    """Every number in ``text``, tidied, with a leading ``-`` kept only where it is a sign."""
    text = text.replace("\u2212", "-")
    return [
        _tidy_number(m.group(1) if m.group(1) and _is_sign(text, m.start()) else None, m.group(2))
        for m in _NUMBER_RE.finditer(text)
    ]


def last_number(text: str) -> str | None:
    """The last number in ``text`` (``$1,234.00`` -> ``1234``), or None."""
    found = _numbers(text)
    return found[-1] if found else None


def first_number(text: str) -> str | None:
    """The first number in ``text`` (``$1,234.00`` -> ``1234``), or None."""
    found = _numbers(text)
    return found[0] if found else None


def _final_number(text: str) -> str | None:
    """The number a worked solution ends on.

    The last number of the last sentence that has one, except that when that sentence holds an
    equation the result right after its last ``=`` wins: "5 + 3 = 8 limbs after 15 days" -> 8.
    """
    text = _CALCULATOR_RE.sub("", text)
    for sentence in reversed(re.split(r"(?<=[.!?])\s+|\n+", text)):
        if not re.search(r"\d", sentence):
            continue
        if "=" in sentence:
            after = first_number(sentence[sentence.rindex("=") + 1 :])
            if after is not None:
                return after
        return last_number(sentence)
    return None


# --------------------------------------------------------------------------------------------------
# Math answers: extraction
# --------------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")
_HASH_RE = re.compile(r"####\s*([^\n]+)")


def _matching_brace(text: str, open_index: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_index`` (escaped ``\\{`` ``\\}`` ignored), or -1."""
    depth = 0
    i = open_index
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces included);
    ``\\boxed 5`` (no braces) gives ``5``. None when there is none."""
    if "\\boxed" not in text and "\\fbox" not in text:  # the common case, without a regex scan
        return None
    for m in reversed(list(_BOXED_RE.finditer(text))):
        rest = text[m.end() :]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            start = m.end() + len(rest) - len(stripped)
            end = _matching_brace(text, start)
            if end >= 0:
                return text[start + 1 : end].strip()
            continue  # unbalanced (a truncated reply): try an earlier box
        token = stripped.split("$")[0].split()[0] if stripped.split() else ""
        token = token.rstrip(".,;")
        if token:
            return token
    return None


def _unwrap_math(s: str) -> str:
    """Drop delimiters around a whole answer: ``$..$``, ``\\(..\\)``, ``\\[..\\]``, a whole ``\\boxed{}``."""
    while True:
        s = s.strip()
        before = s
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$" and "$" not in s.strip("$"):
            s = s.strip("$")  # but not "$5$ and $6$"
        elif s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")) and "\\(" not in s[2:-2]:
            s = s[2:-2]
        elif (m := _BOXED_RE.match(s)) is not None:
            brace = m.end() + len(s[m.end() :]) - len(s[m.end() :].lstrip())
            if s[brace : brace + 1] == "{" and _matching_brace(s, brace) == len(s) - 1:
                s = s[brace + 1 : -1]
        elif s.startswith("\\displaystyle"):
            s = s[len("\\displaystyle") :]
        if s == before:
            return s


@functools.lru_cache(maxsize=1 << 14)
def _tidy_answer(answer: str) -> str:
    """An extracted answer without delimiters and end punctuation; a number without its units."""
    s = _unwrap_math(answer).strip("*").rstrip(".;").strip()
    s = _unwrap_math(s)
    number = plain_number(s)
    return number if number is not None else s


def extract_answer(text: str) -> str | None:
    """The final answer in a reply, or None when there is none.

    Order: the last ``\\boxed{}``/``\\fbox{}``, the last ``#### n`` line, the last "The answer is X"
    (or "Final answer: X"), then the number the text ends on. Numbers come back bare:
    ``$1,234.00`` -> ``1234``, ``18 dollars`` -> ``18``.
    """
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return _tidy_answer(boxed) or None
    hashes = _HASH_RE.findall(text) if "####" in text else None
    if hashes:
        return _tidy_answer(hashes[-1]) or None
    stated = _stated_answers(text)
    for candidate in reversed(stated):
        answer = _tidy_answer(_ANSWER_TAIL_RE.sub("", candidate))
        if answer:
            return answer
    return _final_number(text)


# --------------------------------------------------------------------------------------------------
# Math answers: canonical keys (pure string operations: this runs for every sample)
# --------------------------------------------------------------------------------------------------

_TEXT_COMMAND_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*\{")
_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\\[dt]frac(?![a-zA-Z])", r"\\frac"),
        (r"\\(?:left|right)\.", ""),  # invisible delimiters
        (r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", ""),
        (r"(?<!\\)\\(?:q?quad|[,;:! ])", " "),  # spacing, also in 1\,000; not a matrix row break
        (r"~", " "),
        (r"\{,\}", ","),
        (r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])", ""),  # degrees
        (r"\\\$|\$", ""),
        (r"\u2212", "-"),
        (r"∞", r"\\infty"),
        (r"\\le(?![a-zA-Z])|≤", r"\\leq"),
        (r"\\ge(?![a-zA-Z])|≥", r"\\geq"),
        (r"\\ne(?![a-zA-Z])|≠", r"\\neq"),
        (r"\\(?:percent|%)|%", r"\\%"),
        (r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}"),  # \sqrt3 -> \sqrt{3}
        (r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}"),  # \frac12 -> \frac{1}{2}
        (r"\\frac\s*([0-9a-zA-Z])\s*\{", r"\\frac{\1}{"),
        (r"(\\frac\{[^{}]*\})\s*([0-9a-zA-Z])", r"\1{\2}"),
        (r"([\^_])\{(\w)\}", r"\1\2"),  # x^{2} -> x^2
        (r"\s+", " "),
    )
)
# A unit after a number: "5 \text{ cm}^2", "18 dollars", "3 square feet", "4 km/h". Plain words need two
# letters or more, so "5 i" or "3 x" are never taken for units.
_UNIT_TAIL_RE = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm|textrm)\{\s*[a-zA-Z][a-zA-Z .,/-]*\}(?:\^\d)?\s*$"
    r"|(?<=[\d}])\s+[a-zA-Z]{2,}(?:[ /-][a-zA-Z]+)*(?:\^\d)?\s*$"
)
_ASSIGNMENT_RE = re.compile(r"^[a-zA-Z](?:_\w+|_\{\w+\})?=(?!.*=)(.+)$")
_PLAIN_NUMBER_RE = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)$")
_FRACTION_RE = re.compile(r"^(-?)(?:\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+))$")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z\s'.-]*$")


def _unwrap_text_commands(s: str) -> str:
    """``\\text{ cm}`` -> `` cm`` for every text-like command, nested braces respected."""
    while (m := _TEXT_COMMAND_RE.search(s)) is not None:
        end = _matching_brace(s, m.end() - 1)
        if end < 0:
            return s
        s = s[: m.start()] + s[m.end() : end] + s[end + 1 :]
    return s


def normalise_latex(answer: str, *, keep_text: bool = False) -> str:
    """LaTeX spelling cleaned up, still valid LaTeX. With ``keep_text`` (what math-verify gets),
    ``\\text{...}`` stays: unwrapped, ``Evelyn`` would parse as the product E*v*e*l*y*n.

    A bare decimal number (the common answer) comes back as it is without the regex passes; other
    answers are cached, since the n samples of a problem repeat a few answers many times."""
    if _BARE_NUMBER_RE.match(answer):
        return answer
    return _normalise_latex(answer, keep_text)


_BARE_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?\Z")
"""What :func:`normalise_latex` leaves unchanged: no sign but minus, no separators, no units."""


@functools.lru_cache(maxsize=1 << 14)
def _normalise_latex(answer: str, keep_text: bool) -> str:
    s = _unwrap_math(answer.strip())
    s = _UNIT_TAIL_RE.sub("", s)  # before \text{} unwrapping: "5\text{ cm}^2"
    if not keep_text:
        s = _unwrap_text_commands(s)
    for pattern, repl in _REPLACEMENTS:
        s = pattern.sub(repl, s)
    s = _UNIT_TAIL_RE.sub("", s.strip())
    return s.strip().rstrip(".").strip()


_MAX_DIGITS = 1000
"""Longer digit strings stay text: Python refuses int() of 4300+ digits, and no answer needs them."""


def _rational(s: str) -> Fraction | None:
    """The exact value of a plain number or integer fraction (``-1,234.5``, ``3/4``, ``\\frac{-3}{4}``)."""
    if len(s) > _MAX_DIGITS:
        return None
    if _PLAIN_NUMBER_RE.match(s):
        return Fraction(s.replace(",", ""))
    m = _FRACTION_RE.match(s)
    if m is None:
        return None
    num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if m.group(1) else value


def _rational_key(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _split_top_level(s: str) -> list[str] | None:
    """``s`` split on commas outside brackets and braces; None when there is no such comma."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    if not parts:
        return None
    parts.append(s[start:])
    return parts


def _outer_pair(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when one bracket pair encloses all of ``s``: a tuple, interval or set."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "\\{", s[2:-2], "\\}"
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        depth = 0
        for i, ch in enumerate(s):
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth == 0 and i < len(s) - 1:
                return None  # "(1)+(2)": the first bracket closes early
        return s[0], s[1:-1], s[-1]
    return None


def _key(s: str) -> str:
    """The key of a normalised answer with whitespace removed."""
    while len(s) >= 2 and s[0] == "{" and _matching_brace(s, 0) == len(s) - 1:
        s = s[1:-1]
    s = s.replace("\\%", "").lstrip("+").rstrip(".")
    value = _rational(s)
    if value is not None:
        return _rational_key(value)
    assignment = _ASSIGNMENT_RE.match(s)
    if assignment:
        return _key(assignment.group(1))
    pair = _outer_pair(s)
    if pair is not None:
        opening, inner, closing = pair
        parts = _split_top_level(inner)
        if parts is not None or opening == "\\{":
            items = [_key(p) for p in (parts or [inner])]
            if opening == "\\{":
                items.sort()  # a set: order does not matter
            return opening + ",".join(items) + closing
        if opening == "(" and re.fullmatch(r"[A-Za-z]", inner):
            return inner.lower()  # a choice: (C)
        return s
    parts = _split_top_level(s)
    if parts is not None:  # a bare list of solutions "1, -2": order does not matter
        return ",".join(sorted(_key(p) for p in parts))
    if _WORDS_RE.match(s):
        return s.lower()
    return s


def canonical(answer: str | None) -> str:
    """A key such that equal answers in their usual spellings share it ("" for no answer).

    Pure string work (no sympy), linear in the answer's length. Numbers become exact rationals
    (``0.50``, ``1/2``, ``\\dfrac12`` -> ``1/2``); LaTeX wrappers, spacing, ``\\left``/``\\right``,
    units, ``%`` and degrees are dropped; tuples and intervals keep their brackets; sets and bare
    lists are sorted; plain words are lower-cased.
    """
    if answer is None:
        return ""
    return _canonical(answer)


@functools.lru_cache(maxsize=1 << 14)
def _canonical(answer: str) -> str:
    return _key(re.sub(r"\s+", "", normalise_latex(answer)))


@functools.lru_cache(maxsize=1 << 14)
def plain_number(s: str) -> str | None:
    """``s`` as a bare number when it is a number with optional ``$``, separators and units."""
    t = normalise_latex(s)
    if "\\%" in t:
        return None  # keep the percent sign visible in extracted answers
    t = re.sub(r"\s+", "", t)
    if _PLAIN_NUMBER_RE.match(t):
        sign, digits = ("-", t[1:]) if t.startswith("-") else (None, t)
        return _tidy_number(sign, digits)
    return None


# --------------------------------------------------------------------------------------------------
# Math answers: equivalence without a symbolic step
# --------------------------------------------------------------------------------------------------


def _terminates(value: Fraction) -> bool:
    """True when ``value`` has a finite decimal expansion (its denominator is 2^a 5^b)."""
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _compare_numbers(a: Fraction, b: Fraction, a_percent: bool, b_percent: bool) -> bool | None:
    """Exact comparison of two numbers; None when only a rounding rule can decide (``1/3`` vs
    ``0.333333``), which is left to math-verify so both paths agree."""
    if a == b or (a_percent and a / 100 == b) or (b_percent and b / 100 == a):
        return True
    if _terminates(a) != _terminates(b):
        return None
    return False


def settle(a: str | None, b: str | None) -> bool | None:
    """Whether two math answers are the same, where string keys and exact arithmetic can tell:
    equal keys, equal rationals (``50%`` and ``0.5`` included), different words; None when only a
    symbolic check can decide (``x^2+2x`` against ``2x+x^2``, ``1/3`` against ``0.333``)."""
    if a is None or b is None:
        return False
    ka, kb = canonical(a), canonical(b)
    if not ka or not kb:
        return False
    if ka == kb:
        return True
    na, nb = _rational(ka), _rational(kb)
    if na is not None and nb is not None:
        verdict = _compare_numbers(na, nb, "%" in a, "%" in b)
        if verdict is not None:
            return verdict
    if _WORDS_RE.match(ka) and _WORDS_RE.match(kb):
        return False  # different words ("evelyn", "c"): nothing symbolic to find
    return None


def equivalent(a: str | None, b: str | None) -> bool:
    """True when :func:`settle` finds two math answers the same (undecided counts as different);
    :func:`tts.verifiers.math.equivalent` adds the symbolic step."""
    return settle(a, b) is True


# --------------------------------------------------------------------------------------------------
# References from dataset solutions
# --------------------------------------------------------------------------------------------------


def gsm8k_reference(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after its last ``####``, separators stripped."""
    if "####" not in solution:
        raise ConfigError(
            "gsm8k_reference: the solution has no '#### <answer>' line; pass a GSM8K "
            "'answer' field, or set Problem.reference to the final answer directly."
        )
    answer = solution.rsplit("####", 1)[1].strip()
    return plain_number(answer) or answer


_ANSWER_TRAILER_RE = re.compile(r"The answer is:?\s*(.+?)\s*$", re.DOTALL)


def math_reference(solution: str) -> str:
    """The final answer of a MATH solution: after its last "The answer is:", else its last box."""
    idx = solution.rfind("The answer is")
    if idx >= 0:
        m = _ANSWER_TRAILER_RE.match(solution, idx)
        if m and m.group(1):
            return _unwrap_math(m.group(1)).rstrip(".").strip()
    boxed = extract_boxed(solution)
    if boxed is None:
        raise ConfigError(
            "math_reference: the solution has neither 'The answer is: X' nor \\boxed{X}; "
            "set Problem.reference to the final answer directly."
        )
    return boxed


def reference_answer(reference: str) -> str:
    """A reference that is a whole worked solution is reduced to its final answer."""
    if "####" in reference:
        return gsm8k_reference(reference)
    if "The answer is" in reference or _BOXED_RE.search(reference):
        return math_reference(reference)
    return reference


# --------------------------------------------------------------------------------------------------
# Answer formats
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerFormat:
    """Extraction, canonical key and equivalence of one kind of answer."""

    name: str
    extract: Callable[[str], str | None]
    canonical: Callable[[str | None], str]
    equivalent: Callable[[str | None, str | None], bool]


def _cached(fn: Callable[[str], str]) -> Callable[[str | None], str]:
    """Canonical keys repeat across the samples of a vote: compute each once; None keys as ""."""
    cached = functools.lru_cache(maxsize=1 << 16)(fn)
    return lambda answer: "" if answer is None else cached(answer)


_math_key = _cached(canonical)
ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "math": AnswerFormat("math", extract_answer, _math_key, equivalent),
    "first_number": AnswerFormat("first_number", first_number, _math_key, equivalent),
    "last_number": AnswerFormat("last_number", last_number, _math_key, equivalent),
    "text": AnswerFormat("text", extract_short_answer, _cached(normalize_answer), text_equivalent),
}
"""Answer formats by name: ``math`` (boxed / #### / "The answer is" / last number), ``first_number``,
``last_number``, ``text`` (a short answer; case, punctuation, articles and accents ignored)."""
