"""Components: the one spec shape of everything a pipeline names, and the one function that builds it.

A component (strategy, verifier, proposer, retriever, backend) is written ``{name, options...,
limits}``: ``name`` is its registered name (:data:`tts.registry.REGISTRY`), ``limits`` a per-stage
budget (:class:`~tts.limits.Limits`), and every other key is one of its options, validated by the
component's pydantic ``Options`` model. A bare string is a name with default options
(``verifier: math``). Options nested under an ``options:`` mapping (an older shape) are refused
with the flat shape in the message.

Fields a spec class declares besides ``name`` and ``limits`` describe the *reference*, not the
component, and are not options: a :class:`VerifierSpec` carries the verifier's ``weight`` in a
combination, an ensemble member may add its own (``class MemberSpec(StrategySpec): weight ...``).

**Nested components** are found from types, never guessed: an ``Options`` field typed
:class:`ComponentSpec` (or a kind's subclass: :class:`StrategySpec`, :class:`VerifierSpec`,
:class:`ProposerSpec`, :class:`RetrieverSpec`; in tuples, lists, dict values or nested models)
holds specs after validation, and :func:`validate_component` recurses into them with their key
path, so errors read ``strategy.inner.n must be >= 1, got 0.``. The component builds its parts
with :func:`build_component` in its ``__init__``::

    class EnsembleOptions(BaseModel):
        members: tuple[StrategySpec, ...]

    class Ensemble:
        def __init__(self, options=None, **kw):
            self.options = options or parse_options(EnsembleOptions, kw, where="strategy ensemble")
            self.members = [build_component(m, "strategy") for m in self.options.members]

:func:`build_component` passes objects that are already built through unchanged, so Python
recipes can hand over instances where a field allows them. A spec with ``limits`` builds a
:class:`Stage`: each call of the component runs in ``ctx.limited(limits, name)``.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from tts.errors import ConfigError, format_validation_error
from tts.limits import Limits

if typing.TYPE_CHECKING:
    from tts.context import Context
    from tts.types import Problem, Result

__all__ = [
    "BackendSpec",
    "ComponentSpec",
    "ProposerSpec",
    "RetrieverSpec",
    "SpecError",
    "Stage",
    "StrategySpec",
    "VerifierSpec",
    "as_spec",
    "build_component",
    "field_kind",
    "options_model",
    "resolve_component",
    "validate_component",
]

Loc = tuple[str, ...]
T = TypeVar("T")
COMPONENT_KINDS = ("strategy", "verifier", "proposer", "retriever", "backend")
"""Kinds a :class:`ComponentSpec` without a fixed kind may name (in this order of search)."""


class SpecError(ConfigError):
    """A configuration error at a known place: ``loc`` is the key path (``("strategy", "n")``)."""

    def __init__(self, message: str, loc: Loc = ()) -> None:
        super().__init__(message)
        self.loc = loc


class ComponentSpec(BaseModel):
    """``{name, options..., limits}``: a registered component by ``name``; every key the spec class
    does not declare is one of the component's options. A bare string is a name."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: ClassVar[str | None] = None
    """Registry kind of the name; ``None`` accepts any kind whose registry has the name."""

    name: str
    """The registered name (``self_consistency``, ``math``, ``hf``, ...)."""
    limits: Limits | None = None
    """A per-stage budget: every call of this component is checked against it."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def options(self) -> dict[str, Any]:
        """The component's options (every key the spec class does not declare)."""
        return dict(self.model_extra or {})


class StrategySpec(ComponentSpec):
    """A registered strategy."""

    kind: ClassVar[str | None] = "strategy"


class VerifierSpec(ComponentSpec):
    """A registered verifier, with its weight when several verifiers are combined."""

    kind: ClassVar[str | None] = "verifier"

    weight: float = Field(default=1.0, allow_inf_nan=False)
    """Weight of this verifier's score in a weighted sum (not an option of the verifier)."""


class ProposerSpec(ComponentSpec):
    """A registered proposer (how candidates are sampled: ``few_shot``, ``program_of_thought``, ...)."""

    kind: ClassVar[str | None] = "proposer"


class RetrieverSpec(ComponentSpec):
    """A registered retriever."""

    kind: ClassVar[str | None] = "retriever"


class BackendSpec(ComponentSpec):
    """The engine: ``{name: hf, model: ..., dtype: float32}``; keys other than ``name`` and
    ``quantize`` are the backend's options."""

    kind: ClassVar[str | None] = "backend"

    name: str = "hf"
    """Backend name: hf, fake, vllm, openai (or a plugin's)."""
    quantize: typing.Literal["int8", "int8_mixed"] | None = None
    """hf only: torch dynamic int8 quantization of the loaded model's linear layers
    (``int8_mixed`` keeps lm_head and the first and last blocks in full precision)."""


