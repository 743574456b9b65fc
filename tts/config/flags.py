"""The command line's sampling flags written into a strategy spec, wherever the strategy keeps them.

``--n`` is the strategy's own ``n``; ``--temperature``, ``--max-tokens`` and ``--prompt`` go to
the strategy's ``sampling``/``prompt`` field when it has one, else to its proposer's (a field
typed ``ProposerSpec``), filling each missing level from the default so the rest is kept. A flag
that applies nowhere is a one-line :class:`~tts.errors.ConfigError`. A wrapper with none of these
(``rag``) passes the flags to the strategy it wraps (its field typed ``StrategySpec``).
"""

from __future__ import annotations

from typing import Any

from tts.errors import ConfigError

__all__ = ["strategy_spec"]


def _default(cls: Any, field: str) -> Any:
    value = cls.Options.model_fields[field].get_default(call_default_factory=True)
    return value.model_dump(by_alias=True, exclude_unset=True) if hasattr(value, "model_dump") else value


def _nested_set(options: dict[str, Any], cls: Any, path: tuple[str, ...], value: Any) -> None:
    """Set ``options[path]``, filling each missing level from the option's default (a proposer
    spec, sampling parameters) so the rest of it is kept."""
    from tts.config.components import field_kind
    from tts.registry import REGISTRY

    node, owner = options, cls
    for key in path[:-1]:
        current = node.get(key)
        if current is None and owner is not None:
            current = _default(owner, key)
        current = {"name": current} if isinstance(current, str) else dict(current or {})
        kind = field_kind(owner.Options, key) if owner is not None else None
        node[key], node = current, current
        owner = REGISTRY.get(kind, current["name"]) if kind and isinstance(current.get("name"), str) else None
    node[path[-1]] = value


def _wrapped(cls: Any) -> str | None:
    """The field holding the one strategy ``cls`` wraps (typed ``StrategySpec``) when ``cls`` has no
    ``n``, sampling, prompt or proposer of its own; else ``None``."""
    from tts.config.components import field_kind

    fields = cls.Options.model_fields
    if "n" in fields or _option_path(cls, "sampling") or _option_path(cls, "prompt"):
        return None
    return next((name for name in fields if field_kind(cls.Options, name) == "strategy"), None)


def _option_path(cls: Any, field: str) -> tuple[str, ...] | None:
    """Where ``field`` (sampling, prompt) lives in strategy ``cls``'s options: its own field, else
    the field of its proposer (a field typed ``ProposerSpec``); ``None`` when neither has it."""
    fields = cls.Options.model_fields
    if field in fields:
        return (field,)
    from tts.config.components import field_kind

    return next(((name, field) for name in fields if field_kind(cls.Options, name) == "proposer"), None)


def strategy_spec(
    name: str,
    base: dict[str, Any] | None = None,
    *,
    n: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    """The strategy mapping ``{name, options...}`` with the CLI's flags written where the strategy
    keeps them (``strategy.n``, ``strategy.proposer.sampling.temperature``, ...)."""
    from tts.registry import REGISTRY

    cls = REGISTRY.get("strategy", name)
    options = {k: v for k, v in (base or {}).items() if k != "name"}
    inner = _wrapped(cls)
    if inner is not None:  # a wrapper (rag) with no sampling of its own: the flags go to the strategy it wraps
        current = options.get(inner) or _default(cls, inner)
        current = {"name": current} if isinstance(current, str) else dict(current)
        options[inner] = strategy_spec(
            current["name"], current, n=n, temperature=temperature, max_tokens=max_tokens, prompt=prompt
        )
        return {"name": name, **options}
    if n is not None:
        if "n" not in cls.Options.model_fields:
            raise ConfigError(f"--n does not apply to strategy {name!r}; drop it.")
        options["n"] = n
    for flag, field, key, value in (
        ("--temperature", "sampling", "temperature", temperature),
        ("--max-tokens", "sampling", "max_tokens", max_tokens),
        ("--prompt", "prompt", None, prompt),
    ):
        if value is None:
            continue
        path = _option_path(cls, field)
        if path is None:
            raise ConfigError(f"{flag} does not apply to strategy {name!r}; drop it.")
        _nested_set(options, cls, (*path, key) if key else path, value)
    return {"name": name, **options}
