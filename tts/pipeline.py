"""Pipeline files: ``backend``, ``dataset``, ``task``, ``strategy``, ``budget`` and ``run`` sections.

A pipeline is a YAML (or Python) description of one experiment::

    backend: {name: hf}                  # or {name: vllm, model: ...}: only this block changes
    dataset: {name: gsm8k, limit: 50, data_dir: ../shared/data}
    task:                                # prompt templates and answer patterns live here, not in code
      instruction: "End your reply with 'The answer is N.'"
      answer_format: math
    strategy:
      name: best_of_n                    # any registered strategy; the other keys are its options
      n: 8
      verifier: {name: math}             # nested components are {name: ..., **options}
      limits: {max_tokens: 4000}         # a per-stage budget on this component
    budget: {max_tokens: 20000}          # per problem, for the whole strategy
    run: {concurrency: 16, seed: 0}

Reading is safe (``yaml.SafeLoader``; anchors and aliases may not expand past
:data:`MAX_YAML_NODES` nodes) and remembers the line of every key, so errors name the file, the
line, the field and the fix: ``pipeline.yaml:7: strategy.inner.n must be >= 1, got 0.``; a
misspelt key gets the close match (``strategy.nn is not a known field; did you mean 'n'?``).

**Components are discovered at run time** (:data:`tts.registry.REGISTRY`), so the schema is not a
static union: a :class:`ComponentSpec` is ``{name: str, limits: ..., **options}``, and
:func:`validate_component` looks ``name`` up in the registry and validates the options with that
class's ``Options`` model (or, for classes without one, a model made from ``__init__``'s
signature). New strategies, verifiers and retrievers need no schema change.

**Nested components.** An ``Options`` field that holds another component is typed
:class:`ComponentSpec` (or :class:`StrategySpec` / :class:`VerifierSpec` / :class:`RetrieverSpec`
to fix its kind; lists and dicts of them work too). Validation recurses into it with the right
path, and the component builds it with :func:`build_component` in its ``__init__``::

    class EnsembleOptions(BaseModel):
        members: list[StrategySpec]

    class Ensemble:
        def __init__(self, options=None, **kw):
            self.options = options or EnsembleOptions(**kw)
            self.members = [build_component(m, "strategy") for m in self.options.members]

:func:`build_component` also passes through objects that are already built, so Python recipes
can hand over instances where a field allows them. A class that prefers to build its parts itself
may define ``from_spec(cls, options, build)``; the builder then calls it with the validated
options and :func:`build_component`.

**Budgets.** ``budget`` limits one problem's whole strategy (tokens, completion tokens, calls,
wall time) and, with ``total_tokens``, the whole run; ``limits`` on any nested component limits
that stage alone. A limit is checked before each engine call of the stage: the call that would
start past it raises :class:`~tts.errors.BudgetExceeded` (the problem is recorded as failed).

Configuration objects do no I/O: :func:`load_pipeline` reads, :func:`build_pipeline` makes the
objects.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from tts.errors import BudgetExceeded, ConfigError
from tts.sampling import format_validation_error

if typing.TYPE_CHECKING:
    from tts.context import Context
    from tts.datasets import Dataset
    from tts.task import Task
    from tts.types import Problem, Result

__all__ = [
    "MAX_YAML_NODES",
    "BackendSpec",
    "BudgetSpec",
    "ComponentSpec",
    "DatasetSpec",
    "Limited",
    "Limits",
    "Pipeline",
    "PipelineSpec",
    "RetrieverSpec",
    "RunSpec",
    "SpecError",
    "StrategySpec",
    "TaskSpec",
    "VerifierSpec",
    "apply_overrides",
    "build_component",
    "build_pipeline",
    "load_pipeline",
    "options_model",
    "parse_pipeline",
    "read_yaml",
    "resolve_component",
    "resolve_paths",
    "validate_component",
]

MAX_YAML_NODES = 100_000
COMPONENT_KINDS = ("strategy", "verifier", "retriever")

Lines = dict[tuple[str, ...], int]


class SpecError(ConfigError):
    """A configuration error at a known place: ``loc`` is the key path (``("strategy", "n")``)."""

    def __init__(self, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


# ------------------------------------------------------------------------------------ sections


class Limits(BaseModel):
    """Budget of one problem's stage: checked before each engine call of the stage."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1)
    """Prompt plus completion tokens."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """Generated tokens."""
    max_calls: int | None = Field(default=None, ge=1)
    """Engine requests."""
    max_wall_time: float | None = Field(default=None, gt=0)
    """Seconds (wall clock); exceeding it counts as a timeout."""

    def active(self) -> bool:
        return any(v is not None for v in (self.max_tokens, self.max_completion_tokens, self.max_calls,
                                           self.max_wall_time))


class ComponentSpec(BaseModel):
    """A registered component by ``name``; every other key is one of its options.

    ``limits`` is a per-stage budget (see :class:`Limits`). A bare string is a name with default
    options (``verifier: math``).
    """

    model_config = ConfigDict(extra="allow")

    kind: ClassVar[str | None] = None
    """Registry kind; ``None`` accepts a strategy, verifier or retriever name."""

    name: str
    limits: Limits | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def options(self) -> dict[str, Any]:
        """The component's options (every key except ``name`` and ``limits``)."""
        return dict(self.model_extra or {})


