"""The one component registry: strategies, verifiers, proposers, backends and retrievers by name.

Built-ins and plugins register the same way: through the ``tts_scale`` entry-point group, whose
entries are callables taking the :class:`Registry` (``registry.register("backend", "mine",
"my_pkg.engine:MyBackend")``). Lookups load the entry points once, lazily, and import a
component's module only when it is used. Everything that resolves a name (pipelines,
:func:`tts.make_backend`, :func:`tts.build_strategy`, nested components) looks here, so a plugin
backend validates and builds like a built-in one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from tts.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "KINDS", "REGISTRY", "Registry", "register_builtins"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tts_scale"
KINDS = ("strategy", "verifier", "proposer", "backend", "retriever")
"""The kinds of component a name can refer to."""

_EXTRAS = {"hf": "cpu", "vllm": "vllm", "openai": "openai"}


class Registry:
    """Names -> ``module:attr`` paths (or objects), per component kind."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._loaded = False

    def register(self, kind: str, name: str, target: Any) -> None:
        """Register ``target`` (a class, a factory or a ``"module:attr"`` path) as ``kind`` ``name``."""
        self._items.setdefault(kind, {})[name] = target

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        register_builtins(self)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value == "tts.registry:register_builtins":
                continue
            try:
                ep.load()(self)
            except Exception as exc:  # a broken plugin must not break the built-ins
                log.warning("plugin %s failed to register: %s", ep.name, exc)

    def reload(self) -> None:
        """Forget every registration and read the built-ins and entry points again (on next use)."""
        self._items.clear()
        self._loaded = False

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind``, sorted."""
        self._load()
        return sorted(self._items.get(kind, {}))

    def get(self, kind: str, name: str) -> Any:
        """The component ``kind`` ``name`` (imported on first use); a ConfigError names the choices."""
        self._load()
        items = self._items.get(kind, {})
        if name not in items:
            close = difflib.get_close_matches(name, list(items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{kind} must be one of {', '.join(sorted(items))}, got {name!r}{hint}")
        target = items[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as exc:
                extra = _EXTRAS.get(name, name)
                raise ConfigError(
                    f"{kind} {name!r} is not available ({exc}); install its extra, "
                    f"e.g. pip install 'tts-scale[{extra}]'."
                ) from exc
            items[name] = target
        return target


def _discover(package: str, kind: str, method: str, registry: Registry, private: bool = False) -> None:
    """Register every class of ``package``'s modules that has a string ``name`` and the kind's method
    (``private``: also the modules whose name starts with an underscore)."""
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError:
        return
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") and not private:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            name = getattr(obj, "name", None)
            if (
                inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and isinstance(name, str)
                and callable(getattr(obj, method, None))
            ):
                registry.register(kind, name, obj)


def register_builtins(registry: Registry) -> None:
    """Register the components that ship with tts-scale: every strategy class in ``tts.strategies``
    (a class with a ``name`` and ``solve``), every proposer there (``name`` and ``propose``), every
    verifier class in ``tts.verifiers`` (``name`` and ``score``), every retriever in
    ``tts.retrieval`` (``name`` and ``retrieve``) and the backends."""
    _discover("tts.strategies", "strategy", "solve", registry)
    _discover("tts.strategies", "proposer", "propose", registry, private=True)
    _discover("tts.verifiers", "verifier", "score", registry)
    _discover("tts.retrieval", "retriever", "retrieve", registry)
    from tts.backends import BACKENDS

    for name, target in BACKENDS.items():
        registry.register("backend", name, target)


REGISTRY = Registry()
"""The process-wide registry, filled from entry points on first lookup."""
