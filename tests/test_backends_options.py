"""Backend options: one style for every backend (a strict pydantic ``Options`` validated by
``parse_options``, one-line errors with did-you-mean) and the ``pricing`` option that prices usage.

No engine is started: the hf options are validated without loading a model, vLLM gets a fake engine
factory, and the OpenAI backend opens no connection until a request is submitted.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tts.backends.base import BackendOptions, Pricing
from tts.backends.fake import CostModel, FakeBackend, FakeOptions, OracleModel, OracleSpec
from tts.backends.hf import HFBackend, HFOptions
from tts.backends.openai import OpenAIBackend, OpenAIOptions
from tts.backends.vllm import VLLMBackend, VLLMOptions
from tts.errors import ConfigError

BACKENDS: dict[str, Any] = {"fake": FakeBackend, "hf": HFBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}
PRICING = {"prompt": 2.0, "cached_prompt": 0.5, "completion": 8.0}


def _no_engine(**kwargs: Any) -> object:
    return object()


def _build(name: str, **options: Any) -> Any:
    if name == "vllm":
        return VLLMBackend(model="m", engine_factory=_no_engine, **options)
    if name == "hf":  # validating the options is all the hf constructor does before loading a model
        return None
    return BACKENDS[name](**options)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_has_strict_options_with_pricing(name: str) -> None:
    options = BACKENDS[name].Options
    assert issubclass(options, BackendOptions)
    assert options.model_config.get("extra") == "forbid" and options.model_config.get("strict") is True
    assert options.model_fields["pricing"].default is None
    for field, info in options.model_fields.items():
        assert info.description, f"{options.__name__}.{field} needs a docstring"


@pytest.mark.parametrize(
    ("name", "typo", "field"),
    [
        ("fake", "prefix_cach", "prefix_cache"),
        ("hf", "max_batch_sequence", "max_batch_sequences"),
        ("openai", "max_retry", "max_retries"),
        ("vllm", "tensor_parallel", "tensor_parallel_size"),
    ],
)
def test_unknown_option_is_one_line_with_did_you_mean(name: str, typo: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        BACKENDS[name](**({"model": "m", "engine_factory": _no_engine} if name == "vllm" else {}), **{typo: 1})
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name} backend: {typo} is not a known field; did you mean {field!r}?"), msg


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_types_are_strict(name: str) -> None:
    field = {"fake": "seed", "hf": "seed", "openai": "max_retries", "vllm": "seed"}[name]
    with pytest.raises(ConfigError, match=rf"^{name} backend: {field} must be an integer, got '4'\.$"):
        BACKENDS[name](**({"model": "m", "engine_factory": _no_engine} if name == "vllm" else {}), **{field: "4"})
    with pytest.raises(ConfigError, match=rf"^{name} backend: pricing.prompt must be a finite number, got nan\.$"):
        BACKENDS[name](
            **({"model": "m", "engine_factory": _no_engine} if name == "vllm" else {}),
            pricing={"prompt": math.nan, "completion": 1.0},
        )


def test_hf_options_validate_before_the_model_loads() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^hf backend: dtype must be 'auto', 'float32', 'bfloat16' or 'float16', "
        r"got 'int8'\.$",
    ):
        HFBackend(dtype="int8")
    with pytest.raises(ConfigError, match=r"^hf backend: max_batch_sequences must be >= 1, got 0\.$"):
        HFBackend(max_batch_sequences=0)
    assert HFOptions(pricing=Pricing(**PRICING)).pricing == Pricing(**PRICING)


@pytest.mark.parametrize("name", ["fake", "openai", "vllm"])
def test_pricing_is_exposed_on_the_backend(name: str) -> None:
    backend = _build(name, pricing=PRICING)
    assert backend.pricing == Pricing(**PRICING)
    assert _build(name).pricing is None
    if name == "vllm":
        backend.shutdown()


def test_options_as_a_model_or_a_mapping() -> None:
    fake, openai = FakeOptions(seed=3), OpenAIOptions(timeout=3)
    assert FakeBackend(fake).options == fake and OpenAIBackend(openai).options == openai
    with pytest.raises(ConfigError, match="not both"):
        FakeBackend(None, fake, seed=1)
    with pytest.raises(ConfigError, match="not both"):
        OpenAIBackend(openai, timeout=1)
    assert FakeBackend(OracleModel(), {"cost": {"decode_step": 0.5}}).cost == CostModel(decode_step=0.5)
    assert VLLMOptions.model_fields["pricing"].annotation == Pricing | None


def test_pricing_cost() -> None:
    p = Pricing(**PRICING)
    # 1000 prompt tokens of which 400 cached, 500 completion tokens
    assert p.cost(1000, 400, 500) == pytest.approx((600 * 2.0 + 400 * 0.5 + 500 * 8.0) / 1e6)
    no_discount = Pricing(prompt=2.0, completion=8.0)
    assert no_discount.cost(1000, 400, 500) == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert Pricing(prompt=1, completion=0).cost(10**6, 0, 10**6) == 1.0  # ints are fine for prices
    for bad, message in (
        ({"prompt": -1.0, "completion": 1.0}, "prompt must be >= 0"),
        ({"prompt": "1", "completion": 1.0}, "prompt must be a number"),
        ({"prompt": 1.0}, "completion is required"),
        ({"prompt": 1.0, "completion": 1.0, "cached": 0.1}, "pricing.cached is not a known field"),
    ):
        with pytest.raises(ConfigError, match=message):
            FakeBackend(pricing=bad)


def test_scheduler_charges_cost_from_pricing() -> None:
    from tts import SelfConsistency, run

    model = OracleModel()
    problems = [model.add(f"p{i}", OracleSpec(p_correct=0.7, length=(10, 10))) for i in range(3)]
    backend = FakeBackend(model, pricing=PRICING, prefix_cache=True, block_size=2)
    report = run(SelfConsistency(n=4), problems, backend)
    usage = report.usage
    assert usage.completion_tokens == 3 * 4 * 10 and usage.prompt_tokens > 0
    expected = Pricing(**PRICING).cost(usage.prompt_tokens, usage.cached_prompt_tokens, usage.completion_tokens)
    assert usage.cost == pytest.approx(expected) and usage.cost > 0
    assert sum(r.usage.cost for r in report.results) == pytest.approx(usage.cost)
    assert run(SelfConsistency(n=4), problems, FakeBackend(model)).usage.cost == 0.0
