"""Reading configuration files: safe YAML with the line of every key, merges and dotted overrides.

Reading is safe (``yaml.SafeLoader``: no Python objects; a ``!!python/...`` or other unknown tag is
refused with its line) and bounded: anchors and aliases may not expand past :data:`MAX_YAML_NODES`
nodes (an "alias bomb" is refused before it is built, naming the line of the alias that crossed the
bound). Files are UTF-8 (a UTF-8 byte-order mark is accepted; UTF-16 and other encodings are
refused with the fix), and an empty file is refused rather than read as "all defaults". The line
of every key path is kept (:data:`Lines`), so a validation error can name ``file:line``
(:func:`where`). :func:`merge` and :func:`apply_overrides` combine files and command-line flags
with one rule: a component block whose ``name`` changes is replaced whole, because its old
options belong to the old component.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tts._text import read_utf8
from tts.errors import ConfigError

__all__ = [
    "MAX_YAML_NODES",
    "Lines",
    "apply_overrides",
    "merge",
    "parse_value",
    "read_yaml",
    "read_yaml_file",
    "resolve_paths",
    "where",
]

MAX_YAML_NODES = 100_000
"""Most nodes a YAML document may expand to (aliases counted at every use)."""

Lines = dict[tuple[str, ...], int]
"""Key path -> line number (1-based) in the file it was read from."""


class _Loader(yaml.SafeLoader):
    """A safe loader (no Python objects); :func:`read_yaml` bounds alias expansion first."""


def _check_size(node: yaml.Node, budget: list[int], source: str) -> None:
    """Count the nodes ``node`` expands to (an alias counts its whole target at every use); the
    error names the line where the expansion crossed the bound (an alias's use, not its anchor)."""
    stack: list[tuple[yaml.Node, int]] = [(node, node.start_mark.line)]
    while stack:
        current, line = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{source}:{line + 1}: YAML document expands to more than {MAX_YAML_NODES} nodes "
                "(anchors/aliases?); write the values out instead."
            )
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                at = max(line, k.start_mark.line)
                stack += ((v, max(at, v.start_mark.line)), (k, at))
        elif isinstance(current, yaml.SequenceNode):
            stack += [(v, max(line, v.start_mark.line)) for v in reversed(current.value)]


def _check_nodes(node: yaml.Node, source: str) -> None:
    """Refuse tags the safe loader would not build (``!!python/object``, custom ``!tags``) and keys
    written twice in one mapping (YAML would keep the last one silently)."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:  # an alias: its target was checked
            continue
        seen.add(id(current))
        if current.tag not in _Loader.yaml_constructors and current.tag != "tag:yaml.org,2002:merge":
            tag = current.tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(
                f"{source}:{current.start_mark.line + 1}: YAML tag {tag!r} is not allowed "
                "(configuration files hold plain data); remove the tag."
            )
        if isinstance(current, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in current.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in first:
                        raise ConfigError(
                            f"{source}:{k.start_mark.line + 1}: key {k.value!r} is written twice in one "
                            f"mapping (first on line {first[k.value]}); keep one."
                        )
                    first[k.value] = k.start_mark.line + 1
                stack += (k, v)
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


def _key_lines(node: yaml.Node, path: tuple[str, ...], out: Lines, depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = (*path, str(k.value))
            out.setdefault(key, k.start_mark.line + 1)
            _key_lines(v, key, out, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            key = (*path, str(i))
            out.setdefault(key, v.start_mark.line + 1)
            _key_lines(v, key, out, depth + 1)


def read_yaml(text: str, source: str = "<yaml>") -> tuple[Any, Lines]:
    """Parse YAML safely; return the data and the line of every key path."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply; flatten the document.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{at}: invalid YAML ({problem}); fix the syntax.") from None
    if node is None:
        return {}, {}
    _check_size(node, [MAX_YAML_NODES], source)
    _check_nodes(node, source)
    lines: Lines = {}
    _key_lines(node, (), lines)
    try:
        data = _Loader(text).get_single_data()
    except yaml.YAMLError as exc:  # a value the safe constructors refuse (a bad !!timestamp, ...)
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{at}: invalid YAML value ({getattr(exc, 'problem', exc)}); fix the value.") from None
    return data, lines


