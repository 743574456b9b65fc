"""Watchers strategies attach to their requests (:mod:`tts.watch`): rules that cut a chain
mid-generation.

:class:`GroupConfidenceCut` is DeepConf's online early termination (Fu et al., 2025): a chain is
cut as soon as its running group confidence, the mean chosen-token logprob over its last
``group`` tokens, falls below the bar the warmup chains set. It computes the windows with the same
arithmetic as :func:`tts.strategies._select.confidence` (``lowest_group``), so a chain is cut if and
only if the after-the-fact filter would drop it (its lowest group confidence is below the bar),
once it has ``group`` tokens: cutting saves tokens and changes no vote. Chains shorter than
``group`` are never cut (the filter judges them by their mean when they finish).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["GroupConfidenceCut"]


class _Window:
    __slots__ = ("lps", "sum")

    def __init__(self) -> None:
        self.lps: deque[float] = deque()
        self.sum = 0.0


class GroupConfidenceCut:
    """Cut a sample once the mean of its last ``group`` chosen-token logprobs is below ``bar()``
    (``None``: no bar yet, nothing is cut). One per request; ``cut`` lists the samples it cut."""

    __slots__ = ("_windows", "bar", "cut", "group")

    def __init__(self, group: int, bar: Callable[[], float | None]) -> None:
        self.group = group
        self.bar = bar
        self.cut: list[int] = []
        """Indices of the samples cut so far."""
        self._windows: dict[int, _Window] = {}

    def watch(self, sample: int, logprobs: Sequence[float]) -> bool:
        w = self._windows.get(sample)
        if w is None:
            w = self._windows[sample] = _Window()
        bar = self.bar()
        group = self.group
        lps = w.lps
        for lp in logprobs:
            if len(lps) < group:  # filling the first window: summed in order, as sum(lps[:group]) is
                lps.append(lp)
                if len(lps) < group:
                    continue
                w.sum = sum(lps)
            else:
                w.sum += lp - lps.popleft()
                lps.append(lp)
            if bar is not None and w.sum / group < bar:
                self.cut.append(sample)
                return True
        return False
