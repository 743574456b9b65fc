"""The context a strategy solves a problem in: the only way it reaches the engine and the verifiers.

One :class:`Context` per problem. ``ctx.generate`` goes through the shared scheduler (which
batches, merges and counts), records every request and completion in the problem's trace and
charges the problem's usage. ``ctx.task`` says how to prompt and how to read answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

from tts.backends.base import Handle
from tts.scheduler import Scheduler
from tts.task import Task
from tts.types import Candidate, Completion, Problem, Request, Score, Trace, TraceEvent, Usage

__all__ = ["Context"]


class Context:
    """Per-problem handle on the scheduler, the task, verifiers, the trace and the usage."""

    __slots__ = ("extras", "problem", "rng", "scheduler", "seed", "task", "trace", "usage", "verifier")

    def __init__(self, scheduler: Scheduler, task: Task | None = None, *, problem: Problem | None = None,
                 seed: int | None = None, verifier: Any = None, extras: dict[str, Any] | None = None) -> None:
        self.scheduler = scheduler
        self.task = task or Task()
        self.problem = problem
        self.seed = seed
        self.rng = random.Random(seed)
        self.usage = Usage()
        self.trace = Trace()
        self.verifier = verifier
        self.extras = extras or {}

    @property
    def clock(self) -> Callable[[], float]:
        return self.scheduler.clock

    def child(self, problem: Problem | None = None) -> Context:
        """A context sharing scheduler, task and verifier, with its own trace and usage."""
        return Context(self.scheduler, self.task, problem=problem or self.problem, seed=self.seed,
                       verifier=self.verifier, extras=self.extras)

    def submit(self, request: Request) -> Handle:
        """Queue a request; await the handle for its completions or cancel it (early stopping)."""
        handle = self.scheduler.submit(request, self.usage)
        start = self.scheduler.clock()
        handle.future.add_done_callback(lambda fut: self._record(request, fut, start))
        return handle

    def _record(self, request: Request, fut: asyncio.Future[list[Completion]], start: float) -> None:
        if fut.exception() is None:
            self.trace.add(TraceEvent("generate", request, fut.result(), start, self.scheduler.clock()))
        else:
            self.trace.add(TraceEvent("generate", request, [], start, self.scheduler.clock(),
                                      note=f"{type(fut.exception()).__name__}: {fut.exception()}"))

    async def generate(self, request: Request) -> list[Completion]:
        """The completions of one request (n of them)."""
        return await self.submit(request)

    async def generate_many(self, requests: Sequence[Request]) -> list[list[Completion]]:
        """The completions of several requests, all in flight at once."""
        handles = [self.submit(r) for r in requests]
        return list(await asyncio.gather(*handles))

    def parse(self, completion: Completion) -> Candidate:
        """A candidate from a completion: the task's answer extraction and canonical key."""
        text = self.task.assistant_prefix + completion.text if self.task.assistant_prefix else completion.text
        answer = self.task.extract(text)
        return Candidate(text=text, answer=answer,
                         key=self.task.canonical(answer) if answer is not None else None, completion=completion)

    def canonical(self, answer: str | None) -> str:
        return self.task.canonical(answer)

    def equivalent(self, a: str | None, b: str | None) -> bool:
        return self.task.equivalent(a, b)

    async def verify(self, candidates: list[Candidate], verifier: Any = None) -> list[Score]:
        """Score candidates with ``verifier`` (or the context's) and append the scores to them."""
        v = verifier or self.verifier
        if v is None or self.problem is None:
            raise ValueError("ctx.verify needs a verifier: pass one or set Context(verifier=...).")
        scores: list[Score] = await v.score(self.problem, candidates, self)
        self.usage.verifier_calls += 1
        self.scheduler.usage.verifier_calls += 1
        for c, s in zip(candidates, scores, strict=True):
            c.scores.append(s)
        return scores
