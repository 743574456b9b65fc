"""The verifier extension point: one protocol with one required method, and a declared cost.

A verifier judges candidates of one problem. It may be a pure rule (math equivalence, exact match),
run programs, or call the engine itself (reward models, LLM judges) through ``ctx`` (``ctx.generate``
/ ``ctx.submit``, never the backend). Studies count what verification costs, so every verifier
declares a :class:`VerifierCost`.

Every built-in verifier has an ``Options`` model (a :class:`VerifierOptions`: unknown keys and loose
types refused) and is built as ``Verifier(options)`` or ``Verifier(**options)``;
:func:`verifier_options` validates either into one :class:`~tts.errors.ConfigError` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tts.errors import ConfigError, parse_options
from tts.prompts import fill
from tts.types import Candidate, Problem, Score

if TYPE_CHECKING:  # tts.context imports tts.task, which imports this package: no runtime import
    from tts.context import Context

__all__ = [
    "AVerifier",
    "Verifier",
    "VerifierCost",
    "VerifierKind",
    "VerifierOptions",
    "build_verifier",
    "check_verifier",
    "cost_of",
    "fill_template",
    "verifier_options",
    "verifier_part",
]

OptionsT = TypeVar("OptionsT", bound=BaseModel)

VerifierKind = Literal["rule", "symbolic", "program", "model", "llm"]
"""How a verifier judges: ``rule`` (string rules, microseconds), ``symbolic`` (a CAS under a time
limit), ``program`` (runs code in a sandbox), ``model`` (a reward model forward pass), ``llm``
(generation calls: judge or self-verification)."""


class VerifierCost(BaseModel):
    """What judging one candidate costs, declared up front so studies can account for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: VerifierKind = Field(description="How the verifier judges (see VerifierKind).")
    calls: int = Field(default=0, ge=0, description="Engine (generation or scoring) calls per candidate.")
    max_seconds: float | None = Field(
        default=None, ge=0, description="Seconds per candidate at most, where the verifier enforces a limit."
    )


@runtime_checkable
class Verifier(Protocol):
    """Scores candidates of one problem; returns one :class:`~tts.types.Score` per candidate, in order.

    Implementations also expose a ``cost: VerifierCost`` attribute (read it with :func:`cost_of`).
    """

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]: ...


_UNKNOWN_COST = VerifierCost(kind="llm", calls=1)


def cost_of(verifier: object) -> VerifierCost:
    """The verifier's declared cost; a verifier that declares none is assumed to make one engine
    call per candidate, so studies never count an undeclared verifier as free."""
    cost = getattr(verifier, "cost", None)
    return cost if isinstance(cost, VerifierCost) else _UNKNOWN_COST


class VerifierOptions(BaseModel):
    """Base of every verifier's ``Options``: unknown keys refused, strict types (no ``"4"`` for a
    number, no ``True`` for an integer, no NaN), frozen."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True
    )


def verifier_options(
    model: type[OptionsT], options: Any, kw: Mapping[str, Any], name: str, *, first: str | None = None
) -> OptionsT:
    """A verifier's options from an ``Options`` instance (or a mapping) or keyword arguments, not
    both; any other positional value sets the field ``first`` (``QAVerifier("f1")`` is
    ``QAVerifier(metric="f1")``). Invalid options raise one :class:`~tts.errors.ConfigError` line
    naming the verifier."""
    if first is not None and options is not None and not isinstance(options, BaseModel | Mapping):
        options, kw = None, {first: options, **kw}
    if options is not None and kw:
        raise ConfigError(f"verifier {name}: pass options or keyword arguments, not both.")
    return parse_options(model, options if options is not None else kw, where=f"verifier {name}")


def check_verifier(v: Any) -> Any:
    """``v`` itself when it is a verifier (has a ``score`` method), else a ValueError."""
    if not callable(getattr(v, "score", None)):
        raise ValueError(f"{v!r} is not a verifier; pass objects with an async score() method")
    return v


def verifier_part(v: Any) -> Any:
    """``v`` validated as a combinator's part: a built verifier, or a verifier spec."""
    from tts.config.components import ComponentSpec, as_spec

    if isinstance(v, ComponentSpec):
        return v
    if isinstance(v, str | Mapping):
        return as_spec(v, "verifier")
    return check_verifier(v)


AVerifier = Annotated[Any, AfterValidator(verifier_part)]
"""An options field holding a part of a combinator: a built verifier, or a verifier spec (a name
or ``{name, options...}``, validated as a :class:`~tts.config.components.VerifierSpec`) that
:func:`build_verifier` builds."""


def build_verifier(part: Any) -> Any:
    """The verifier an :data:`AVerifier` field holds: built objects as they are, specs built by
    :func:`tts.config.components.build_component`."""
    from tts.config.components import build_component

    return build_component(part, "verifier")


_PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")


def fill_template(template: str, what: str, **fields: Any) -> str:
    """A verifier's prompt: ``template`` with its ``{name}`` placeholders filled by
    :func:`tts.prompts.fill` (other braces are text); a placeholder that is not one of ``fields``
    is a :class:`~tts.errors.ConfigError` naming ``what`` and the ones allowed."""
    unknown = sorted(set(_PLACEHOLDER_RE.findall(template)) - set(fields))
    if unknown:
        raise ConfigError(
            f"{what} template has an unknown placeholder {{{unknown[0]}}}; use only "
            f"{', '.join('{' + k + '}' for k in fields)}."
        )
    return fill(template, **fields)
