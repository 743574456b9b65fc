"""Token watchers: a rule that reads a sample's tokens as they are generated and may cut it.

A :class:`Watcher` rides on a :class:`~tts.types.Request` (``Request.watch``; a strategy attaches
one to every request of a stage with :meth:`tts.context.Context.watching`). A backend that
streams (``capabilities.streaming``: vLLM ``mode: async``, OpenAI ``stream: true``, the fake on its
virtual clock) calls :meth:`Watcher.watch` with each new chunk of each sample's chosen-token
log-probabilities, in order; when it answers ``True`` the backend stops that sample alone (the
other samples of the request go on) and returns it with what was generated until then,
``finish_reason="cut"``: its text and tokens so far, charged by the scheduler like any other
tokens. A backend that cannot stream refuses a watched request
(:meth:`~tts.backends.base.Capabilities.check`), never ignores it.

Why on the request and not beside it: the request is what reaches the backend, so the backend
protocol keeps its one method (``submit(request)``) and every layer between (limits, seeding, the
scheduler's queue, fair share) carries the watcher without knowing it. A watched request is never
merged with another (each has its own watcher), and cut samples are never cached (they are not
whole samples). The watcher is no part of the request's identity (equality, hash, cache key).

Contract for implementers: ``watch`` is called from the backend's event loop (vLLM async: the
engine's own thread), so it must be quick and must not block; after it returns ``True`` for a
sample it is not called again for that sample. ``sample`` is the sample's index in the request
(``Completion.index``). Chunks hold one or more tokens (the fake backend: one per call); a cut
takes effect after the chunk that triggered it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["CutAfter", "Watcher"]


@runtime_checkable
class Watcher(Protocol):
    """One required method: ``watch(sample, logprobs) -> cut``."""

    def watch(self, sample: int, logprobs: Sequence[float]) -> bool:
        """Read the next chosen-token log-probabilities of sample ``sample``; ``True`` cuts it."""
        ...


class CutAfter:
    """A fixed rule for tests and demos: cut sample ``sample`` once it has generated ``after``
    tokens (the chunk that reaches it included). ``read`` counts the tokens seen per sample."""

    def __init__(self, sample: int, after: int) -> None:
        self.sample, self.after = sample, after
        self.read: dict[int, int] = {}

    def watch(self, sample: int, logprobs: Sequence[float]) -> bool:
        self.read[sample] = self.read.get(sample, 0) + len(logprobs)
        return sample == self.sample and self.read[sample] >= self.after
