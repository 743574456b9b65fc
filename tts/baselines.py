"""Trivial baselines of a task: what a strategy must beat before its accuracy means anything.

A strategy that scores 0.49 on ``larger`` has learned nothing if answering "the first number" also
scores 0.49 on those problems. Every baseline here is computed on the actual problems (never a
hard-coded rate), as a per-problem expected score, so a strategy can be compared with it by a
paired bootstrap exactly as with another strategy:

- ``chance``: one of the problem's options picked uniformly at random (the fraction of its options
  that are correct), where the task has options: the two numbers of ``larger``, or a problem's
  ``choices`` / ``options`` metadata (multiple choice: 1/k);
- ``most frequent answer``: always answer the reference that is most frequent in this problem set
  (ties: the one seen first); it is fitted on the problems it scores, so it is an upper bound of
  what a constant answer gets;
- ``always first``: the problem's first option, or the first number in the question for tasks with
  numeric answers.

:func:`baseline_accuracies` gives ``(name, accuracy)`` pairs for tables (``run``'s summary, the
demo); :func:`baselines` gives the per-problem scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tts.answers import first_number
from tts.task import Task
from tts.types import Problem

__all__ = ["Baseline", "baseline_accuracies", "baselines", "options"]

_NUMERIC_FORMATS = ("math", "first_number", "last_number")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Baseline:
    """A trivial answering rule and its expected score on each problem (in problem order)."""

    name: str
    scores: tuple[float, ...]
    ids: tuple[str, ...] = ()
    """The problem ids of ``scores``, in the same order."""

    def by_id(self) -> dict[str, float]:
        return dict(zip(self.ids, self.scores, strict=True))

    @property
    def accuracy(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else float("nan")


def options(problem: Problem, task: Task) -> list[str] | None:
    """The answers a problem offers, or None when it offers none (free-form answers).

    Metadata ``choices`` / ``options`` (a list, or a mapping whose keys are the letters the
    references use); for the built-in ``larger`` task, the numbers in the question."""
    meta: dict[str, Any] = problem.metadata or {}
    for field in ("choices", "options"):
        value = meta.get(field)
        if isinstance(value, dict) and value:
            return [str(k) for k in value]
        if isinstance(value, list | tuple) and value:
            items = [str(v) for v in value]
            letters = [chr(ord("A") + i) for i in range(len(items))]
            ref = (problem.reference or "").strip().strip("()").upper()
            return (
                letters if ref in letters and not any(task.equivalent(i, problem.reference) for i in items) else items
            )
    if task.name == "larger":
        found = _NUMBER_RE.findall(problem.question)
        return found or None
    return None


def _correct(task: Task, answer: str | None, problem: Problem) -> float:
    """1 when ``answer`` is the reference: the same text (an option letter such as ``A``, which a
    text format reads as an article), or equivalent in the task's answer format."""
    if answer is None or problem.reference is None:
        return 0.0
    same = answer.strip().casefold() == problem.reference.strip().strip("()").casefold()
    return 1.0 if same or task.equivalent(answer, problem.reference) else 0.0


def baselines(problems: Sequence[Problem], task: Task) -> list[Baseline]:
    """The trivial baselines that apply to ``problems`` (those with a reference), each with its
    per-problem expected score; none when no problem has a reference."""
    scored = [p for p in problems if p.reference is not None]
    if not scored:
        return []
    ids = tuple(p.id for p in scored)
    out: list[Baseline] = []
    offered = [options(p, task) for p in scored]
    if all(offered):
        out.append(
            Baseline(
                "chance",
                tuple(
                    sum(_correct(task, o, p) for o in opts) / len(opts)
                    for p, opts in zip(scored, offered, strict=True)
                    if opts
                ),
                ids,
            )
        )
    counts: dict[str, tuple[int, str]] = {}
    for p in scored:
        key = task.canonical(p.reference)
        n, ref = counts.get(key, (0, p.reference or ""))
        counts[key] = (n + 1, ref)
    top = max(counts.values(), key=lambda v: v[0])[1]  # max keeps the first among equals
    out.append(Baseline("most frequent answer", tuple(_correct(task, top, p) for p in scored), ids))
    if all(offered):
        out.append(
            Baseline(
                "always first", tuple(_correct(task, o[0], p) for p, o in zip(scored, offered, strict=True) if o), ids
            )
        )
    elif task.answer_format in _NUMERIC_FORMATS and all(first_number(p.question) is not None for p in scored):
        out.append(
            Baseline("always first number", tuple(_correct(task, first_number(p.question), p) for p in scored), ids)
        )
    return out


def baseline_accuracies(problems: Sequence[Problem], task: Task) -> list[tuple[str, float]]:
    """``(name, accuracy)`` of each trivial baseline on ``problems`` (see the module docstring)."""
    return [(b.name, b.accuracy) for b in baselines(problems, task)]
