"""What exists: every registered component (plugins included) with its options, and the tasks.

``tts-scale list [KIND]`` prints this. A component's options are its pydantic ``Options`` fields:
name, type, default, and the first line of the docstring written under the field.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any

from tts.errors import ConfigError

__all__ = ["KIND_NAMES", "ComponentInfo", "OptionInfo", "catalog", "field_docs", "kind_of"]

KIND_NAMES = {
    "strategy": "strategies",
    "proposer": "proposers",
    "verifier": "verifiers",
    "backend": "backends",
    "retriever": "retrievers",
    "task": "tasks",
}
"""Each kind ``tts-scale list`` knows, and its plural (either is accepted)."""


@dataclass(frozen=True)
class OptionInfo:
    """One option of a component."""

    name: str
    type: str
    default: str
    doc: str = ""


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component (or task) and its options."""

    kind: str
    name: str
    doc: str = ""
    options: list[OptionInfo] = field(default_factory=list)


def kind_of(text: str) -> str:
    """The kind ``text`` names (singular or plural, any case); a ConfigError lists them."""
    key = text.strip().lower()
    for kind, plural in KIND_NAMES.items():
        if key in (kind, plural):
            return kind
    raise ConfigError(f"KIND must be one of {', '.join(KIND_NAMES.values())}, got {text!r}.")


def _first_line(doc: str | None) -> str:
    """The first paragraph of ``doc`` on one line, reST roles and double backticks removed."""
    lines = inspect.cleandoc(doc or "").split("\n\n")[0].split("\n")
    text = " ".join(line.strip() for line in lines).strip()
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("``", "")


def field_docs(model: type) -> dict[str, str]:
    """The first sentence-paragraph of the docstring under each field of ``model`` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if klass.__module__.startswith(("pydantic", "builtins", "typing")):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = _first_line(nxt.value.value)
    return docs


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a constrained type (Count, TokenCount): its base type
        return _type_name(args[0])
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | None" if type(None) in args else "")
    if origin in (list, tuple, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        return f"list[{_type_name(inner[0])}]" if inner else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        name = annotation.__name__
        return name[: -len("Spec")].lower() if name.endswith("Spec") and name != "ComponentSpec" else name
    return str(annotation).replace("typing.", "")


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_defaults=True) or type(value).__name__
    return repr(value)


def _options(model: type) -> list[OptionInfo]:
    docs = field_docs(model)
    fields = getattr(model, "model_fields", {})
    return [OptionInfo(name, _type_name(f.annotation), _default(f), docs.get(name, "")) for name, f in fields.items()]


def _component(kind: str, name: str) -> ComponentInfo:
    from tts.registry import REGISTRY

    try:
        cls = REGISTRY.get(kind, name)
    except ConfigError as exc:  # a plugin whose module cannot be imported: say so, list the rest
        return ComponentInfo(kind, name, f"(cannot be loaded: {exc})")
    model = getattr(cls, "Options", None)
    doc = _first_line(cls.__doc__) or _first_line(getattr(inspect.getmodule(cls), "__doc__", None))
    return ComponentInfo(kind, name, doc, _options(model) if isinstance(model, type) else [])


def _tasks() -> list[ComponentInfo]:
    from tts import datasets

    out = [
        ComponentInfo("task", name, f"built-in, generated: {task.instruction}".strip())
        for name, task in datasets.BUILTIN_TASKS.items()
    ]
    files = getattr(datasets, "_BENCHMARK_FILES", {})
    out += [
        ComponentInfo("task", name, f"benchmark: {' or '.join(names)} in --data-dir / $TTS_DATA_DIR")
        for name, names in files.items()
    ]
    out.append(ComponentInfo("task", "hf:OWNER/NAME", "any Hugging Face hub dataset (pip install 'tts-scale[data]')"))
    out.append(ComponentInfo("task", "PATH.jsonl|.csv", "a local file (question/answer columns, or dataset.fields)"))
    return out


def catalog(kind: str | None = None) -> list[ComponentInfo]:
    """Every component of ``kind`` (every kind when ``None``), in kind then name order."""
    from tts.registry import REGISTRY

    kinds = [kind_of(kind)] if kind else list(KIND_NAMES)
    out: list[ComponentInfo] = []
    for k in kinds:
        out += _tasks() if k == "task" else [_component(k, name) for name in REGISTRY.names(k)]
    return out
