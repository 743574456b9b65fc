"""The study file: pipelines x n values x sweep points x seeds, and how it becomes configurations.

A study file::

    name: gsm8k-scaling
    dataset: {name: gsm8k, limit: 100, data_dir: ../shared/data}   # shared sections (optional)
    backend: {name: hf, pricing: {prompt: 0.15, completion: 0.6}}  # pricing: USD per million tokens
    pipelines:
      - recipes/gsm8k_self_consistency.yaml                        # a pipeline file
      - {label: greedy, strategy: {name: greedy}}                  # or inline sections
      - {label: bon, path: recipes/math500_best_of_n.yaml, strategy: {n: 16}}
    n_values: [1, 4, 16]       # values of n_key (default strategy.n) where the strategy has it
    sweep: {strategy.sampling.temperature: [0.3, 0.7, 1.0]}       # crossed with the n values
    seeds: [0, 1]
    curves: {subsets: 200}     # curves for every n up to the largest, from the recorded samples
    allocation: {pilot_samples: 4, bins: 3}
    comparisons: [{a: greedy, b: bon n=16}]
    out: studies/gsm8k-scaling

Sections merge in this order, later winning: the pipeline file, the study's shared sections, the
entry's inline sections, the command-line flags. Each (pipeline, n value, sweep point) is a
*configuration* whose id is a hash of its resolved configuration (run options, pricing, dataset
size and data folder aside), so a study can grow (more problems, more n values) and reuse what is
done. ("Budget" is a pipeline's per-problem limits, its ``budget`` section; a study's ``n_values``
are the sample counts it compares.)
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tts.config.components import options_model
from tts.config.spec import PipelineSpec, parse_pipeline
from tts.config.yaml import Lines, apply_overrides, merge, read_yaml_file, resolve_paths, where
from tts.errors import ConfigError, format_validation_error
from tts.sampling import MAX_COUNT, Count

__all__ = [
    "AllocationOptions",
    "ComparisonSpec",
    "Configuration",
    "CurveOptions",
    "PipelineEntry",
    "Sections",
    "Study",
    "StudySpec",
    "load_study",
]

RENAMED = {
    "budgets": "budgets is now n_values (the values of strategy.n; 'budget' is a pipeline's per-problem "
    "limits): write n_values: [...]",
    "budget_key": "budget_key is now n_key: write n_key: strategy.n",
    "price": "price moved to the backend: write backend: {pricing: {prompt: ..., completion: ...}} "
    "(USD per million tokens)",
}
"""Keys of earlier study files, refused with the new shape."""


class Sections(BaseModel):
    """Pipeline sections a study shares with all its pipelines, or an entry sets for its own."""

    model_config = ConfigDict(extra="forbid")

    backend: dict[str, Any] | str | None = None
    dataset: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    strategy: dict[str, Any] | str | None = None
    budget: dict[str, Any] | None = None
    run: dict[str, Any] | None = None

    def sections(self) -> dict[str, Any]:
        """The sections set, by name."""
        return {s: getattr(self, s) for s in SECTIONS if getattr(self, s) is not None}


SECTIONS = tuple(Sections.model_fields)


class PipelineEntry(Sections):
    """One pipeline of a study: a file (``path``), inline sections, or both (inline wins)."""

    label: str | None = None
    path: str | None = None
    n_values: list[int | dict[str, Any]] | None = None
    """This pipeline's n values (default: the study's)."""
    sweep: dict[str, list[Any]] | None = None
    """This pipeline's sweep (default: the study's)."""

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class CurveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subsets: Count = 200
    """Random subsets per n and problem."""
    seed: int = 0


class AllocationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pilot: str | None = None
    """Configuration whose first samples estimate difficulty (default: the one with most samples)."""
    pilot_samples: int = Field(default=4, ge=2, le=MAX_COUNT)
    bins: Count = 3
    seed: int = 0


class ComparisonSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: str
    """Baseline configuration label (e.g. the full-precision model)."""
    b: str
    """Compared configuration label; the difference is b - a."""


class StudySpec(Sections):
    name: str = "study"
    pipelines: list[PipelineEntry] = Field(min_length=1)
    n_values: list[int | dict[str, Any]] = Field(default_factory=list)
    """Points compared: an integer sets ``n_key``; a mapping sets dotted keys."""
    n_key: str = "strategy.n"
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted key -> values, crossed with each other and with the n values."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seeded: bool = True
    """Seed every sampling request (reproducible per problem; resumes give identical results)."""
    out: str | None = None
    """Output folder (default: studies/NAME)."""
    curves: CurveOptions = Field(default_factory=CurveOptions)
    allocation: AllocationOptions | None = Field(default_factory=AllocationOptions)
    comparisons: list[ComparisonSpec] = Field(default_factory=list)
    report: bool = True
    """Write the report (plots and HTML) when the study ends (needs matplotlib)."""
    keep_failures: bool = False
    """Keep stored failed and timed-out problems on resume (default: run them again)."""

    @field_validator("n_values")
    @classmethod
    def _positive(cls, v: list[int | dict[str, Any]]) -> list[int | dict[str, Any]]:
        for b in v:
            if isinstance(b, int) and not 1 <= b <= MAX_COUNT:
                raise ValueError(f"n_values must be in [1, {MAX_COUNT}], got {b}.")
        return v


@dataclass
class Configuration:
    """One (pipeline, n value, sweep point) of a study."""

    id: str
    label: str
    pipeline: str
    position: int
    n_value: Any
    """The ``n_values`` entry applied (an integer, a mapping of dotted keys, or ``None``)."""
    sweep: dict[str, Any]
    spec: PipelineSpec
    resolved: dict[str, Any]


@dataclass
class Study:
    """A validated study: its spec, its configurations and where it writes."""

    spec: StudySpec
    configs: list[Configuration]
    out: Path
    source: str = "<study>"

    @property
    def store_path(self) -> Path:
        return self.out / "results.sqlite"


def _identity(resolved: dict[str, Any], seeded: bool) -> str:
    """Configuration id: what determines results (run options, pricing, dataset size and folder aside)."""
    ident = {k: v for k, v in resolved.items() if k != "run"}
    ident["dataset"] = {k: v for k, v in resolved["dataset"].items() if k not in ("limit", "data_dir", "seed")}
    if isinstance(ident.get("backend"), dict):
        ident["backend"] = {k: v for k, v in ident["backend"].items() if k != "pricing"}
    ident["seeded"] = seeded
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _applies(spec: PipelineSpec, key: str) -> bool:
    """Whether a dotted key (``strategy.n``) names an option the pipeline's strategy has."""
    parts = key.split(".")
    if parts[0] != "strategy":
        return True
    if len(parts) == 1:
        return False
    from tts.registry import REGISTRY

    cls = REGISTRY.get("strategy", spec.strategy.name)
    return parts[1] in options_model(cls).model_fields


