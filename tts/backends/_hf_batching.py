"""How the transformers backend splits one engine batch into generate calls.

Requests with identical sampling parameters (``n`` aside) share a call; a call holds at most
``max_batch_sequences`` sequences, and a request's samples are split across calls only when its n
alone exceeds that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tts.sampling import SamplingParams
from tts.types import Request

__all__ = ["Unit", "group", "pack"]


@dataclass(frozen=True, slots=True)
class Unit:
    """Some samples of one request inside one generate call (a request's n may span calls)."""

    request: int
    count: int
    offset: int


def group(requests: list[Request], indices: list[int]) -> dict[SamplingParams, list[int]]:
    """``indices`` (of ``requests``) by generate-call key: the sampling parameters, ``n`` aside
    (beam search keeps ``n``: it sets the number of returned beams for the whole call)."""
    groups: dict[SamplingParams, list[int]] = defaultdict(list)
    for i, request in zip(indices, requests, strict=True):
        p = request.params
        groups[p if p.beam_width is not None else p.with_n(1)].append(i)
    return groups


def pack(members: list[int], requests: list[Request], cap: int) -> list[list[Unit]]:
    """Split a group into generate calls of at most ``cap`` sequences; a request's samples
    are split across calls only when its n alone exceeds ``cap`` (a beam request never is)."""
    calls: list[list[Unit]] = []
    current: list[Unit] = []
    used = 0
    for i in members:
        p = requests[i].params
        pieces = (
            [(p.beam_width, 0)]
            if p.beam_width is not None
            else [(min(cap, p.n - start), start) for start in range(0, p.n, cap)]
        )
        for rows, offset in pieces:
            if current and used + rows > cap:
                calls.append(current)
                current, used = [], 0
            current.append(Unit(i, p.n if p.beam_width is not None else rows, offset))
            used += rows
    if current:
        calls.append(current)
    return calls
