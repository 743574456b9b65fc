"""Objectives: what a run optimises, and what the scheduler and engine do for it.

A run declares ``latency``, ``throughput`` or ``cost`` (``run: {objective: cost}``; Python:
:func:`policy`). Each objective is one :class:`Policy`, applied where the knob lives:

============  ==========================================  ==============  ============  =============
objective     engine batches                              length groups   request cache early stopping
============  ==========================================  ==============  ============  =============
latency       small: dynamic batch size under a tight     off             off           off
              step-time cap, few requests per batch,
              dispatched the turn they arrive, run
              priority ahead of other runs (-1)
throughput    full: the largest batch the engine takes    on (``hf``)     off           off
cost          full                                        on (``hf``)     on            on (``stop:
                                                                                        auto``)
============  ==========================================  ==============  ============  =============

Knobs a pipeline sets itself win over the policy's; a knob a backend or strategy lacks is left
alone (vLLM and OpenAI servers batch continuously and take no batch-size knob; their
interactive requests get ``Request.priority`` instead). ``bench/objectives.py`` runs one
workload under each policy on the fake engine's virtual clock: each wins its own metric (P95
latency, tokens per second, tokens spent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from tts.errors import ConfigError

__all__ = ["OBJECTIVES", "Objective", "Policy", "policy"]

Objective = Literal["latency", "throughput", "cost"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclass(frozen=True)
class Policy:
    """What one objective turns on (see the module's table)."""

    objective: str
    small_batches: bool
    """Few sequences per engine step (faster steps, each request sooner)."""
    step_cap_fraction: float | None
    """Dynamic batch size capped at this fraction of a full batch's step time (``None``: fixed)."""
    max_batch_requests: int | None
    """Requests per engine batch (``None``: all queued)."""
    length_grouping: bool
    cache: bool
    early_stop: bool
    priority: int = 0
    """Added to the run's request priorities (lower first): a latency run goes ahead of others."""

    def backend_options(self, name: str, options: dict[str, Any], full_step: float | None = None) -> dict[str, Any]:
        """``options`` of backend ``name`` with the policy's knobs it has (set ones win).
        ``full_step``: seconds per decode step of a full batch (the dynamic cap's reference)."""
        out = dict(options)
        knobs: dict[str, Any] = {}
        if name in ("fake", "hf"):
            if self.max_batch_requests is not None and name == "fake":
                knobs["max_batch"] = self.max_batch_requests
            if self.step_cap_fraction is not None and full_step is not None:
                knobs["step_time_cap"] = self.step_cap_fraction * full_step
        if name == "hf" and self.length_grouping:
            knobs["length_grouping"] = True
        for key, value in knobs.items():
            out.setdefault(key, value)
        return out

    def strategy_options(self, options: dict[str, Any], fields: set[str]) -> dict[str, Any]:
        """Strategy ``options`` with early stopping where the policy wants it and the strategy
        has a ``stop`` option the pipeline left unset."""
        out = dict(options)
        if self.early_stop and "stop" in fields:
            out.setdefault("stop", "auto")
        return out


POLICIES: dict[str, Policy] = {
    "latency": Policy("latency", True, 0.25, 4, False, False, False, priority=-1),
    "throughput": Policy("throughput", False, None, None, True, False, False),
    "cost": Policy("cost", False, None, None, True, True, True),
}


def policy(objective: str) -> Policy:
    """The :class:`Policy` of ``objective``."""
    try:
        return POLICIES[objective]
    except KeyError:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.") from None
