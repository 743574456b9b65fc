"""Math answers judged against a reference, with math-verify (sympy) for what string rules leave open.

Extraction, canonical keys and the exact-arithmetic part of equivalence live in :mod:`tts.answers`
(tasks use them too). This module adds the symbolic step:

- :func:`equivalent` settles what :func:`tts.answers.settle` cannot (expressions, intervals, sets,
  tuples, rounding of decimals) with math-verify in a killable worker process under a hard time
  limit (see ``_worker.py`` for why a process). A timeout counts as "not equivalent" and never
  blocks the caller past the limit.
- :class:`MathVerifier` scores candidates against ``problem.reference`` with it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from tts.answers import canonical, extract_answer, normalise_latex, reference_answer, settle
from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score

from ._worker import SymbolicPool, WorkerUnavailable
from .base import VerifierCost, VerifierOptions, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = ["DEFAULT_TIMEOUT", "MathOptions", "MathVerifier", "equivalent"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
"""Seconds a symbolic comparison may take before it counts as "not equivalent"."""

_pool_lock = threading.Lock()
_pool: tuple[int, SymbolicPool] | None = None


def _symbolic_pool() -> SymbolicPool:
    """The process-wide worker pool, started on first use (a resource, like a thread pool).

    A forked child process gets a pool of its own: sharing the parent's worker pipes would mix
    up replies.
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            pool = SymbolicPool(workers=max(1, min(2, os.cpu_count() or 1)))
            atexit.register(pool.close)
            _pool = (os.getpid(), pool)
        return _pool[1]


@lru_cache(maxsize=65536)
def _symbolic_equal(gold: str, pred: str, timeout: float) -> bool:
    """math-verify's judgement in a worker process; raises WorkerUnavailable (not cached) when
    there is no worker, so a later call can try again."""
    verdict = _symbolic_pool().compare(gold, pred, timeout)
    if verdict == "timeout":
        logger.warning(
            "symbolic comparison of %.80r and %.80r took over %.1fs; judged not equivalent", gold, pred, timeout
        )
    return verdict == "equal"


def equivalent(a: str | None, b: str | None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when two answers are mathematically the same; ``a`` is the reference when there is one.

    :func:`tts.answers.settle` first (canonical keys, exact rational arithmetic with percent), then
    math-verify (sympy) in a worker process: expressions, intervals, sets, tuples, rounding of
    decimals. The symbolic step takes at most ``timeout`` seconds, from any thread; past it, or
    without a worker, the answer is False. Results are cached per pair.
    """
    if timeout <= 0:
        raise ConfigError(f"equivalent(timeout=...) must be > 0 seconds, got {timeout}.")
    verdict = settle(a, b)
    if verdict is not None or a is None or b is None:
        return bool(verdict)
    try:
        return _symbolic_equal(normalise_latex(a, keep_text=True), normalise_latex(b, keep_text=True), float(timeout))
    except WorkerUnavailable as exc:
        logger.error("cannot compare %.80r and %.80r symbolically (%s); judged not equivalent", a, b, exc)
        return False


# --------------------------------------------------------------------------------------------------
# Verifier
# --------------------------------------------------------------------------------------------------


class MathOptions(VerifierOptions):
    """Options of :class:`MathVerifier`."""

    reveal_reference: bool = False
    """Name the reference in feedback (it leaks the label to ``refine``)."""
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds a symbolic comparison may take before it counts as "not equivalent"."""


class MathVerifier:
    """Scores each candidate 1.0 when its answer is equivalent to ``problem.reference``, else 0.0.

    A candidate without a parsed answer is read again with :func:`tts.answers.extract_answer`.
    Feedback (what ``refine`` shows the model) says whether an answer was found and whether it is
    correct; it names the reference only with ``reveal_reference=True``, since showing it would
    leak the label.
    """

    name: ClassVar[str] = "math"
    Options = MathOptions

    def __init__(self, options: MathOptions | Mapping[str, Any] | None = None, **kw: Any) -> None:
        self.options = verifier_options(MathOptions, options, kw, self.name)
        self.cost = VerifierCost(kind="symbolic", calls=0, max_seconds=self.options.timeout)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        """One score per candidate, in order. Symbolic checks run in threads, concurrently, so the
        event loop never waits on sympy."""
        if problem.reference is None:
            raise ConfigError(
                f"MathVerifier needs a reference answer: problem {problem.id!r} has "
                "reference=None; set Problem(reference=...) or use a reference-free verifier."
            )
        reference = reference_answer(problem.reference)
        answers = [c.answer if c.answer is not None else extract_answer(c.text) for c in candidates]
        verdicts = await asyncio.gather(*(self._judge(reference, a) for a in answers))
        return [self._score(reference, a, ok) for a, ok in zip(answers, verdicts, strict=True)]

    async def _judge(self, reference: str, answer: str | None) -> bool:
        if answer is None:
            return False
        if canonical(reference) == canonical(answer):
            return True  # the common case, without a thread hop
        return await asyncio.to_thread(equivalent, reference, answer, self.options.timeout)

    def _score(self, reference: str, answer: str | None, ok: bool) -> Score:
        if answer is None:
            feedback = "No final answer found: end with \\boxed{answer} or 'The answer is X.'"
        elif self.options.reveal_reference:
            feedback = f"correct: {answer}" if ok else f"expected {reference}, got {answer}"
        else:
            feedback = f"The answer {answer} is correct." if ok else f"The answer {answer} is incorrect."
        return Score(value=1.0 if ok else 0.0, passed=ok, feedback=feedback, verifier=self.name)
