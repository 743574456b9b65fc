"""What a task asks of the model: prompt templates, the answer format instruction, and how answers
are extracted, keyed for voting and compared with the reference.

A :class:`Task` travels in the :class:`~tts.context.Context`, so strategies stay task-agnostic: a
proposer renders ``task.template(style)`` and parses completions with ``task.extract``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tts.verifiers import math as math_answers

__all__ = ["ANSWER_FORMATS", "AnswerFormat", "Task"]


@dataclass(frozen=True)
class AnswerFormat:
    """Extraction, canonical key and equivalence of one kind of answer."""

    name: str
    extract: Callable[[str], str | None]
    canonical: Callable[[str | None], str]
    equivalent: Callable[[str | None, str | None], bool]


def _text_key(answer: str | None) -> str:
    if answer is None:
        return ""
    return re.sub(r"[^\w\s]", "", answer).strip().lower()


def _text_equivalent(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _text_key(a) == _text_key(b)


def _first_line_answer(text: str) -> str | None:
    m = re.search(r"answer is[:\s]*(.+)", text, re.IGNORECASE)
    line = (m.group(1) if m else text).strip().split("\n")[0]
    line = line.strip().strip(".").strip()
    return line or None


def _first_number_key(answer: str | None) -> str:
    return math_answers.canonical(answer)


def _cached(fn: Callable[[str | None], str]) -> Callable[[str | None], str]:
    """Canonical keys repeat across the samples of a vote: compute each once."""
    return functools.lru_cache(maxsize=1 << 16)(fn)


ANSWER_FORMATS: dict[str, AnswerFormat] = {
    "math": AnswerFormat("math", math_answers.extract_answer, _cached(math_answers.canonical),
                         math_answers.equivalent),
    "first_number": AnswerFormat("first_number", math_answers.first_number, _cached(_first_number_key),
                                 math_answers.equivalent),
    "last_number": AnswerFormat("last_number", math_answers.last_number, _cached(_first_number_key),
                                math_answers.equivalent),
    "text": AnswerFormat("text", _first_line_answer, _cached(_text_key), _text_equivalent),
}
"""Answer formats by name: ``math`` (boxed / #### / "The answer is" / last number), ``first_number``,
``last_number``, ``text`` (first line, case and punctuation ignored)."""

PromptStyle = Literal["direct", "cot"]


@dataclass(frozen=True)
class Task:
    """Prompting and answer handling for one kind of problem.

    Templates use ``{question}`` and ``{instruction}``; ``instruction`` is the answer format
    instruction appended to every prompt.
    """

    name: str = "math"
    instruction: str = "End your reply with 'The answer is N.' where N is the final answer."
    direct_template: str = "{question}\n{instruction}"
    cot_template: str = "{question}\nLet's think step by step. {instruction}"
    system: str | None = None
    answer_format: str = "math"
    assistant_prefix: str = ""
    """Text the model's reply starts with (e.g. "The answer is"); extraction sees it too."""
    examples: tuple[tuple[str, str], ...] = field(default=())

    @property
    def answer(self) -> AnswerFormat:
        return ANSWER_FORMATS[self.answer_format]

    def template(self, style: str) -> str:
        if style == "direct":
            return self.direct_template
        if style == "cot":
            return self.cot_template
        return style  # a literal template

    def render(self, question: str, style: str = "cot") -> str:
        return self.template(style).format(question=question, instruction=self.instruction)

    def extract(self, text: str) -> str | None:
        return self.answer.extract(text)

    def canonical(self, answer: str | None) -> str:
        return self.answer.canonical(answer)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return self.answer.equivalent(a, b)
