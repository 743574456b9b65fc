"""The one component spec shape ``{name, options..., limits}``, nested components found from the
Options' types (never guessed), old shapes refused in one line, and the one builder of each kind."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

import tts
from tts import ConfigError, FakeBackend, SelfConsistency
from tts.config import (
    BackendSpec,
    ComponentSpec,
    StrategySpec,
    VerifierSpec,
    build_component,
    build_strategy,
    load_pipeline,
    make_backend,
    resolve_component,
    validate_component,
)
from tts.config.components import SpecError
from tts.limits import Limits
from tts.registry import REGISTRY


class _Named(BaseModel):
    """A model with ``name`` and ``options`` that is *not* a component spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "x"
    options: dict[str, Any] = Field(default_factory=dict)


class _PickOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    verifiers: tuple[VerifierSpec, ...] = ()
    judge: VerifierSpec | None = None
    parts: dict[str, StrategySpec] = Field(default_factory=dict)
    label: _Named = _Named()


class _Pick:
    """Test strategy whose options hold verifiers and strategies in several container types."""

    name: ClassVar[str] = "test_pick"
    Options = _PickOptions

    def __init__(self, options: _PickOptions | None = None, **kw: Any) -> None:
        self.options = options or _PickOptions(**kw)
        self.verifiers = [(build_component(v, "verifier"), v.weight) for v in self.options.verifiers]


@pytest.fixture()
def pick() -> Any:
    REGISTRY.names("strategy")
    REGISTRY.register("strategy", "test_pick", _Pick)
    yield _Pick
    REGISTRY._items["strategy"].pop("test_pick", None)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


def test_one_shape_name_options_limits() -> None:
    assert StrategySpec.model_validate("greedy").name == "greedy"
    spec = StrategySpec.model_validate({"name": "self_consistency", "n": 4, "limits": {"max_calls": 2}})
    assert spec.options() == {"n": 4} and spec.limits == Limits(max_calls=2)
    # a verifier reference's weight belongs to the reference, not to the verifier's options
    ref = VerifierSpec.model_validate({"name": "math", "weight": 0.5, "timeout": 2.0})
    assert ref.weight == 0.5 and ref.options() == {"timeout": 2.0}
    # the older shape, options nested under ``options:``, is refused with the flat one
    with pytest.raises(SpecError) as info:
        validate_component({"name": "math", "weight": 2, "options": {"timeout": 2.0}}, "verifier", ("verifier",))
    assert str(info.value) == (
        "verifier.options is the old shape; write the options beside the name: {name: math, timeout: ...}"
    )
    assert info.value.loc == ("verifier", "options")
    with pytest.raises(SpecError, match=r"limits\.max_calls must be >= 1"):
        validate_component({"name": "greedy", "limits": {"max_calls": 0}}, "strategy")
    backend = BackendSpec.model_validate({"name": "fake", "default": "x"})
    assert backend.options() == {"default": "x"} and BackendSpec().name == "hf"


def test_nested_components_are_found_from_the_options_types(tmp_path: Path, pick: Any) -> None:
    cases = [
        (
            "verifiers: [math, {name: math, timout: 2}]",
            "strategy.verifiers.1.timout is not a known field; did you mean 'timeout'?",
        ),
        ("judge: {name: maths}", "strategy.judge.name must be a registered verifier"),
        ("parts: {a: {name: self_consistency, n: 0}}", "strategy.parts.a.n must be >= 1, got 0."),
        ("verifiers: [{name: math, options: {timeout: 2}}]", "strategy.verifiers.0.options is the old shape"),
    ]
    for line, expected in cases:
        p = _write(tmp_path, f"strategy:\n  name: test_pick\n  {line}\n")
        with pytest.raises(ConfigError) as info:
            load_pipeline(p)
        assert str(info.value).startswith(f"{p}:3: ") and expected in str(info.value), str(info.value)
    # a model that merely has ``name`` and ``options`` fields is not guessed to be a component
    spec = load_pipeline(_write(tmp_path, "strategy:\n  name: test_pick\n  label: {name: maths, options: {n: 0}}\n"))
    built = build_strategy(spec.strategy)
    assert isinstance(built, _Pick) and built.options.label.name == "maths"


def test_nested_defaults_are_resolved_and_weights_kept(pick: Any) -> None:
    resolved = resolve_component(
        {
            "name": "test_pick",
            "verifiers": [{"name": "math", "weight": 0.5}],
            "parts": {"a": {"name": "self_consistency", "n": 2}},
        },
        "strategy",
    )
    assert resolved["verifiers"][0]["weight"] == 0.5 and resolved["verifiers"][0]["name"] == "math"
    assert resolved["parts"]["a"]["n"] == 2 and resolved["parts"]["a"]["proposer"]["sampling"]["temperature"] == 0.7
    built = build_component({"name": "test_pick", "verifiers": ["math", {"name": "math", "weight": 2.0}]}, "strategy")
    assert [w for _, w in built.verifiers] == [1.0, 2.0]
    assert all(v.name == "math" for v, _ in built.verifiers)


