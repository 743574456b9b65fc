"""Every verifier takes a pydantic ``Options`` (unknown keys and loose types refused with one
ConfigError line), is built from an ``Options`` instance or keyword arguments alike, and declares
its cost."""

from __future__ import annotations

from typing import Any

import pytest

from tts.errors import ConfigError
from tts.registry import REGISTRY
from tts.types import Candidate, Problem, Score
from tts.verifiers.base import VerifierCost, VerifierOptions
from tts.verifiers.qa import QAOptions, QAVerifier


class Rule:
    name = "rule"
    cost = VerifierCost(kind="rule")

    async def score(self, problem: Problem, candidates: list[Candidate], ctx: Any = None) -> list[Score]:
        return [Score(value=1.0, passed=True) for _ in candidates]


class Scorer:
    def rewards(self, inputs: list[Any]) -> list[float]:
        return [0.5 for _ in inputs]


class NLI:
    async def nli(self, pairs: Any, ctx: Any = None) -> list[Any]:
        return []


REQUIRED: dict[str, dict[str, Any]] = {
    "all_pass": {"verifiers": [Rule()]},
    "cached": {"verifier": Rule()},
    "calibrated": {"verifier": Rule(), "calibrator": lambda s: s},
    "cascade": {"stages": [Rule()]},
    "fact_check": {"nli": NLI()},
    "orm": {"model": Scorer()},
    "prm": {"model": Scorer()},
    "weighted_sum": {"verifiers": [Rule()]},
}
"""What each verifier needs besides its defaults."""

# a numeric option of each verifier, for the strict-type check
NUMERIC = {
    "math": "timeout",
    "program": "timeout",
    "qa": "threshold",
    "judge": "high",
    "pairwise_judge": "max_tokens",
    "self_verify": "threshold",
    "orm": "batch_size",
    "prm": "batch_size",
    "fact_check": "top_k",
    "consistency": "threshold",
    "weighted_sum": "threshold",
    "cascade": "rejected_value",
    "calibrated": "threshold",
    "game24": "target",
}

NAMES = REGISTRY.names("verifier")


def test_every_builtin_verifier_is_registered() -> None:
    assert set(NAMES) >= {
        "math",
        "qa",
        "choice",
        "program",
        "game24",
        "judge",
        "pairwise_judge",
        "self_verify",
        "orm",
        "prm",
        "fact_check",
        "consistency",
        "weighted_sum",
        "all_pass",
        "cascade",
        "cached",
        "calibrated",
    }


@pytest.mark.parametrize("name", NAMES)
def test_options_model_builds_and_declares_cost(name: str) -> None:
    cls = REGISTRY.get("verifier", name)
    assert issubclass(cls.Options, VerifierOptions)
    kw = REQUIRED.get(name, {})
    by_kw = cls(**kw)
    by_options = cls(cls.Options(**kw))
    assert by_kw.options == by_options.options
    assert isinstance(by_kw.cost, VerifierCost)  # declared, not the "unknown" fallback
    with pytest.raises(ConfigError, match="not both"):
        cls(cls.Options(**kw), **kw or {"bogus": 1})


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_one_line_with_a_suggestion(name: str) -> None:
    cls = REGISTRY.get("verifier", name)
    field = next(iter(cls.Options.model_fields))
    with pytest.raises(ConfigError) as info:
        cls(**REQUIRED.get(name, {}), **{field + "x": 1})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"verifier {name}: ")
    assert f"did you mean {field!r}" in message


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_numbers_are_strict(name: str) -> None:
    cls = REGISTRY.get("verifier", name)
    for bad in ("4", True, float("nan")):
        with pytest.raises(ConfigError, match=NUMERIC[name]):
            cls(**REQUIRED.get(name, {}), **{NUMERIC[name]: bad})


def test_positional_primary_option_and_validators() -> None:
    assert QAVerifier("f1").options == QAOptions(metric="f1")
    with pytest.raises(ConfigError, match=r"verifier qa: metric must be 'em' or 'f1', got 'bleu'\."):
        QAVerifier(metric="bleu")
    program = REGISTRY.get("verifier", "program")
    assert program(["assert True"]).options.tests == ["assert True"]
    assert program(tests=("assert 1",)).options.tests == ["assert 1"]  # a tuple is a list of tests
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        program(timeout=0)


async def test_combinators_take_verifier_specs_and_build_them() -> None:
    from tts.config.components import build_component
    from tts.verifiers.combine import Cascade, WeightedSum
    from tts.verifiers.math import MathVerifier

    combo = build_component(
        {
            "name": "weighted_sum",
            "threshold": 0.5,
            "verifiers": ["math", {"name": "qa", "weight": 3.0, "metric": "f1"}],
        },
        "verifier",
    )
    assert isinstance(combo, WeightedSum)
    assert [type(v).__name__ for v in combo.verifiers] == ["MathVerifier", "QAVerifier"]
    assert combo.weights == [1.0, 3.0] and combo.verifiers[1].options.metric == "f1"
    problem = Problem("p", "What is 6 * 7?", "42")
    [right, wrong] = await combo.score(problem, [Candidate("42", "42"), Candidate("41", "41")], None)
    assert (right.value, wrong.value) == (1.0, 0.0)

    cascade = Cascade([{"verifier": "qa", "threshold": 0.5}, MathVerifier()])
    assert type(cascade.stages[0].verifier).__name__ == "QAVerifier" and cascade.stages[0].threshold == 0.5
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        build_component({"name": "all_pass", "verifiers": [{"name": "math", "timout": 1}]}, "verifier")
    with pytest.raises(ConfigError, match="positive sum"):
        WeightedSum([{"name": "math", "weight": 0.0}])
