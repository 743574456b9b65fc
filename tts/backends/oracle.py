"""The fake backend as a pipeline configures it: scripted replies or the "oracle" simulator.

``backend: {name: fake, replies: {...}, default: ...}`` scripts the replies
(:class:`~tts.backends.fake.Scripted`); ``backend: {name: fake, oracle: {p_correct: ...}}`` is a
simulated model whose accuracy on each problem is known (:class:`OracleOptions`), so a study's
expected curves are known in closed form. The oracle needs the problems (their references and
accuracies): :func:`oracle_backend` returns the backend and the problems it marked with
``[oracle:ID]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from tts.backends.fake import FakeBackend, OracleModel, OracleSpec
from tts.errors import parse_options
from tts.types import Problem, Request

__all__ = ["FAKE_EXTRAS", "FakeExtras", "OracleOptions", "fake_backend", "oracle_backend"]


class OracleOptions(BaseModel):
    """``backend: {name: fake, oracle: {...}}``: a simulated model with known accuracy per problem.

    Problem i answers correctly with probability ``p_correct[i % len(p_correct)]`` (or its
    ``metadata["p_correct"]``), else one of ``wrong`` (default: four numbers near the reference);
    completions are ``length`` tokens long (uniform in the range). Each question gets an
    ``[oracle:ID]`` marker.
    """

    model_config = ConfigDict(extra="forbid")

    p_correct: float | list[float] = 0.5
    """Probability of a correct answer (one value, or one per problem, cycled)."""
    wrong: list[str] | None = None
    """Wrong answers to draw from (default: four numbers near the reference)."""
    wrong_weights: list[float] | None = None
    """Weights of ``wrong`` (default: uniform)."""
    length: tuple[int, int] = (64, 64)
    """Completion length in tokens (uniform in this range)."""
    logprob_correct: float = -0.3
    """Mean token logprob of correct completions."""
    logprob_wrong: float = -0.6
    """Mean token logprob of wrong completions."""
    logprob_noise: float = 0.15
    """Standard deviation of the mean logprob around those."""


class FakeExtras(BaseModel):
    """Options the fake backend takes in a pipeline besides its constructor's."""

    model_config = ConfigDict(extra="forbid")

    replies: dict[str, str | list[str]] | None = None
    """Prompt substring -> reply (or replies, cycled over samples)."""
    default: str | None = None
    """Reply to every prompt no ``replies`` key matches."""
    oracle: OracleOptions | None = None
    """A simulated model with known accuracy (replaces ``replies``/``default``)."""


FAKE_EXTRAS = tuple(FakeExtras.model_fields)


class _OracleReplies(OracleModel):
    """The oracle's answers as bare ``The answer is X.`` replies (any answer format reads them)."""

    def reply(self, request: Request, prompt: str, index: int, rng: Any) -> tuple[str, int, float | None]:
        text, tokens, lp = super().reply(request, prompt, index, rng)
        answer = text.rsplit("The answer is ", 1)[-1].rstrip(".")
        return f"The answer is {answer}.", tokens, lp


def _wrong_answers(reference: str | None, given: list[str] | None) -> tuple[str, ...]:
    if given:
        return tuple(given)
    try:
        value = int(float(str(reference)))
        return tuple(str(value + d) for d in (1, 2, 3, 4))
    except (TypeError, ValueError):
        return tuple(f"{reference}-{d}" for d in (1, 2, 3, 4))


def oracle_backend(
    oracle: OracleOptions | Mapping[str, Any], problems: Sequence[Problem], **options: Any
) -> tuple[FakeBackend, list[Problem]]:
    """A fake backend answering ``problems`` with the oracle's known accuracies, and the problems
    marked with ``[oracle:ID]`` (and their ``p_correct`` in metadata)."""
    spec = parse_options(OracleOptions, oracle, where="backend.oracle")
    model = _OracleReplies()
    ps = spec.p_correct if isinstance(spec.p_correct, list) else [spec.p_correct]
    out = []
    for i, p in enumerate(problems):
        pc = float(p.metadata.get("p_correct", ps[i % len(ps)]))
        model.specs[p.id] = OracleSpec(
            p_correct=pc,
            answer=str(p.reference),
            wrong=_wrong_answers(p.reference, spec.wrong),
            wrong_weights=tuple(spec.wrong_weights) if spec.wrong_weights else None,
            length=(spec.length[0], spec.length[1]),
            logprob_correct=spec.logprob_correct,
            logprob_wrong=spec.logprob_wrong,
            logprob_noise=spec.logprob_noise,
        )
        question = p.question if f"[oracle:{p.id}]" in p.question else f"[oracle:{p.id}] {p.question}"
        out.append(Problem(p.id, question, p.reference, {**p.metadata, "p_correct": pc}))
    return FakeBackend(model, **options), out


def fake_backend(
    options: Mapping[str, Any], problems: Sequence[Problem] | None = None
) -> tuple[FakeBackend, list[Problem] | None]:
    """The fake backend of a pipeline's options: the oracle, scripted replies, or the plain fake;
    with the problems as the backend needs them (the oracle marks them)."""
    rest = {k: v for k, v in options.items() if k not in FAKE_EXTRAS}
    extras = parse_options(FakeExtras, {k: v for k, v in options.items() if k in FAKE_EXTRAS}, where="backend")
    if extras.oracle is not None:
        backend, marked = oracle_backend(extras.oracle, list(problems or []), **rest)
        return backend, marked
    if extras.replies is not None or extras.default is not None:
        return FakeBackend.scripted(by_prompt=extras.replies, default=extras.default, **rest), list(
            problems
        ) if problems is not None else None
    return FakeBackend(**rest), list(problems) if problems is not None else None
