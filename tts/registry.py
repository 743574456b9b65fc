"""Component registry: strategies, verifiers, backends (and, later, retrievers) by name.

Built-ins and plugins register the same way: through the ``tts_scale`` entry-point group, whose
entries are callables taking the :class:`Registry`. Lookups load entry points once, lazily, and
import a component's module only when it is used.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from tts.errors import ConfigError

__all__ = ["REGISTRY", "Registry", "register_builtins"]

log = logging.getLogger(__name__)


class Registry:
    """Names -> ``module:attr`` paths (or objects), per component kind."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._loaded = False

    def register(self, kind: str, name: str, target: Any) -> None:
        self._items.setdefault(kind, {})[name] = target

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        register_builtins(self)
        for ep in entry_points(group="tts_scale"):
            if ep.value == "tts.registry:register_builtins":
                continue
            try:
                ep.load()(self)
            except Exception as exc:  # a broken plugin must not break the built-ins
                log.warning("plugin %s failed to register: %s", ep.name, exc)

    def names(self, kind: str) -> list[str]:
        self._load()
        return sorted(self._items.get(kind, {}))

    def get(self, kind: str, name: str) -> Any:
        self._load()
        items = self._items.get(kind, {})
        if name not in items:
            close = difflib.get_close_matches(name, list(items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{kind} must be one of {', '.join(sorted(items))}, got {name!r}{hint}")
        target = items[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            items[name] = target
        return target


def _discover(package: str, kind: str, method: str, registry: Registry) -> None:
    """Register every class of ``package``'s modules that has a ``name`` and the kind's method."""
    import inspect
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and obj.__module__ == module.__name__
                    and isinstance(getattr(obj, "name", None), str) and callable(getattr(obj, method, None))):
                registry.register(kind, obj.name, obj)  # type: ignore[attr-defined]


def register_builtins(registry: Registry) -> None:
    """Register the components that ship with tts-scale: every strategy class in ``tts.strategies``
    (a class with a ``name`` and ``solve``), every verifier class in ``tts.verifiers`` (``name`` and
    ``score``), and the backends."""
    _discover("tts.strategies", "strategy", "solve", registry)
    _discover("tts.verifiers", "verifier", "score", registry)
    from tts.backends import BACKENDS

    for name, target in BACKENDS.items():
        registry.register("backend", name, target)


REGISTRY = Registry()
"""The process-wide registry, filled from entry points on first lookup."""


def build_strategy(name: str, **options: Any) -> Any:
    """A strategy by registered name, its options validated by the strategy's ``Options`` model."""
    cls = REGISTRY.get("strategy", name)
    return cls(cls.Options(**options))
