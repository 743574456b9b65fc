"""Pipeline files: a pydantic model with ``backend``, ``dataset``, ``strategy``, ``budget`` and ``run``
sections, read with a safe YAML loader (aliases cannot blow up memory) and validated with messages
that name the file, line and field (``pipeline.yaml:7: strategy.n: must be >= 1, got 0``).

Configuration objects do no I/O: :func:`load_pipeline` reads, :func:`build` makes the objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.errors import ConfigError
from tts.sampling import format_validation_error

__all__ = ["BackendSpec", "DatasetSpec", "PipelineSpec", "RunSpec", "StrategySpec", "load_pipeline", "parse_pipeline"]

MAX_YAML_NODES = 100_000


class BackendSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "hf"
    """Backend name: hf, fake, vllm or openai."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Backend options (model, device, engine options, base URLs, ...)."""


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "larger"
    """A built-in task, a benchmark name, a local path or hf:OWNER/NAME (see tts.datasets)."""
    limit: int | None = Field(default=None, ge=1)
    seed: int | None = None
    data_dir: str | None = None
    fields: dict[str, str] | None = None
    format: str | None = None


class StrategySpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = "self_consistency"
    """A registered strategy; the other keys are its options."""

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=64, ge=1)
    seed: int = 0
    out: str | None = None


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    max_calls: int | None = Field(default=None, ge=1)
    max_wall_time: float | None = Field(default=None, gt=0)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: BackendSpec = Field(default_factory=BackendSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    run: RunSpec = Field(default_factory=RunSpec)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records the line of every mapping key and bounds alias expansion."""


def _check_size(node: yaml.Node, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"YAML document expands to more than {MAX_YAML_NODES} nodes (anchors/aliases?); "
                          "write the values out instead.")
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _check_size(k, budget)
            _check_size(v, budget)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _check_size(v, budget)


def _key_lines(node: yaml.Node, path: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = (*path, str(k.value))
            out[key] = k.start_mark.line + 1
            _key_lines(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            key = (*path, str(i))
            out[key] = v.start_mark.line + 1
            _key_lines(v, key, out)


def read_yaml(text: str, source: str = "<yaml>") -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML safely; return the data and the line of every key path."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax.") from None
    if node is None:
        return {}, {}
    _check_size(node, [MAX_YAML_NODES])
    lines: dict[tuple[str, ...], int] = {}
    _key_lines(node, (), lines)
    data = _LineLoader(text).get_single_data()
    return data, lines


def parse_pipeline(data: Any, source: str = "<pipeline>", lines: dict[tuple[str, ...], int] | None = None) -> PipelineSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pipeline must be a mapping with backend/dataset/strategy/run sections, "
                          f"got {type(data).__name__}.")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        loc = tuple(str(p) for p in exc.errors()[0]["loc"])
        line = (lines or {}).get(loc) or (lines or {}).get(loc[:-1])
        where = f"{source}:{line}" if line else source
        raise ConfigError(f"{where}: {format_validation_error(exc, model=PipelineSpec)}") from None


def load_pipeline(path: str | Path) -> PipelineSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"pipeline file {str(p)!r} cannot be read ({exc.strerror}); check the path.") from None
    data, lines = read_yaml(text, str(p))
    return parse_pipeline(data, str(p), lines)