@pytest.mark.parametrize(
    ("block", "line", "shape"),
    [
        (
            "name: test_pick\n  verifier: math\n  verifier_options: {timeout: 2}",
            4,
            "strategy.verifier_options is the old shape; write the verifier as one component: verifiers: "
            "[{name: math, ...}]",
        ),
        (
            "name: test_twice_old\n  verifier_options: {timeout: 2}",
            3,
            "strategy.verifier_options is the old shape; write the verifier as one component: "
            "verifier: {name: math, ...}",
        ),
    ],
)
def test_old_verifier_options_shape_is_refused_in_one_line(
    tmp_path: Path, pick: Any, block: str, line: int, shape: str
) -> None:
    class _OldOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        verifier: VerifierSpec | None = None

    class _Old:
        name: ClassVar[str] = "test_twice_old"
        Options = _OldOptions

        def __init__(self, options: Any = None, **kw: Any) -> None:
            self.options = options

    REGISTRY.register("strategy", "test_twice_old", _Old)
    try:
        p = _write(tmp_path, f"strategy:\n  {block}\n")
        with pytest.raises(ConfigError) as info:
            load_pipeline(p)
        assert str(info.value) == f"{p}:{line}: {shape}"
    finally:
        REGISTRY._items["strategy"].pop("test_twice_old", None)


def test_build_component_passes_built_objects_and_refuses_unknown_names() -> None:
    sc = SelfConsistency(n=2)
    assert build_component(sc, "strategy") is sc
    with pytest.raises(ConfigError, match=r"strategy\.name must be a registered strategy .*did you mean 'greedy'"):
        build_component({"name": "gredy"}, "strategy")
    with pytest.raises(ConfigError, match=r"verifier\.timeout must be a number"):
        build_component({"name": "math", "timeout": "soon"}, "verifier")
    # a spec without a fixed kind finds the kind whose registry has the name
    assert build_component(ComponentSpec(name="math")).name == "math"


def test_build_strategy_and_make_backend_exist_once_with_one_signature() -> None:
    assert tts.build_strategy is build_strategy and tts.make_backend is make_backend
    import tts.backends as backends
    import tts.registry as registry

    assert not hasattr(backends, "make_backend") and not hasattr(registry, "build_strategy")  # one home
    a = build_strategy("self_consistency", n=3)
    b = build_strategy({"name": "self_consistency", "n": 3})
    c = build_strategy(StrategySpec.model_validate({"name": "self_consistency", "n": 2}), n=3)
    assert a.options == b.options == c.options and a.options.n == 3
    with pytest.raises(ConfigError, match=r"^strategy\.n must be >= 1, got 0\.$"):
        build_strategy("self_consistency", n=0)
    scripted = make_backend("fake", default="The answer is 7.")
    assert isinstance(scripted, FakeBackend)
    assert isinstance(make_backend({"name": "fake", "prefix_cache": True}), FakeBackend)
    assert isinstance(make_backend(BackendSpec(name="fake")), FakeBackend)
    with pytest.raises(ConfigError, match=r"backend\.defalt is not a known field; did you mean 'default'\?"):
        make_backend("fake", defalt="x")
    with pytest.raises(ConfigError, match="oracle needs the problems"):
        make_backend("fake", oracle={"p_correct": 0.5})
    with pytest.raises(ConfigError, match=r"quantize applies to the hf backend only"):
        make_backend("fake", quantize="int8")


def test_a_whole_model_check_naming_a_key_points_at_that_key(tmp_path: Path) -> None:
    from pydantic import model_validator

    class _MovedOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int = 1

        @model_validator(mode="before")
        @classmethod
        def _moved(cls, data: Any) -> Any:
            if isinstance(data, dict) and "prompt" in data:
                raise ValueError("prompt belongs to the proposer now; write proposer: {name: few_shot, prompt: ...}")
            return data

    class _Moved:
        name: ClassVar[str] = "test_moved"
        Options = _MovedOptions

    REGISTRY.names("strategy")
    REGISTRY.register("strategy", "test_moved", _Moved)
    try:
        p = _write(tmp_path, "strategy:\n  name: test_moved\n  n: 2\n  prompt: direct\n")
        with pytest.raises(ConfigError) as info:
            load_pipeline(p)
        assert str(info.value).startswith(f"{p}:4: ") and "prompt belongs to the proposer now" in str(info.value)
    finally:
        REGISTRY._items["strategy"].pop("test_moved", None)


def test_a_component_without_options_is_refused_with_the_fix() -> None:
    class _Bare:
        name: ClassVar[str] = "test_bare"

        def __init__(self, n: int = 1) -> None:
            self.n = n

    REGISTRY.names("strategy")
    REGISTRY.register("strategy", "test_bare", _Bare)
    try:
        with pytest.raises(ConfigError, match=r"_Bare has no Options model; give the component a pydantic `Options`"):
            build_strategy("test_bare", n=2)
    finally:
        REGISTRY._items["strategy"].pop("test_bare", None)