def parse_value(text: str, source: str) -> Any:
    """One command-line value (``--set KEY=VALUE``) read as YAML, with the same bounds and refusals as
    a file (aliases, tags, repeated keys); an empty value is ``None`` and text that is not valid
    YAML is kept as a plain string."""
    if not text.strip():
        return None
    try:
        return read_yaml(text, source)[0]
    except ConfigError as exc:
        if "invalid YAML" in str(exc):
            return text
        raise


EMPTY_HINT = {
    "pipeline": "write at least a strategy section, see recipes/",
    "study": "write at least a pipelines section, see recipes/ and the README's study example",
}
"""What an empty file of each kind should hold."""


def read_yaml_file(path: str | Path, what: str = "pipeline") -> tuple[Any, Lines]:
    """:func:`read_yaml` of a file; a file that cannot be read or decoded, or holds no data (empty,
    only comments), is a one-line ConfigError."""
    p = Path(path)
    text = read_utf8(p, f"{what} file")
    data, lines = read_yaml(text, str(p))
    if data is None or (data == {} and not lines):
        hint = EMPTY_HINT.get(what, f"write the {what} sections")
        raise ConfigError(f"{p} is empty: {hint}.")
    return data, lines


def where(loc: tuple[str, ...], sources: list[tuple[str, Lines]]) -> str:
    """``file:line`` of the longest prefix of ``loc`` found in ``sources`` (first source wins)."""
    for end in range(len(loc), 0, -1):
        for source, lines in sources:
            if loc[:end] in lines:
                return f"{source}:{lines[loc[:end]]}"
    return sources[0][0] if sources else "<pipeline>"


def resolve_paths(data: Any, base: Path) -> Any:
    """A pipeline mapping whose relative dataset file, ``data_dir`` and retriever ``index`` and
    ``docs`` are found beside the YAML file that names them (when they are not found from the
    working directory)."""
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict):
        return data
    ds = dict(data["dataset"])
    for key in ("name", "data_dir"):
        value = ds.get(key)
        if isinstance(value, str) and (key == "data_dir" or value.endswith((".jsonl", ".json", ".csv"))):
            p = Path(value)
            if not p.is_absolute() and not p.exists() and (base / p).exists():
                ds[key] = str(base / p)
    out = {**data, "dataset": ds}
    if isinstance(data.get("retriever"), dict):  # the retriever's index folder and documents, likewise
        rv = dict(data["retriever"])
        for key in ("index", "docs"):
            value = rv.get(key)
            if isinstance(value, str) and not Path(value).exists() and (base / value).exists():
                rv[key] = str(base / value)
        out["retriever"] = rv
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted keys set (``{"strategy.n": 4}``); setting a ``name``
    that changes a component drops the old component's options."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else ({"name": nxt} if isinstance(nxt, str) else nxt)
                if not isinstance(nxt, dict):
                    raise ConfigError(f"{key} cannot be set: {part} is not a mapping; check the key.")
                node[part] = nxt
            node = nxt
        last = parts[-1]
        if last == "name" and parts[:-1] != ["dataset"] and node.get("name") not in (None, value):
            node.clear()
        node[last] = value
    return out


def merge(base: Any, over: Any, path: tuple[str, ...] = ()) -> Any:
    """Deep merge of configuration mappings (``over`` wins). A component or backend block whose
    ``name`` changes is replaced whole (its old options belong to the old component); a dataset
    block keeps its other keys."""
    if isinstance(base, dict) and isinstance(over, dict):
        renamed = "name" in over and "name" in base and over["name"] != base["name"]
        if renamed and path != ("dataset",):
            return copy.deepcopy(over)
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v, (*path, str(k))) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)
