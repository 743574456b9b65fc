"""Limits on what a problem, a stage of a strategy or a whole run may spend, and their enforcement.

:class:`Limits` is configuration (a pipeline's ``budget`` section, a component's ``limits``, the
run's ``total_limits``). A :class:`Budget` is a limit at run time: the scheduler charges its
``spent`` usage live, and :meth:`Budget.admit` checks every request on submit, *before* the engine
sees it:

- a count that has been reached raises :class:`~tts.errors.BudgetExceeded` (tokens, calls, cost)
  or :class:`~tts.errors.RequestTimeout` (wall time);
- a request that would cross a token limit has its ``max_tokens`` cut to the remainder split over
  its ``n`` samples (at least one token each), so a limit holds within one decode step per sample
  even for a strategy that makes a single call. ``max_tokens`` (prompt plus completion) cannot
  know the prompt's length before the engine tokenizes it: the cap counts the completion only, so
  that limit holds within one request's prompt.

Calls are counted when submitted (not when they finish), so concurrent branches cannot all pass a
``max_calls`` check at once. Token and cost checks use what has been charged so far: requests
in flight together may overshoot by what they generate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from tts.errors import BudgetExceeded, RequestTimeout
from tts.types import Request, Usage

__all__ = ["Budget", "Limits"]


class Limits(BaseModel):
    """What one scope (a problem, a strategy stage, a run) may spend; ``None`` is no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_tokens: int | None = Field(default=None, ge=1, le=10**12)
    """Prompt plus completion tokens, verifiers' requests included."""
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10**12)
    """Generated tokens."""
    max_calls: int | None = Field(default=None, ge=1, le=10**9)
    """Engine requests (a request for n samples is one call)."""
    max_wall_time: float | None = Field(default=None, gt=0, le=10**7)
    """Seconds from the scope's start; crossing it is a timeout (:class:`~tts.errors.RequestTimeout`)."""
    max_cost: float | None = Field(default=None, gt=0, le=10**9)
    """US dollars, from the backend's ``pricing`` (a cost limit without pricing is a ConfigError)."""

    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.max_tokens, self.max_completion_tokens, self.max_calls, self.max_wall_time, self.max_cost)
        )


class Budget:
    """A :class:`Limits` at run time: what its scope has spent (charged live by the scheduler)."""

    __slots__ = ("clock", "label", "limits", "spent", "start", "submitted")

    def __init__(self, limits: Limits, label: str, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.label = label
        self.clock = clock
        self.start = clock()
        self.spent = Usage()
        self.submitted = 0

    def remaining_time(self) -> float | None:
        limit = self.limits.max_wall_time
        return None if limit is None else limit - (self.clock() - self.start)

    def timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"{self.label}: max_wall_time={self.limits.max_wall_time}s exceeded; raise the "
            "limit or spend less per problem."
        )

    def _exceeded(self, field: str, limit: float, used: float) -> BudgetExceeded:
        return BudgetExceeded(
            f"{self.label}: {field}={limit} reached (used {used:g}); raise the limit or "
            "spend less per problem (smaller n or max_tokens)."
        )

    def room(self) -> float:
        """Tokens the budget still allows (``inf`` without a token limit); raise when a limit is reached."""
        lim, spent = self.limits, self.spent
        left = self.remaining_time()
        if left is not None and left <= 0:
            raise self.timeout()
        if lim.max_calls is not None and self.submitted >= lim.max_calls:
            raise self._exceeded("max_calls", lim.max_calls, self.submitted)
        if lim.max_cost is not None and spent.cost >= lim.max_cost:
            raise self._exceeded("max_cost", lim.max_cost, spent.cost)
        room = math.inf
        if lim.max_completion_tokens is not None:
            room = lim.max_completion_tokens - spent.completion_tokens
            if room <= 0:
                raise self._exceeded("max_completion_tokens", lim.max_completion_tokens, spent.completion_tokens)
        if lim.max_tokens is not None:
            total = spent.all_tokens
            if total >= lim.max_tokens:
                raise self._exceeded("max_tokens", lim.max_tokens, total)
            room = min(room, lim.max_tokens - total)
        return room

    def exhausted(self) -> bool:
        """Whether the budget admits nothing more (no side effect)."""
        try:
            self.room()
        except (BudgetExceeded, RequestTimeout):
            return True
        return False

    def admit(self, request: Request) -> Request:
        """``request`` if the budget allows it, with ``max_tokens`` capped to what remains; else raise."""
        room = self.room()
        self.submitted += 1
        params = request.params
        if room < params.n * params.max_tokens:
            cap = max(1, int(room) // params.n)
            request = replace(request, params=params.replace(max_tokens=cap, min_tokens=min(params.min_tokens, cap)))
        return request