class StrategySpec(ComponentSpec):
    kind: ClassVar[str | None] = "strategy"
    name: str = "self_consistency"


class VerifierSpec(ComponentSpec):
    kind: ClassVar[str | None] = "verifier"


class RetrieverSpec(ComponentSpec):
    kind: ClassVar[str | None] = "retriever"


class BackendSpec(BaseModel):
    """The engine. Keys other than ``name``, ``quantize`` and ``options`` are backend options too
    (``{name: hf, model: ..., dtype: float32}``), checked against the backend's constructor."""

    model_config = ConfigDict(extra="forbid")

    name: str = "hf"
    """Backend name: hf, fake, vllm, openai (or a plugin's)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Backend options (model, device, engine options, base URLs, ...)."""
    quantize: typing.Literal["int8", "int8_mixed"] | None = None
    """hf only: torch dynamic int8 quantization of the loaded model's linear layers
    (``int8_mixed`` keeps lm_head and the first and last blocks in full precision)."""

    @model_validator(mode="before")
    @classmethod
    def _flat_options(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, Mapping):
            known = {"name", "options", "quantize"}
            extra = {k: v for k, v in data.items() if k not in known}
            if extra:
                data = {k: v for k, v in data.items() if k in known}
                data["options"] = {**dict(data.get("options") or {}), **extra}
        return data


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "larger"
    """A built-in task, a benchmark name (gsm8k, math500, game24), a local path or hf:OWNER/NAME."""
    limit: int | None = Field(default=None, ge=1)
    """Number of problems (a seeded random subset when ``seed`` is set, else the first ones)."""
    seed: int | None = None
    data_dir: str | None = None
    """Folder with the benchmark files (default: $TTS_DATA_DIR)."""
    fields: dict[str, str] | None = None
    """Column mapping for raw files: {question: ..., reference: ..., id: ...}."""
    format: str | None = None
    split: str = "test"


