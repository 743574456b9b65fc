"""SamplingParams validation and normalisation."""

from __future__ import annotations

import pytest

from tts import ConfigError, Constraint, SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5."),
        ({"top_p": 0}, "top_p must be in (0, 1], got 0.0."),
        ({"temperature": -1}, "temperature must be >= 0, got -1.0."),
        ({"n": 0}, "n must be >= 1, got 0."),
        ({"max_tokens": 0}, "max_tokens must be >= 1, got 0."),
        ({"min_p": 1.0}, "min_p must be in [0, 1), got 1.0."),
        ({"presence_penalty": 3}, "presence_penalty must be in [-2, 2], got 3.0."),
        ({"beam_width": 1}, "beam_width must be >= 2, got 1."),
        ({"beam_width": 2, "n": 3}, "n must be <= beam_width=2 for beam search, got 3."),
        ({"tempreature": 0.5}, "tempreature is not a known field; did you mean 'temperature'?"),
    ],
)
def test_bad_params_raise_documented_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SamplingParams(**kwargs)
    assert str(info.value) == message


def test_greedy_with_n_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^n must be 1 for greedy decoding \(temperature=0\), got 8"):
        SamplingParams(temperature=0, n=8)


def test_normalisation_and_hashing() -> None:
    p = SamplingParams(stop="###", top_k=0, banned_words=["foo"])
    assert p.stop == ("###",) and p.top_k is None and p.banned_words == ("foo",)
    assert hash(p) == hash(SamplingParams(stop=("###",), banned_words=("foo",)))
    assert p.with_n(4).n == 4 and p.with_n(4).stop == ("###",)
    assert SamplingParams(temperature=0).greedy and not SamplingParams(beam_width=2, temperature=0).greedy


def test_constraint_validation() -> None:
    with pytest.raises(ConfigError, match=r"constraint\.choices must list at least one option"):
        SamplingParams(constraint={"kind": "choice"})
    c = Constraint.choice(["yes", "no"])
    assert SamplingParams(constraint=c).constraint == c
    assert Constraint.json({"type": "object"}).schema_ == '{"type": "object"}'
