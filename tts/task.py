"""What a task asks of the model: prompt templates, the answer format instruction, and which answer
format (:mod:`tts.answers`) extracts its answers, keys them for voting and compares them with the
reference.

A :class:`Task` travels in the :class:`~tts.context.Context`, so strategies stay task-agnostic: a
proposer renders ``task.template(style)`` (with :func:`tts.prompts.fill`, the one template engine)
and parses completions with ``task.extract``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tts.answers import ANSWER_FORMATS, AnswerFormat
from tts.prompts import fill

__all__ = ["ANSWER_FORMATS", "AnswerFormat", "Task"]

PromptStyle = Literal["direct", "cot"]


@dataclass(frozen=True)
class Task:
    """Prompting and answer handling for one kind of problem.

    Templates use ``{question}`` and ``{instruction}``; ``instruction`` is the answer format
    instruction appended to every prompt. Other braces (``\\boxed{}``) are text.
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
        """The user prompt for ``question`` in ``style`` (``direct``, ``cot`` or a literal template)."""
        return fill(self.template(style), question=question, instruction=self.instruction)

    def extract(self, text: str) -> str | None:
        return self.answer.extract(text)

    def canonical(self, answer: str | None) -> str:
        return self.answer.canonical(answer)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return self.answer.equivalent(a, b)