def _short(key: str, value: Any) -> str:
    name = key.rsplit(".", 1)[-1]
    return f"{'T' if name == 'temperature' else name}={value}"


def _label_of(entry: PipelineEntry, data: dict[str, Any], index: int) -> str:
    if entry.label:
        return entry.label
    if entry.path:
        return Path(entry.path).stem
    strategy = data.get("strategy")
    name = strategy.get("name") if isinstance(strategy, dict) else strategy
    return str(name or f"pipeline{index}")


def _refuse_renamed(data: dict[str, Any], source: str, lines: Lines) -> None:
    """One line for a key of an earlier study file, naming the new shape."""
    places: list[tuple[tuple[str, ...], Any]] = [((), data)]
    pipelines = data.get("pipelines")
    if isinstance(pipelines, list):
        places += [(("pipelines", str(i)), p) for i, p in enumerate(pipelines)]
    for loc, node in places:
        if not isinstance(node, dict):
            continue
        for old, message in RENAMED.items():
            if old in node:
                raise ConfigError(f"{where((*loc, old), [(source, lines)])}: {message}.")


def load_study(
    path: str | Path | None = None,
    *,
    data: Any = None,
    lines: Lines | None = None,
    overrides: Mapping[str, Any] | None = None,
    sections: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    out: str | Path | None = None,
) -> Study:
    """Read and validate a study (a file, or ``data`` already parsed); a plain pipeline file is a
    study of that one pipeline.

    ``sections`` overrides whole-section keys of every pipeline (``{"dataset": {"limit": 5}}``);
    ``overrides`` sets dotted keys in every pipeline (``{"strategy.n": 4}``): both are what the
    command-line flags become.
    """
    source = str(path) if path is not None else "<study>"
    if path is not None:
        data, lines = read_yaml_file(path, "study")
    lines = lines or {}
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study must be a mapping with a pipelines list, got {type(data).__name__}.")
    if "pipelines" not in data:  # a single pipeline file
        data = {"name": Path(source).stem, "pipelines": [{**data, "label": Path(source).stem}]}
        lines = {("pipelines", "0", *k): v for k, v in lines.items()}
    _refuse_renamed(data, source, lines)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        loc = tuple(str(p) for p in exc.errors()[0]["loc"])
        raise ConfigError(f"{where(loc, [(source, lines)])}: {format_validation_error(exc, model=StudySpec)}") from None
    if seeds is not None:
        spec.seeds = list(seeds)
    if out is not None:
        spec.out = str(out)
    configs: list[Configuration] = []
    labels: set[str] = set()
    applied: set[str] = set()
    for i, entry in enumerate(spec.pipelines):
        for cfg in _entry_configs(spec, entry, i, source, lines, base_dir, sections, overrides, labels, applied):
            cfg.position = len(configs)
            configs.append(cfg)
    _check_applied(spec, applied, source, lines)
    seen: dict[str, str] = {}
    for c in configs:
        if c.id in seen:
            raise ConfigError(
                f"{source}: configurations {seen[c.id]!r} and {c.label!r} are identical; "
                "drop one or change its options."
            )
        seen[c.id] = c.label
    out_dir = Path(spec.out) if spec.out else Path("studies") / spec.name
    return Study(spec, configs, out_dir, source)


