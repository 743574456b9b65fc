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
    "model_type": "must be a mapping",
}


def _model_at(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel] | None:
    """The pydantic model class found by following ``parts`` from ``model`` (None if not a model)."""
    for part in parts:
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem, ``field.path must be >= 1, got 0.``, without pydantic's boilerplate.

    Unknown keys get a "did you mean" suggestion when ``model`` (the validated class) is given.
    """
    import difflib

    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        loc = ".".join([prefix, *parts] if prefix else parts)
        msg = str(err["msg"])
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead) :]
        etype = err["type"]
        if etype == "extra_forbidden":
            msg = "is not a known field; remove it or check the spelling"
            owner = _model_at(model, parts[:-1])
            if owner is not None:
                close = difflib.get_close_matches(parts[-1], list(owner.model_fields), n=1)
                msg = (f"is not a known field; did you mean {close[0]!r}?" if close
                       else f"is not a known field; valid fields: {', '.join(owner.model_fields)}")
        elif etype == "missing":
            msg = "is required; add it"
        elif etype in _PHRASES:
            msg = _PHRASES[etype].format(**err.get("ctx", {})) + f", got {err.get('input')!r}."
        if parts and msg.startswith(parts[-1] + " "):
            # validators already name their field: "top_p must be in (0, 1], got 1.5."
            head = ".".join([prefix, *parts[:-1]] if prefix else parts[:-1])
            lines.append(f"{head}.{msg}" if head else msg)
        elif loc and re.match(r"^\w+ (?:must |is not a known field|is required)", msg):
            # a nested model's own message ("temperature must be ..."): join it to the path
            lines.append(f"{loc}.{msg}")
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
