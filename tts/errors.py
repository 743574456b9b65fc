"""The one exception hierarchy of tts-scale.

Every error the library raises on purpose derives from :class:`TTSError`; messages are one line that
names the field or component and says the fix.

- :class:`TTSError`: base class.
  - :class:`ConfigError` (also a ``ValueError``): invalid options, sampling parameters, pipeline or
    dataset specification. The CLI exits with code 2 on these.
    - :class:`UnsupportedControl`: a backend was asked for a control it does not have (a constraint,
      token-level beam search, logprobs, ...). The message names the control and the backends
      that support it.
  - :class:`DatasetError` (a ``ConfigError``): a dataset cannot be found or parsed.
  - :class:`ModelNotFound` (a ``ConfigError``): model weights are missing; says how to get them.
  - :class:`BackendError`: the engine failed at run time (crash, server error after retries).
    - :class:`RequestTimeout`: a request exceeded its time limit.
  - :class:`BudgetExceeded`: a token, call, time or cost budget ran out.
  - :class:`Cancelled`: awaiting a handle whose
    request was cancelled.

Runtime failures (``BackendError``, ``BudgetExceeded``) make the CLI exit with code 1.

Validation errors of pydantic models become one line through :func:`format_validation_error`
(``field.path must be >= 1, got 0.``, with "did you mean" for unknown keys);
:func:`parse_options` is the one way components validate their options.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "BackendError",
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "DatasetError",
    "ModelNotFound",
    "RequestTimeout",
    "TTSError",
    "UnsupportedControl",
    "format_validation_error",
    "parse_options",
]

M = TypeVar("M", bound=BaseModel)


class TTSError(Exception):
    """Base class of every error tts-scale raises on purpose."""


class ConfigError(TTSError, ValueError):
    """Invalid configuration: the message names the field and the fix."""


class UnsupportedControl(ConfigError):
    """A backend lacks a requested control (constraint, beam search, logprobs, ...)."""


class DatasetError(ConfigError):
    """A dataset cannot be found or parsed."""


class ModelNotFound(ConfigError):
    """Model weights are missing; the message says how to get them."""


class BackendError(TTSError):
    """The engine failed at run time."""


class RequestTimeout(BackendError):
    """A request exceeded its time limit."""


class BudgetExceeded(TTSError):
    """A token, call, wall-time or cost budget is exhausted."""


class Cancelled(TTSError):
    """The request behind an awaited handle was cancelled."""


# ------------------------------------------------------------------ validation messages

_PHRASES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be {expected}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "int_from_float": "must be an integer",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "model_type": "must be a mapping",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation holds: itself, the members of a union
    (``Pricing | None``) and the items of lists, tuples and dict values."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += [m for m in _models_in(arg) if m not in out]
    return out


def _model_at(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel] | None:
    """The pydantic model class found by following ``parts`` from ``model`` (None if not a model);
    optional models (``X | None``) and list items (``verifiers.0``) are looked into."""
    for part in parts:
        if model is None or part.isdigit():  # a list index: the item type was already taken
            continue
        if part not in model.model_fields:
            return None
        found = _models_in(model.model_fields[part].annotation)
        model = found[0] if len(found) == 1 else None
    return model


def _component_options(field: Any) -> type[BaseModel] | None:
    """The options model of a component-typed field's default (``proposer: few_shot``)."""
    kind = getattr(field.annotation, "kind", None)
    if not isinstance(kind, str):
        return None
    try:
        default = field.get_default(call_default_factory=True)
        name = default.get("name") if isinstance(default, dict) else getattr(default, "name", None)
        from tts.registry import REGISTRY

        opts = getattr(REGISTRY.get(kind, name), "Options", None) if isinstance(name, str) else None
    except Exception:  # an unknown or uninstalled component: no hint
        return None
    return opts if isinstance(opts, type) and issubclass(opts, BaseModel) else None


def _homes_of(model: type[BaseModel], key: str, depth: int = 3) -> list[str]:
    """Where ``key`` is a field below ``model`` (``proposer.sampling.temperature``): under the
    proposer or ``sampling`` first (where sampling keys usually belong), then the shortest paths."""
    found: list[tuple[bool, int, str]] = []
    level: list[tuple[str, type[BaseModel]]] = [("", model)]
    for d in range(depth):
        nxt: list[tuple[str, type[BaseModel]]] = []
        for path, m in level:
            for fname, field in m.model_fields.items():
                # a component field (``proposer``) is looked into through its options only: its
                # spec's own keys (``limits``) are where a misplaced sampling key least belongs
                opts = _component_options(field)
                for sub in [opts] if opts is not None else _models_in(field.annotation):
                    sub_path = f"{path}{fname}."
                    if key in sub.model_fields:
                        found.append((not sub_path.startswith(("proposer.", "sampling.")), d, sub_path + key))
                    nxt.append((sub_path, sub))
        level = nxt
    return [path for *_, path in sorted(found)]


