"""Greedy: one deterministic answer to the task's direct prompt. The baseline every study compares with."""

from __future__ import annotations

from typing import ClassVar

from tts.errors import ConfigError
from tts.strategies._proposer import ProposerSpec, proposer
from tts.strategies.cot import CoT, CoTOptions

__all__ = ["Greedy", "GreedyOptions"]


class GreedyOptions(CoTOptions):
    proposer: ProposerSpec = proposer("few_shot", prompt="direct", sampling={"temperature": 0, "max_tokens": 256})
    """The proposer (``sampling.temperature`` must be 0)."""


class Greedy(CoT):
    """:class:`~tts.strategies.cot.CoT` on the direct prompt, refusing any temperature but 0."""

    name: ClassVar[str] = "greedy"
    Options: ClassVar[type[CoTOptions]] = GreedyOptions

    def __init__(self, options: GreedyOptions | None = None, **kw: object) -> None:
        super().__init__(options, **kw)
        if not self.proposer.greedy:
            t = self.proposer.options.sampling.temperature
            raise ConfigError(f"strategy {self.name}: proposer.sampling.temperature must be 0 for greedy, got {t}.")
