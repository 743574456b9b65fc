"""Prompt sets of step-level search: how to ask for next steps, judge a state and write the answer.

A prompt set (:class:`SearchPrompts`) holds the templates of the ``propose`` generator and the
``value`` and ``vote`` evaluators (placeholders ``{question}``, ``{steps}``, ``{state}``, ``{k}``,
``{choices}``, filled by :func:`tts.prompts.fill`) and two task rules: what a partial path's
*state* is (the text the value prompt judges) and when the next step is the answer step (written
with the ``answer`` template, one sample).

- ``generic``: any task; the state is the path so far; no special answer step.
- ``game24``: the Tree-of-Thoughts paper's prompts for the Game of 24 (Yao et al., 2023): a step
  is ``a op b = c (left: ...)``, the state is the numbers left, a node is valued sure / likely /
  impossible from those numbers, and once one number is left (or the depth limit is near) the
  answer step writes the whole expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tts.errors import ConfigError
from tts.types import Problem

__all__ = ["GAME24", "GENERIC", "PROMPT_SETS", "SearchPrompts", "game24_left", "prompt_set"]


@dataclass(frozen=True)
class SearchPrompts:
    """Templates and task rules of one prompt set (see the module docstring)."""

    name: str
    propose: str
    value: str
    vote: str
    answer: str = ""
    values: Mapping[str, float] = field(default_factory=lambda: {"sure": 20.0, "likely": 1.0, "impossible": 0.001})
    """Value of each verdict word (the paper's numbers); a reply without one is worth the lowest."""
    proposal: str = r"\S"
    """A regular expression a proposed line must contain to count as a step."""

    def state(self, problem: Problem, steps: Sequence[str]) -> str:
        """What the value prompt judges: the path so far (or the question at the root)."""
        return "\n".join(steps) if steps else problem.question

    def answer_next(self, problem: Problem, steps: Sequence[str], max_depth: int) -> bool:
        """Whether the next step is the answer step (written with ``answer``); never without one."""
        return False

    def proposals(self, text: str, k: int) -> list[str]:
        """The first ``k`` proposed steps of a ``propose`` reply (one per line)."""
        pattern = re.compile(self.proposal)
        lines = [line.strip() for line in text.splitlines()]
        return [line for line in lines if line and pattern.search(line)][:k]

    def verdict(self, text: str) -> float:
        """A value reply's worth: the verdict word on its last line that has one."""
        for line in reversed(text.strip().lower().splitlines()):
            for word, value in self.values.items():
                if word in line:
                    return value
        return min(self.values.values())


GENERIC = SearchPrompts(
    name="generic",
    propose="{question}\n\nSteps so far:\n{steps}\n\nPropose {k} different possible next steps, one per line, "
    "without numbering.",
    value="{question}\n\nPartial solution:\n{state}\n\nCan this partial solution still lead to a correct answer? "
    "Reply with one word: sure, likely or impossible.",
    vote="{question}\n\nWhich partial solution is most promising?\n{choices}\n\nAnalyse each choice, then end "
    'with "The best choice is N".',
)


# ------------------------------------------------------------------------------------ Game of 24

_G24_PROPOSE = """Input: 2 8 8 14
Possible next steps:
2 + 8 = 10 (left: 8 10 14)
8 / 2 = 4 (left: 4 8 14)
14 + 2 = 16 (left: 8 8 16)
2 * 8 = 16 (left: 8 14 16)
8 - 2 = 6 (left: 6 8 14)
14 - 8 = 6 (left: 2 6 8)
14 / 2 = 7 (left: 7 8 8)
14 - 2 = 12 (left: 8 8 12)
Input: {state}
Possible next steps:
"""

_G24_VALUE = """Evaluate if given numbers can reach 24 (sure/likely/impossible)
10 14
10 + 14 = 24
sure
11 12
11 + 12 = 23
12 - 11 = 1
11 * 12 = 132
11 / 12 = 0.91
impossible
4 4 10
4 + 4 + 10 = 8 + 10 = 18
4 * 10 - 4 = 40 - 4 = 36
(10 - 4) * 4 = 6 * 4 = 24
sure
5 7 8
5 + 7 + 8 = 12 + 8 = 20
(8 - 5) * 7 = 3 * 7 = 21
I cannot obtain 24 now, but numbers are within a reasonable range
likely
10 10 11
10 + 10 + 11 = 31
(11 - 10) * 10 = 10
10 10 10 are all too big
impossible
1 3 3
1 * 3 * 3 = 9
(1 + 3) * 3 = 12
1 3 3 are all too small
impossible
{state}
"""

_G24_VOTE = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Given the input and several \
choices of steps so far, decide which choice is most promising. Analyze each choice in detail, then conclude in \
the last line "The best choice is {s}", where s the integer id of the choice.
Input: {question}
{choices}
"""

_G24_ANSWER = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Each step, you are only \
allowed to choose two of the remaining numbers to obtain a new number.
Input: 4 4 6 8
Steps:
4 + 8 = 12 (left: 4 6 12)
6 - 4 = 2 (left: 2 12)
2 * 12 = 24 (left: 24)
Answer: (6 - 4) * (4 + 8) = 24
Input: 2 9 10 12
Steps:
12 * 2 = 24 (left: 9 10 24)
10 - 9 = 1 (left: 1 24)
24 * 1 = 24 (left: 24)
Answer: (12 * 2) * (10 - 9) = 24
Input: {numbers}
Steps:
{steps}
"""

_LEFT = re.compile(r"left:\s*([-\d.\s/]+)\)?", re.IGNORECASE)
_NUMBERS = re.compile(r"numbers?:\s*([\d\s,]+)", re.IGNORECASE)


def game24_left(problem: Problem, steps: Sequence[str]) -> str:
    """The numbers left after ``steps``: the last step's ``(left: ...)``, else the puzzle's numbers."""
    for step in reversed(steps):
        m = _LEFT.search(step)
        if m:
            return " ".join(m.group(1).split())
    m = _NUMBERS.search(problem.question)
    return " ".join(m.group(1).replace(",", " ").split()) if m else problem.question.strip()


@dataclass(frozen=True)
class _Game24(SearchPrompts):
    def state(self, problem: Problem, steps: Sequence[str]) -> str:
        return game24_left(problem, steps)

    def answer_next(self, problem: Problem, steps: Sequence[str], max_depth: int) -> bool:
        return bool(steps) and (len(game24_left(problem, steps).split()) <= 1 or len(steps) >= max_depth - 1)


GAME24 = _Game24(
    name="game24",
    propose=_G24_PROPOSE,
    value=_G24_VALUE,
    vote=_G24_VOTE,
    answer=_G24_ANSWER,
    proposal=r"=.*left:",
)

PROMPT_SETS: dict[str, SearchPrompts] = {p.name: p for p in (GENERIC, GAME24)}


def prompt_set(name: str) -> SearchPrompts:
    """The prompt set called ``name``."""
    if name not in PROMPT_SETS:
        raise ConfigError(f"prompts must be one of {', '.join(sorted(PROMPT_SETS))}, got {name!r}.")
    return PROMPT_SETS[name]
