"""Few-shot chain of thought: in-context examples chosen per question; with n > 1, a vote.

The strategy is the ``few_shot`` proposer (:mod:`tts.strategies._proposer`: templates, example
selection, diverse sampling) with 4 shots, greedy, and a plurality vote when n > 1. It is
``self_consistency`` with these defaults, so every option of that strategy applies.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tts.prompts import ExampleSelector
from tts.sampling import Count
from tts.strategies._proposer import FewShotProposer, FewShotProposerOptions, ProposerSpec, proposer
from tts.strategies.self_consistency import SelfConsistency, SelfConsistencyOptions

__all__ = ["FewShot", "FewShotOptions", "FewShotProposer", "FewShotProposerOptions"]


class FewShotOptions(SelfConsistencyOptions):
    n: Count = 1
    """Samples; with n > 1 the plurality answer wins (ties: the earliest)."""
    proposer: ProposerSpec = proposer("few_shot", shots=4, sampling={"temperature": 0, "max_tokens": 256})
    """Greedy with 4 shots by default; set ``sampling.temperature`` > 0 (or ``temperatures``) for n > 1."""


class FewShot(SelfConsistency):
    """Chain of thought with in-context examples chosen per question; n > 1 votes."""

    name: ClassVar[str] = "few_shot"
    Options: ClassVar[type[SelfConsistencyOptions]] = FewShotOptions

    def __init__(
        self, options: FewShotOptions | None = None, *, selector: ExampleSelector | None = None, **kw: Any
    ) -> None:
        super().__init__(options, **kw)
        if selector is not None:
            self.proposer.selector = selector