_SPEC_CLASSES: dict[str, type[ComponentSpec]] = {
    "strategy": StrategySpec,
    "verifier": VerifierSpec,
    "proposer": ProposerSpec,
    "retriever": RetrieverSpec,
    "backend": BackendSpec,
}


def as_spec(value: Any, kind: str | None = None) -> ComponentSpec:
    """``value`` (a spec, a mapping or a bare name) as a :class:`ComponentSpec` of ``kind``."""
    if isinstance(value, ComponentSpec):
        return value
    spec_cls = _SPEC_CLASSES.get(kind or "", ComponentSpec)
    try:
        return spec_cls.model_validate(value)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, prefix=kind or ""), _loc(exc)) from None


def _loc(exc: ValidationError) -> Loc:
    return tuple(str(p) for p in exc.errors()[0]["loc"])


# ------------------------------------------------------------------------------------ validation


def options_model(cls: type) -> type[BaseModel]:
    """The pydantic model of ``cls``'s options: its ``Options`` class (every component has one)."""
    opts = getattr(cls, "Options", None)
    if isinstance(opts, type) and issubclass(opts, BaseModel):
        return opts
    raise ConfigError(
        f"{cls.__module__}.{cls.__qualname__} has no Options model; give the component a "
        "pydantic `Options` class (extra='forbid') and an `__init__(self, options=None, **kw)`."
    )


def _lookup(name: str, kind: str | None, name_loc: Loc) -> tuple[str, type]:
    from tts.registry import REGISTRY

    key = ".".join(name_loc)
    kinds = (kind,) if kind else COMPONENT_KINDS
    found = [k for k in kinds if name in REGISTRY.names(k)]
    if len(found) > 1:
        raise SpecError(
            f"{key} {name!r} is a {' and a '.join(found)}; type the field as StrategySpec, "
            "VerifierSpec, ProposerSpec or RetrieverSpec.",
            name_loc,
        )
    if not found:
        names = sorted({n for k in kinds for n in REGISTRY.names(k)})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"{key} must be a registered {kind or 'component'} ({', '.join(names)}), got {name!r}{hint}", name_loc
        )
    return found[0], REGISTRY.get(found[0], name)


def field_kind(model: type[BaseModel], field: str) -> str | None:
    """The component kind an options field holds when its type is a spec (``ProposerSpec``,
    ``VerifierSpec | None``); ``None`` for any other field."""
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, ComponentSpec):
            return candidate.kind
    return None


def nested_specs(value: Any, loc: Loc) -> list[tuple[ComponentSpec, Loc]]:
    """The component specs inside a validated option value: the value itself, the items of tuples
    and lists, dict values and the fields of nested models (what the field types made specs)."""
    if isinstance(value, ComponentSpec):
        return [(value, loc)]
    out: list[tuple[ComponentSpec, Loc]] = []
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += nested_specs(v, (*loc, str(i)))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += nested_specs(v, (*loc, str(k)))
    elif isinstance(value, BaseModel):
        for fname in type(value).model_fields:
            out += nested_specs(getattr(value, fname), (*loc, fname))
    return out


def _refuse_old_shapes(name: str, model: type[BaseModel], raw: Mapping[str, Any], loc: Loc) -> None:
    """Refuse, in one line that shows the new shape, how nested components were written before:
    ``verifier_options`` beside ``verifier: NAME``, and options nested under ``options:``."""
    path = ".".join(loc) or "component"
    if "verifier_options" in raw and "verifier_options" not in model.model_fields:
        verifier = raw.get("verifier") if isinstance(raw.get("verifier"), str) else "math"
        shape = (
            f"verifiers: [{{name: {verifier}, ...}}]"
            if "verifiers" in model.model_fields
            else f"verifier: {{name: {verifier}, ...}}"
        )
        raise SpecError(
            f"{path}.verifier_options is the old shape; write the verifier as one component: {shape}",
            (*loc, "verifier_options"),
        )
    nested = raw.get("options")
    if isinstance(nested, Mapping) and "options" not in model.model_fields:
        keys = "".join(f", {k}: ..." for k in nested) or ", ..."
        raise SpecError(
            f"{path}.options is the old shape; write the options beside the name: {{name: {name}{keys}}}",
            (*loc, "options"),
        )