def _check_applied(spec: StudySpec, applied: set[str], source: str, lines: Lines) -> None:
    """A sweep key, or the ``n_key`` of integer n values, that no pipeline's strategy has is a typo
    or an old option path: refuse it rather than run a study without the points it asks for."""
    wanted: list[tuple[str, tuple[str, ...]]] = []
    shared_n = any(e.n_values is None for e in spec.pipelines)  # the study's own, where an entry uses them
    shared_sweep = any(e.sweep is None for e in spec.pipelines)
    entries: list[tuple[tuple[str, ...], list[int | dict[str, Any]], dict[str, list[Any]]]] = [
        ((), spec.n_values if shared_n else [], spec.sweep if shared_sweep else {})
    ] + [(("pipelines", str(i)), e.n_values or [], e.sweep or {}) for i, e in enumerate(spec.pipelines)]
    for loc, n_values, sweep in entries:
        if any(isinstance(b, int) for b in n_values):
            wanted.append((spec.n_key, (*loc, "n_values")))
        wanted += [(k, (*loc, "sweep", k)) for k in sweep]
    for key, loc in wanted:
        if key not in applied:
            option = key.split(".")[1] if key.startswith("strategy.") and "." in key else key
            raise ConfigError(
                f"{where(loc, [(source, lines)])}: {key} applies to no pipeline (no strategy here has the option "
                f"{option}); check the key, e.g. strategy.proposer.sampling.temperature."
            )


def _entry_configs(
    spec: StudySpec,
    entry: PipelineEntry,
    i: int,
    source: str,
    lines: Lines,
    base_dir: Path,
    sections: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None,
    labels: set[str],
    applied: set[str],
) -> list[Configuration]:
    """The configurations of one pipeline entry: its n values crossed with its sweep points (the
    keys that applied are added to ``applied``)."""
    sources: list[tuple[str, Lines]] = [
        (source, {k[2:]: v for k, v in lines.items() if k[:2] == ("pipelines", str(i))}),
        (source, {k: v for k, v in lines.items() if k[0] in SECTIONS}),
    ]
    base: dict[str, Any] = {}
    if entry.path:
        p = Path(entry.path)
        if not p.is_absolute() and not p.exists():
            p = base_dir / p
        file_data, file_lines = read_yaml_file(p)
        if not isinstance(file_data, dict):
            raise ConfigError(f"{p}: a pipeline must be a mapping, got {type(file_data).__name__}.")
        base = resolve_paths(file_data, p.resolve().parent)
        sources.append((str(p), file_lines))
    merged = merge(merge(base, resolve_paths(spec.sections(), base_dir)), resolve_paths(entry.sections(), base_dir))
    merged = merge(merged, dict(sections or {}))
    if overrides:
        merged = apply_overrides(merged, overrides)
    label = _label_of(entry, merged, i)
    if label in labels:
        label = f"{label}#{i}"
    labels.add(label)
    pipe = parse_pipeline(merged, sources=sources)
    n_values: list[Any] = list(entry.n_values if entry.n_values is not None else spec.n_values)
    sweep = entry.sweep if entry.sweep is not None else spec.sweep
    ints_apply = _applies(pipe, spec.n_key)
    points: list[Any] = [b for b in n_values if not isinstance(b, int) or ints_apply] or [None]
    sweep_keys = [k for k in sweep if _applies(pipe, k)]
    applied.update(sweep_keys)
    if ints_apply and any(isinstance(b, int) for b in n_values):
        applied.add(spec.n_key)
    out = []
    for b, values in itertools.product(points, itertools.product(*(sweep[k] for k in sweep_keys))):
        changes: dict[str, Any] = {}
        if isinstance(b, int):
            changes[spec.n_key] = b
        elif isinstance(b, dict):
            changes.update(b)
        point = dict(zip(sweep_keys, values, strict=True))
        changes.update(point)
        cfg_spec = parse_pipeline(apply_overrides(merged, changes), sources=sources) if changes else pipe
        resolved = cfg_spec.resolved()
        name = label
        if b is not None:
            name += f" n={b}" if isinstance(b, int) else " " + " ".join(_short(k, v) for k, v in b.items())
        if point:
            name += " " + " ".join(_short(k, v) for k, v in point.items())
        out.append(
            Configuration(
                id=_identity(resolved, spec.seeded),
                label=name,
                pipeline=label,
                position=0,
                n_value=b,
                sweep=point,
                spec=cfg_spec,
                resolved=resolved,
            )
        )
    return out