def _unknown_key(model: type[BaseModel] | None, parts: list[str], head: str) -> str:
    """The message for an unknown key: where it belongs, or the closest known field."""
    import difflib

    owner = _model_at(model, parts[:-1])
    if owner is None:
        return "is not a known field; remove it or check the spelling"
    homes = [f"{head + '.' if head else ''}{h}" for h in _homes_of(owner, parts[-1])[:2]]
    if homes:
        return f"is not a known field here; write {' (or '.join(homes)}{')' if len(homes) > 1 else ''}"
    close = difflib.get_close_matches(parts[-1], list(owner.model_fields), n=1)
    if close:
        return f"is not a known field; did you mean {close[0]!r}?"
    return f"is not a known field; valid fields: {', '.join(owner.model_fields)}"


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a huge value must not become a huge message)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    short.maxlevel = 2
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names_field(model: type[BaseModel] | None, parts: list[str], msg: str) -> bool:
    """Whether ``msg`` starts with a field of the model at ``parts`` (so it joins that path), or
    nothing is known about the model (the message is taken to name one)."""
    if model is None or re.match(r"^\w+ (?:is not a known field|is required)", msg):
        return True
    inner = _model_at(model, parts)
    return inner is not None and msg.split(" ", 1)[0] in inner.model_fields


_UNION_TAG_RE = re.compile(r"^(?:[A-Z]\w*|int|str|float|bool|none|bytes|[a-z-]+\[.*\]|constrained-\w+)$")
"""A union member's tag in an error's location (``constrained-int``, ``literal['auto']``, a model's
class name): pydantic reports one error per member it tried."""
_TYPE_LEVEL = ("literal_error", "model_type", "dict_type", "is_instance_of", "none_required")


def _merge_union_errors(errors: list[Any]) -> list[Any]:
    """One error per field of a union (``int | Literal['auto']``): a broken constraint of the member
    the value fits (``must be <= 65536``) wins; when the value fits no member, the members' needs
    are joined (``must be an integer or 'auto'``). Member tags are dropped from locations."""
    out: list[Any] = []
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG_RE.match(p)))
        if len(loc) == len(err["loc"]):
            out.append(err)
            continue
        if loc not in groups:
            groups[loc] = []
            out.append(loc)  # a placeholder keeping the group's place
        groups[loc].append({**err, "loc": loc})
    merged: list[Any] = []
    for item in out:
        if not isinstance(item, tuple):
            merged.append(item)
            continue
        members = groups[item]
        fitting = [e for e in members if not (e["type"].endswith(("_type", "_parsing")) or e["type"] in _TYPE_LEVEL)]
        if fitting or len(members) == 1:
            merged.append((fitting or members)[0])
            continue
        needs = [_PHRASES.get(e["type"], "").format(**e.get("ctx", {})).removeprefix("must be ") for e in members]
        if all(needs):
            msg = f"must be {' or '.join(dict.fromkeys(needs))}, got {_short(members[0].get('input'))}."
            merged.append({**members[0], "type": "union_mismatch", "msg": msg})
        else:
            merged.append(members[0])
    return merged


def format_validation_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem, ``field.path must be >= 1, got 0.``, without pydantic's boilerplate.

    Unknown keys get a "did you mean" suggestion when ``model`` (the validated class) is given.
    """
    lines = []
    for err in _merge_union_errors(exc.errors()):
        parts = [str(p) for p in err["loc"]]
        loc = ".".join([prefix, *parts] if prefix else parts)
        msg = str(err["msg"])
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead) :]
        etype = err["type"]
        if etype == "extra_forbidden":
            msg = _unknown_key(model, parts, ".".join([prefix, *parts[:-1]] if prefix else parts[:-1]))
        elif etype == "missing":
            msg = "is required; add it"
        elif etype in _PHRASES:
            msg = _PHRASES[etype].format(**err.get("ctx", {})) + f", got {_short(err.get('input'))}."
        if parts and msg.startswith(parts[-1] + " "):
            # validators already name their field: "top_p must be in (0, 1], got 1.5."
            head = ".".join([prefix, *parts[:-1]] if prefix else parts[:-1])
            lines.append(f"{head}.{msg}" if head else msg)
        elif loc and re.match(r"^\w+ (?:must |is not a known field|is required)", msg):
            # a nested model's own message ("temperature must be ..."): join it to the path; a
            # message that names something else ("templates must ...") follows the path after ": "
            lines.append(f"{loc}.{msg}" if _names_field(model, parts, msg) else f"{loc}: {msg}")
        elif loc:
            lines.append(f"{loc} {msg}")
        else:
            lines.append(msg)
    return "; ".join(lines)


def parse_options(model: type[M], data: Mapping[str, Any] | BaseModel | None = None, *, where: str = "") -> M:
    """``model`` validated from ``data``; a failure is one :class:`ConfigError` line prefixed by
    ``where`` (``"strategy self_consistency: n must be >= 1, got 0."``). An instance passes through."""
    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump(exclude_unset=True, by_alias=True)
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        msg = format_validation_error(exc, model=model)
        raise ConfigError(f"{where}: {msg}" if where else msg) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
