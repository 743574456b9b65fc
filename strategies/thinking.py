"""Reasoning models: ``<think>`` sections parsed apart from the answer, and a thinking budget with
budget forcing (the ``thinking`` proposer, :mod:`tts.strategies._thinking`).

It is ``self_consistency`` with this proposer and n=1 by default: with n > 1, n chains run
concurrently and the plurality answer wins; weights and early stopping apply too.
"""

from __future__ import annotations

from typing import ClassVar

from tts.sampling import Count
from tts.strategies._proposer import ProposerSpec, proposer
from tts.strategies._thinking import parse_thinking, split_thinking
from tts.strategies.self_consistency import SelfConsistency, SelfConsistencyOptions

__all__ = ["Thinking", "ThinkingOptions", "parse_thinking", "split_thinking"]


class ThinkingOptions(SelfConsistencyOptions):
    n: Count = 1
    """Chains; with n > 1 the plurality answer wins."""
    proposer: ProposerSpec = proposer("thinking")
    """The thinking proposer: ``max_think``, ``min_think``, ``max_waits``, ``sampling``, ..."""


class Thinking(SelfConsistency):
    """Reasoning-model decoding with a thinking budget and budget forcing (module docstring)."""

    name: ClassVar[str] = "thinking"
    Options: ClassVar[type[SelfConsistencyOptions]] = ThinkingOptions