def validate_component(
    spec: Any, kind: str | None = None, loc: Loc = (), model: type[BaseModel] | None = None
) -> tuple[type, BaseModel]:
    """Look ``spec.name`` up in the registry and validate its options (and every nested component)
    with the class's ``Options`` (or ``model`` when given).

    Returns ``(class, validated options)``; raises :class:`SpecError` whose message starts with the
    dotted key path (``strategy.inner.n must be >= 1, got 0.``) and whose ``loc`` is that path.
    """
    spec = as_spec(spec, kind)
    _, cls = _lookup(spec.name, kind or spec.kind, (*loc, "name"))
    model = model or options_model(cls)
    opt_loc = loc
    raw = spec.options()
    _refuse_old_shapes(spec.name, model, raw, opt_loc)
    path = ".".join(opt_loc) or (kind or spec.kind or "component")
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        at = _loc(exc)
        first = str(exc.errors()[0]["msg"]).removeprefix("Value error, ").split(" ", 1)[0]
        if not at and first in raw:  # a whole-model check that names a key: point at that key's line
            at = (first,)
        raise SpecError(format_validation_error(exc, prefix=path, model=model), (*opt_loc, *at)) from None
    except SpecError:
        raise
    except ConfigError as exc:  # validators that raise ConfigError themselves
        raise SpecError(f"{path}: {exc}", opt_loc) from None
    for fname in type(options).model_fields:
        for child, cloc in nested_specs(getattr(options, fname), (*opt_loc, fname)):
            validate_component(child, child.kind, cloc)
    return cls, options


def resolve_component(spec: Any, kind: str | None = None) -> dict[str, Any]:
    """``{name, **options}`` with every default filled in, nested components resolved too (what a
    study's manifest records)."""
    spec = as_spec(spec, kind)
    _, options = validate_component(spec, kind or spec.kind, ())
    out: dict[str, Any] = {"name": spec.name}
    declared = {k: getattr(spec, k) for k in type(spec).model_fields if k not in ("name", "limits")}
    out.update({k: v for k, v in declared.items() if v is not None})
    dumped = options.model_dump(mode="json", by_alias=True)
    for fname, field in type(options).model_fields.items():
        value = getattr(options, fname)
        if nested_specs(value, ()):
            out[fname] = _resolve_value(value)
        else:
            out[fname] = dumped.get(field.alias or fname, dumped.get(fname))
    out.update({k: v for k, v in (options.model_extra or {}).items() if k not in out})
    if spec.limits is not None:
        out["limits"] = spec.limits.model_dump(exclude_none=True)
    return out


def _resolve_value(value: Any) -> Any:
    if isinstance(value, ComponentSpec):
        return resolve_component(value, value.kind)
    if isinstance(value, (list, tuple)):
        return [_resolve_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_value(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return {f: _resolve_value(getattr(value, f)) for f in type(value).model_fields}
    return value


# ------------------------------------------------------------------------------------ building


def build_component(spec: Any, kind: str | None = None) -> Any:
    """The object a component spec describes: a strategy, verifier, proposer, retriever or backend.

    Accepts a :class:`ComponentSpec`, a mapping ``{name: ..., **options}``, a bare name, or an
    object that is already built (returned as is). The class comes from the registry; its options
    are validated by its ``Options`` model and it is constructed as ``cls(options)``. A spec with
    active ``limits`` gives a :class:`Stage`. Errors are one-line :class:`~tts.errors.ConfigError`.
    """
    if not isinstance(spec, (ComponentSpec, Mapping, str)):
        return spec
    spec = as_spec(spec, kind)
    cls, options = validate_component(spec, kind or spec.kind, (kind or spec.kind or "component",))
    obj = cls(options)
    if spec.limits is not None and spec.limits.active():
        return Stage(obj, spec.limits, spec.name)
    return obj


class Stage:
    """A component run under per-stage :class:`~tts.limits.Limits`: each call of ``solve``,
    ``score``, ``propose`` or ``drawer`` runs in its own ``ctx.limited(limits, label)`` (the context
    admits every request against the stage's limits and the ones above, and charges the spend to
    all of them), and within the stage's wall time. The limits hold for what the stage spends on
    one problem over all its calls (one budget per stage per problem); every other attribute is
    the component's."""

    def __init__(self, inner: Any, limits: Limits, label: str) -> None:
        self.inner = inner
        self.limits = limits
        self.label = label

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":  # not set yet (copying, unpickling)
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    async def _run(self, ctx: Context, call: Callable[[Context], Awaitable[T]]) -> T:
        child = ctx.limited(self.limits, self.label, key=id(self))
        return await child.within(call(child))

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        return await self._run(ctx, lambda c: self.inner.solve(problem, c))

    async def score(self, problem: Problem, candidates: Any, ctx: Context | None = None) -> Any:
        if ctx is None:  # a rule verifier called without a context makes no engine calls
            return await self.inner.score(problem, candidates, None)
        return await self._run(ctx, lambda c: self.inner.score(problem, candidates, c))

    async def propose(self, problem: Problem, ctx: Context, *args: Any, **kw: Any) -> Any:
        return await self._run(ctx, lambda c: self.inner.propose(problem, c, *args, **kw))

    async def drawer(self, problem: Problem, ctx: Context) -> Any:
        return await self.inner.drawer(problem, ctx.limited(self.limits, self.label, key=id(self)))