class TaskSpec(BaseModel):
    """Overrides of the dataset's task: how to prompt and how to read answers. Unset keys keep the
    dataset's defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    instruction: str | None = None
    """The answer format instruction appended to every prompt ({instruction} in templates)."""
    direct_template: str | None = None
    """Template of the ``direct`` prompt, with {question} and {instruction}."""
    cot_template: str | None = None
    """Template of the ``cot`` (step by step) prompt."""
    system: str | None = None
    """System message of chat prompts."""
    assistant_prefix: str | None = None
    """Text every answer starts with (generation continues from it)."""
    answer_format: str | None = None
    """How answers are keyed and compared: math, first_number, last_number, text, ..."""
    answer_pattern: str | None = None
    """A regular expression whose first group is the answer (its last match wins); replaces the
    format's extraction, keeps its canonical form and equivalence."""
    examples: list[tuple[str, str]] | None = None
    """Few-shot (question, answer) pairs."""

    @field_validator("answer_format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        from tts.task import ANSWER_FORMATS

        if v is not None and v not in ANSWER_FORMATS:
            close = difflib.get_close_matches(v, list(ANSWER_FORMATS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {v!r}{hint}")
        return v

    @field_validator("answer_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compiled = re.compile(v)
            except re.error as exc:
                raise ValueError(f"answer_pattern must be a valid regular expression ({exc}), "
                                 f"got {v!r}.") from None
            if compiled.groups < 1:
                raise ValueError("answer_pattern must have a group around the answer, e.g. "
                                 f"'answer is (\\w+)', got {v!r}.")
        return v

    @field_validator("direct_template", "cot_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{question}" not in v:
            raise ValueError(f"templates must contain {{question}}, got {v!r}.")
        return v


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=64, ge=1)
    """Problems in flight at once."""
    seed: int = 0
    out: str | None = None
    """JSONL file for results (``tts-scale run``)."""


class BudgetSpec(Limits):
    """Per problem limits of the whole strategy, plus ``total_tokens`` for the whole run (no new
    problem starts once the run has used that many)."""

    total_tokens: int | None = Field(default=None, ge=1)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: BackendSpec = Field(default_factory=BackendSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    task: TaskSpec = Field(default_factory=TaskSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    run: RunSpec = Field(default_factory=RunSpec)

    def check(self) -> PipelineSpec:
        """Validate the registered components (strategy and everything nested in it) and the
        backend's options; raise :class:`SpecError` naming the field. Returns ``self``."""
        validate_component(self.strategy, "strategy", ("strategy",))
        _check_backend(self.backend)
        return self

    def resolved(self) -> dict[str, Any]:
        """The full configuration with every default filled in (what a study's manifest records)."""
        d = self.model_dump(mode="json", exclude={"strategy"})
        d["strategy"] = resolve_component(self.strategy, "strategy")
        return d


# ------------------------------------------------------------------------------------ YAML


class _LineLoader(yaml.SafeLoader):
    """A safe loader (no Python objects); :func:`read_yaml` bounds alias expansion."""


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
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax.") from None
    if node is None:
        return {}, {}
    _check_size(node, [MAX_YAML_NODES])
    lines: Lines = {}
    _key_lines(node, (), lines)
    data = _LineLoader(text).get_single_data()
    return data, lines


def read_yaml_file(path: str | Path, what: str = "pipeline") -> tuple[Any, Lines]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} file {str(p)!r} cannot be read ({exc.strerror}); "
                          "check the path.") from None
    return read_yaml(text, str(p))


def where(loc: tuple[str, ...], sources: list[tuple[str, Lines]]) -> str:
    """``file:line`` of the longest prefix of ``loc`` found in ``sources`` (first source wins)."""
    for end in range(len(loc), 0, -1):
        for source, lines in sources:
            if loc[:end] in lines:
                return f"{source}:{lines[loc[:end]]}"
    return sources[0][0] if sources else "<pipeline>"


def _validation_loc(exc: ValidationError) -> tuple[str, ...]:
    return tuple(str(p) for p in exc.errors()[0]["loc"])


def parse_pipeline(data: Any, source: str = "<pipeline>", lines: Lines | None = None,
                   sources: list[tuple[str, Lines]] | None = None,
                   prefix: tuple[str, ...] = ()) -> PipelineSpec:
    """Validate a pipeline mapping (sections, then registered components).

    ``sources`` lists ``(file, lines)`` pairs to search for the line of an error (the first that
    holds the key path wins); ``prefix`` is where the pipeline sits inside them.
    """
    srcs = sources if sources is not None else [(source, lines or {})]
    dotted = ".".join(prefix)
    if not isinstance(data, dict):
        head = f"{dotted} " if dotted else ""
        raise ConfigError(f"{where(prefix, srcs)}: {head}a pipeline must be a mapping with backend/dataset/"
                          f"task/strategy/budget/run sections, got {type(data).__name__}.")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        loc = _validation_loc(exc)
        raise ConfigError(f"{where(prefix + loc, srcs)}: "
                          f"{format_validation_error(exc, prefix=dotted, model=PipelineSpec)}") from None
    try:
        spec.check()
    except SpecError as exc:
        msg = str(exc)
        if dotted:
            msg = f"{dotted}.{msg}"
        raise ConfigError(f"{where(prefix + exc.loc, srcs)}: {msg}") from None
    return spec


def resolve_paths(data: Any, base: Path) -> Any:
    """A pipeline mapping whose relative dataset file and ``data_dir`` are found beside the YAML
    file that names them (when they are not found from the working directory)."""
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), dict):
        return data
    ds = dict(data["dataset"])
    for key in ("name", "data_dir"):
        value = ds.get(key)
        if isinstance(value, str) and (key == "data_dir" or value.endswith((".jsonl", ".json", ".csv"))):
            p = Path(value)
            if not p.is_absolute() and not p.exists() and (base / p).exists():
                ds[key] = str(base / p)
    return {**data, "dataset": ds}


def load_pipeline(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Read and validate a pipeline file; ``overrides`` maps dotted keys to values (CLI flags).
    A relative dataset path or ``data_dir`` is also looked up beside the file."""
    data, lines = read_yaml_file(path)
    data = resolve_paths(data, Path(path).resolve().parent)
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides)
    return parse_pipeline(data, str(path), lines)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with dotted keys set (``{"strategy.n": 4}``); a ``strategy.name``
    that changes the strategy drops the old strategy's options."""
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
        if parts[:-1] == ["strategy"] and last == "name" and node.get("name") not in (None, value):
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


# ------------------------------------------------------------------------------------ components


_SIGNATURE_MODELS: dict[type, type[BaseModel]] = {}


def options_model(cls: type) -> type[BaseModel]:
    """The pydantic model that validates ``cls``'s options: its ``Options`` class, else one made
    from its ``__init__`` parameters (annotations enforced; unknown keys rejected unless
    ``__init__`` takes ``**kwargs``)."""
    opts = getattr(cls, "Options", None)
    if isinstance(opts, type) and issubclass(opts, BaseModel):
        return opts
    if cls in _SIGNATURE_MODELS:
        return _SIGNATURE_MODELS[cls]
    init = cls.__init__  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(init)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    params = list(inspect.signature(init).parameters.values())[1:]
    open_ended = any(p.kind == p.VAR_KEYWORD for p in params)  # **options: other keys pass through
    for param in params:
        pname = param.name
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = hints.get(pname, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (ann, default)
    config = ConfigDict(extra="allow" if open_ended else "forbid", arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(f"{cls.__name__}Options", __config__=config, **fields)
    _SIGNATURE_MODELS[cls] = model
    return model


_SPEC_CLASSES: dict[str, type[ComponentSpec]] = {"strategy": StrategySpec, "verifier": VerifierSpec,
                                                  "retriever": RetrieverSpec}


def _as_spec(value: Any, kind: str | None) -> ComponentSpec:
    if isinstance(value, ComponentSpec):
        return value
    spec_cls = _SPEC_CLASSES.get(kind or "", ComponentSpec)
    try:
        return spec_cls.model_validate(value)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc), _validation_loc(exc)) from None


def _lookup(name: str, kind: str | None, name_loc: tuple[str, ...]) -> tuple[str, type]:
    from tts.registry import REGISTRY

    key = ".".join(name_loc)
    kinds = (kind,) if kind else COMPONENT_KINDS
    found = [k for k in kinds if name in REGISTRY.names(k)]
    if len(found) > 1:
        raise SpecError(f"{key} {name!r} is a {' and a '.join(found)}; type the field as StrategySpec, "
                        "VerifierSpec or RetrieverSpec.", name_loc)
    if not found:
        names = sorted({n for k in kinds for n in REGISTRY.names(k)})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        what = kind or "component"
        raise SpecError(f"{key} must be a registered {what} ({', '.join(names)}), got {name!r}{hint}",
                        name_loc)
    return found[0], REGISTRY.get(found[0], name)


def _nested(value: Any, loc: tuple[str, ...]) -> list[tuple[ComponentSpec, tuple[str, ...]]]:
    """Component specs inside an option value (directly, in lists/tuples or dict values)."""
    if isinstance(value, ComponentSpec):
        return [(value, loc)]
    out: list[tuple[ComponentSpec, tuple[str, ...]]] = []
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += _nested(v, (*loc, str(i)))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _nested(v, (*loc, str(k)))
    return out


def _models_in(value: Any, loc: tuple[str, ...]) -> list[tuple[BaseModel, tuple[str, ...]]]:
    if isinstance(value, BaseModel) and not isinstance(value, ComponentSpec):
        return [(value, loc)]
    out: list[tuple[BaseModel, tuple[str, ...]]] = []
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out += _models_in(v, (*loc, str(i)))
    return out


def _kind_hint(*words: str) -> str | None:
    for word in words:
        for kind in COMPONENT_KINDS:
            if kind in word.lower():
                return kind
    return None


Ref = tuple[str, str | None, dict[str, Any], tuple[str, ...], tuple[str, ...]]


def _other_refs(options: BaseModel, loc: tuple[str, ...]) -> list[Ref]:
    """Components named in the other shapes strategies use: a model with ``name``/``strategy`` and
    an ``options`` mapping (``verifiers: [{name: math, options: {...}}]``), or a ``verifier: NAME``
    field beside ``verifier_options``. Returns (name, kind, options, name loc, options loc)."""
    out: list[Ref] = []
    for fname in type(options).model_fields:
        value = getattr(options, fname)
        extra = getattr(options, f"{fname}_options", None)
        if isinstance(value, str) and fname in COMPONENT_KINDS and isinstance(extra, dict):
            out.append((value, fname, extra, (*loc, fname), (*loc, f"{fname}_options")))
        for item, iloc in _models_in(value, (*loc, fname)):
            opts = getattr(item, "options", None)
            fields = type(item).model_fields
            if not isinstance(opts, dict):
                continue
            if "strategy" in fields and isinstance(getattr(item, "strategy", None), str):
                out.append((item.strategy, "strategy", opts, (*iloc, "strategy"),  # type: ignore[attr-defined]
                            (*iloc, "options")))
            elif "name" in fields and isinstance(getattr(item, "name", None), str):
                kind = _kind_hint(type(item).__name__, fname)
                out.append((item.name, kind, opts, (*iloc, "name"), (*iloc, "options")))  # type: ignore[attr-defined]
    return out


def _validate_named(name: str, kind: str | None, raw: dict[str, Any], name_loc: tuple[str, ...],
                    opt_loc: tuple[str, ...]) -> tuple[type, BaseModel]:
    path = ".".join(opt_loc) or (kind or "component")
    _, cls = _lookup(name, kind, name_loc)
    model = options_model(cls)
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        message = format_validation_error(exc, prefix=path, model=model)
        raise SpecError(message, (*opt_loc, *_validation_loc(exc))) from None
    except ConfigError as exc:  # validators that raise ConfigError directly
        raise SpecError(f"{path}: {exc}", opt_loc) from None
    for fname in type(options).model_fields:
        for child, cloc in _nested(getattr(options, fname), (*opt_loc, fname)):
            validate_component(child, child.kind, cloc)
    for cname, ckind, copts, cname_loc, copt_loc in _other_refs(options, opt_loc):
        _validate_named(cname, ckind, copts, cname_loc, copt_loc)
    return cls, options


def validate_component(spec: Any, kind: str | None = None,
                       loc: tuple[str, ...] = ()) -> tuple[type, BaseModel]:
    """Look up ``spec.name`` in the registry and validate its options (recursively).

    Returns ``(class, validated options)``; raises :class:`SpecError` whose message starts with
    the dotted path (``strategy.inner.n must be >= 1, got 0.``) and whose ``loc`` is the key path.
    Nested components are validated too: :class:`ComponentSpec` fields, models with a ``name`` (or
    ``strategy``) and an ``options`` mapping, and ``verifier: NAME`` beside ``verifier_options``.
    """
    spec = _as_spec(spec, kind)
    return _validate_named(spec.name, kind or spec.kind, spec.options(), (*loc, "name"), loc)


def resolve_component(spec: Any, kind: str | None = None) -> dict[str, Any]:
    """``{name, **options}`` with every default filled in, nested components resolved too."""
    spec = _as_spec(spec, kind)
    _, options = validate_component(spec, kind or spec.kind, ())
    out: dict[str, Any] = {"name": spec.name}
    dumped = options.model_dump(mode="json", by_alias=True)
    for fname in type(options).model_fields:
        value = getattr(options, fname)
        if _nested(value, ()):
            out[fname] = _resolve_value(value)
        else:
            out[fname] = dumped.get(fname, dumped.get(type(options).model_fields[fname].alias or fname))
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
    return value


def build_component(spec: Any, kind: str | None = None) -> Any:
    """The object a component spec describes (a strategy, verifier, retriever).

    Accepts a :class:`ComponentSpec`, a mapping ``{name: ..., **options}``, a bare name, or an
    already built object (returned as is). A spec with ``limits`` is wrapped so the stage's
    budget is enforced.
    """
    if not isinstance(spec, (ComponentSpec, Mapping, str)):
        return spec
    spec = _as_spec(spec, kind)
    cls, options = validate_component(spec, kind or spec.kind, (kind or spec.kind or "component",))
    from_spec = getattr(cls, "from_spec", None)
    if callable(from_spec):
        obj = from_spec(options, build_component)
    elif getattr(cls, "Options", None) is type(options):
        obj = cls(options)
    else:
        kwargs = {k: getattr(options, k) for k in options.model_fields_set}
        obj = cls(**kwargs, **(options.model_extra or {}))
    if spec.limits is not None and spec.limits.active():
        obj = Limited(obj, spec.limits, label=spec.name)
    return obj


# ------------------------------------------------------------------------------------ budgets


class Limited:
    """A strategy or verifier run under :class:`Limits` (a per-stage budget).

    The stage runs in its own context whose every engine call is checked first against what the
    stage has spent on this problem (every call of the stage through the same context counts);
    its usage and trace are added to the caller's afterwards.
    """

    def __init__(self, inner: Any, limits: Limits, label: str = "") -> None:
        self.inner = inner
        self.limits = limits
        self.label = label or getattr(inner, "name", type(inner).__name__)
        self.name = getattr(inner, "name", self.label)
        if hasattr(inner, "cost"):
            self.cost = inner.cost

    def _child(self, ctx: Context, spent: Any) -> Context:
        child: Any = _limited_context_class()(ctx.scheduler, ctx.task, problem=ctx.problem, seed=ctx.seed,
                                              verifier=ctx.verifier, extras=ctx.extras)
        child.limits = (self.limits, self.label, spent)
        return child

    async def _run(self, ctx: Context, call: Callable[[Context], Any]) -> Any:
        from tts.types import Usage

        # what this stage already spent on this problem (earlier calls through the same context)
        extras: dict[Any, Any] = ctx.extras
        spent = extras.setdefault(("tts.limits", id(self)), Usage())
        child = self._child(ctx, spent)
        try:
            if self.limits.max_wall_time is not None:
                try:
                    return await asyncio.wait_for(call(child), self.limits.max_wall_time)
                except asyncio.TimeoutError:
                    limit = self.limits.max_wall_time
                    raise TimeoutError(f"{self.label} exceeded max_wall_time={limit}s") from None
            return await call(child)
        finally:
            spent.add(child.usage)
            ctx.usage.add(child.usage)
            ctx.trace.events.extend(child.trace.events)

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        result: Result = await self._run(ctx, lambda c: self.inner.solve(problem, c))
        return result

    async def score(self, problem: Problem, candidates: Any, ctx: Context | None = None) -> Any:
        if ctx is None:  # a rule verifier called without a context makes no engine calls
            return await self.inner.score(problem, candidates, ctx)
        return await self._run(ctx, lambda c: self.inner.score(problem, candidates, c))


_LIMITED_CONTEXT: type | None = None


def _limited_context_class() -> type:
    """A :class:`~tts.context.Context` that checks its limits before every engine call."""
    global _LIMITED_CONTEXT
    if _LIMITED_CONTEXT is None:
        from tts.context import Context

        class LimitedContext(Context):
            __slots__ = ("limits",)

            limits: tuple[Limits, str, Any]

            def submit(self, request: Any) -> Any:
                limits, label, spent = self.limits
                check_limits(spent + self.usage, limits, label)
                return super().submit(request)

        _LIMITED_CONTEXT = LimitedContext
    return _LIMITED_CONTEXT


def check_limits(usage: Any, limits: Limits, label: str) -> None:
    """Raise :class:`BudgetExceeded` when ``usage`` has reached one of ``limits``."""
    checks = ((limits.max_tokens, usage.prompt_tokens + usage.completion_tokens, "max_tokens"),
              (limits.max_completion_tokens, usage.completion_tokens, "max_completion_tokens"),
              (limits.max_calls, usage.calls, "max_calls"))
    for limit, used, field in checks:
        if limit is not None and used >= limit:
            raise BudgetExceeded(f"{label}: {field}={limit} reached (used {used}); "
                                 "raise the limit or lower n.")


# ------------------------------------------------------------------------------------ building


def _pattern_task_class() -> type:
    from tts.task import Task

    @dataclass(frozen=True)
    class RegexTask(Task):
        """A task whose answers are read with a regular expression (its first group, last match)."""

        answer_pattern: str = ""

        def extract(self, text: str) -> str | None:
            matches = list(re.finditer(self.answer_pattern, text))
            for m in reversed(matches):
                group = next((g for g in m.groups() if g is not None), None)
                if group is not None and group.strip():
                    return group.strip()
            return None

    return RegexTask


_REGEX_TASK: type | None = None


def apply_task(base: Task, spec: TaskSpec) -> Task:
    """``base`` with the fields ``spec`` sets replaced."""
    global _REGEX_TASK
    changes = {k: v for k, v in spec.model_dump(exclude_none=True).items() if k != "answer_pattern"}
    if "examples" in changes:
        changes["examples"] = tuple(tuple(e) for e in changes["examples"])
    if spec.answer_pattern is None:
        return dataclasses.replace(base, **changes) if changes else base
    if _REGEX_TASK is None:
        _REGEX_TASK = _pattern_task_class()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "answer_pattern"}
    task: Task = _REGEX_TASK(**{**fields, **changes, "answer_pattern": spec.answer_pattern})
    return task


def _backend_class(name: str) -> Any:
    from tts.registry import REGISTRY

    return REGISTRY.get("backend", name)


_FAKE_EXTRA_OPTIONS = ("oracle", "replies", "default")


def _check_backend(spec: BackendSpec) -> None:
    from tts.registry import REGISTRY

    names = REGISTRY.names("backend")
    if spec.name not in names:
        close = difflib.get_close_matches(spec.name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"backend.name must be one of {', '.join(names)}, got {spec.name!r}{hint}",
                        ("backend", "name"))
    if spec.quantize is not None and spec.name != "hf":
        raise SpecError(f"backend.quantize applies to the hf backend only, got backend {spec.name!r}; "
                        "drop it.", ("backend", "quantize"))
    try:
        cls = _backend_class(spec.name)
        params = inspect.signature(cls.__init__).parameters
    except (ConfigError, ImportError, ValueError, TypeError):
        return  # an engine that is not installed: checked when it is built
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in params if p != "self"] + (list(_FAKE_EXTRA_OPTIONS) if spec.name == "fake" else [])
    for key in spec.options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid options: {', '.join(allowed)}"
            raise SpecError(f"backend.{key} is not an option of backend {spec.name!r}; {hint}",
                            ("backend", key))


class OracleOptions(BaseModel):
    """``backend: {name: fake, oracle: {...}}``: a simulated model with known accuracy per problem.

    Problem i answers correctly with probability ``p_correct[i % len(p_correct)]`` (or its
    ``metadata["p_correct"]``), else one of ``wrong`` (default: four numbers near the reference);
    completions are ``length`` tokens long (uniform in the range). The study's datasets get a
    ``[oracle:ID]`` marker in each question.
    """

    model_config = ConfigDict(extra="forbid")

    p_correct: float | list[float] = 0.5
    wrong: list[str] | None = None
    wrong_weights: list[float] | None = None
    length: tuple[int, int] = (64, 64)
    logprob_correct: float = -0.3
    logprob_wrong: float = -0.6
    logprob_noise: float = 0.15


def _wrong_answers(reference: str | None, given: list[str] | None) -> tuple[str, ...]:
    if given:
        return tuple(given)
    try:
        value = int(float(str(reference)))
        return tuple(str(value + d) for d in (1, 2, 3, 4))
    except (TypeError, ValueError):
        return tuple(f"{reference}-{d}" for d in (1, 2, 3, 4))


def _oracle_backend(options: dict[str, Any], problems: list[Problem]) -> tuple[Any, list[Problem]]:
    from tts.backends.fake import FakeBackend, OracleModel, OracleSpec
    from tts.types import Problem

    try:
        oracle = OracleOptions.model_validate(options.pop("oracle"))
    except ValidationError as exc:
        msg = format_validation_error(exc, prefix="backend.oracle", model=OracleOptions)
        raise ConfigError(msg) from None

    class OracleReplies(OracleModel):
        """The oracle's answers as bare ``The answer is X.`` replies (any answer format reads them)."""

        def reply(self, request: Any, prompt: str, index: int, rng: Any) -> tuple[str, int, float | None]:
            text, tokens, lp = super().reply(request, prompt, index, rng)
            answer = text.rsplit("The answer is ", 1)[-1].rstrip(".")
            return f"The answer is {answer}.", tokens, lp

    model = OracleReplies()
    ps = oracle.p_correct if isinstance(oracle.p_correct, list) else [oracle.p_correct]
    out = []
    for i, p in enumerate(problems):
        pc = float(p.metadata.get("p_correct", ps[i % len(ps)]))
        spec = OracleSpec(p_correct=pc, answer=str(p.reference),
                          wrong=_wrong_answers(p.reference, oracle.wrong),
                          wrong_weights=tuple(oracle.wrong_weights) if oracle.wrong_weights else None,
                          length=tuple(oracle.length),  # type: ignore[arg-type]
                          logprob_correct=oracle.logprob_correct, logprob_wrong=oracle.logprob_wrong,
                          logprob_noise=oracle.logprob_noise)
        model.specs[p.id] = spec
        question = p.question if f"[oracle:{p.id}]" in p.question else f"[oracle:{p.id}] {p.question}"
        out.append(Problem(p.id, question, p.reference, {**p.metadata, "p_correct": pc}))
    return FakeBackend(model, **options), out


def make_backend(spec: BackendSpec,
                 problems: list[Problem] | None = None) -> tuple[Any, list[Problem] | None]:
    """The backend ``spec`` describes, and the problems as that backend needs them (the fake
    oracle marks them; other backends return them unchanged)."""
    from tts.backends import make_backend as _make

    options = dict(spec.options)
    if spec.name == "fake" and "oracle" in options:
        return _oracle_backend(options, list(problems or []))
    if spec.name == "fake" and ("replies" in options or "default" in options):
        from tts.backends.fake import FakeBackend

        replies, default = options.pop("replies", None), options.pop("default", None)
        return FakeBackend.scripted(by_prompt=replies, default=default, **options), problems
    backend = _make(spec.name, **options)
    if spec.quantize is not None:
        from tts.quantize import quantize_backend

        quantize_backend(backend, spec.quantize)
    return backend, problems


@dataclass
class Pipeline:
    """A pipeline's objects, built from a :class:`PipelineSpec`."""

    spec: PipelineSpec
    backend: Any
    dataset: Dataset
    strategy: Any
    task: Task

    @property
    def problems(self) -> list[Problem]:
        return self.dataset.problems

    def run(self, **kw: Any) -> Any:
        """Run the strategy over the dataset (:func:`tts.runner.run`); ``kw`` overrides run options."""
        from tts.runner import run

        run_spec = self.spec.run
        options = {"task": self.task, "concurrency": run_spec.concurrency, "seed": run_spec.seed, **kw}
        return run(self.strategy, self.problems, self.backend, **options)


def load_pipeline_dataset(spec: DatasetSpec, task: TaskSpec | None = None) -> Dataset:
    from tts.datasets import Dataset, load_dataset

    ds = load_dataset(spec.name, limit=spec.limit, seed=spec.seed, data_dir=spec.data_dir, fields=spec.fields,
                      split=spec.split, format=spec.format)
    return Dataset(ds.name, ds.problems, apply_task(ds.task, task)) if task is not None else ds


def build_strategy(spec: PipelineSpec) -> Any:
    """The pipeline's strategy, wrapped in its per-problem budget when one is set."""
    strategy = build_component(spec.strategy, "strategy")
    b = spec.budget
    per_problem = Limits(max_tokens=b.max_tokens, max_completion_tokens=b.max_completion_tokens,
                         max_calls=b.max_calls, max_wall_time=b.max_wall_time)
    return Limited(strategy, per_problem, label="budget") if per_problem.active() else strategy


def build_pipeline(spec: PipelineSpec, *, backend: Any = None, dataset: Dataset | None = None) -> Pipeline:
    """Build the objects of ``spec``: backend (unless given), dataset with the task overrides,
    strategy (with its budgets). Raises :class:`~tts.errors.ConfigError` on invalid options."""
    from tts.datasets import Dataset

    spec.check()
    ds = dataset if dataset is not None else load_pipeline_dataset(spec.dataset)
    task = apply_task(ds.task, spec.task)
    strategy = build_strategy(spec)
    problems: list[Problem] | None = ds.problems
    if backend is None:
        backend, problems = make_backend(spec.backend, ds.problems)
    return Pipeline(spec, backend, Dataset(ds.name, list(problems or []), task), strategy, task)
