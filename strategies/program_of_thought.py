"""Program of thought: the model writes a short Python program; the sandbox runs it; the last
line it prints is the answer.

The program is the first fenced code block of the reply (a ```python block preferred; an
unclosed fence at the end counts, for replies cut by ``max_tokens``). Programs run in the
project's sandbox (:func:`tts.verifiers.program.arun_program`) under ``timeout`` seconds each,
at most ``max_concurrency`` at once.
With n > 1 this is self-consistency over executed outputs: the n programs run concurrently and
their outputs vote; a program that fails (no code, an error exit, a time-out, no output) has no
answer and does not vote.

Each run is recorded in the trace as an ``execute`` event (code, exit code, output).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts.context import Context
from tts.sampling import SamplingParams
from tts.strategies import vote
from tts.strategies.few_shot import FewShotProposer, FewShotProposerOptions
from tts.types import Candidate, Problem, Result, TraceEvent
from tts.verifiers.program import code_blocks

__all__ = ["ProgramOfThought", "ProgramOfThoughtOptions", "extract_code", "output_answer"]

ProgramRunner = Callable[[str, float], Awaitable[Any]]
"""``(code, timeout) -> result`` with ``ok``, ``stdout``, ``stderr``, ``exit_code``, ``timed_out``."""

def extract_code(text: str) -> str | None:
    """The program in a reply: the first ```python (or ```py) block, else the first fenced block
    of any language; None when the reply has no fence. (Unlike ProgramVerifier, which grades a
    final code answer and takes the last block, a program-of-thought reply's later blocks are
    usually its example output.)"""
    blocks = code_blocks(text)
    for lang, code in blocks:
        if lang in ("python", "py", "python3") and code.strip():
            return code.strip("\n")
    for _, code in blocks:
        if code.strip():
            return code.strip("\n")
    return None


def output_answer(stdout: str) -> str | None:
    """The last non-empty line of a program's output, stripped (None when it printed nothing)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


async def _sandbox(code: str, timeout: float) -> Any:
    from tts.verifiers.program import arun_program

    return await arun_program(code, timeout=timeout)


class ProgramOfThoughtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=1, ge=1)
    """Programs; with n > 1 their executed outputs vote (failed programs do not)."""
    prompt: str = "program_of_thought"
    """Template asking for a fenced Python program (see tts.prompts)."""
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=512)
    """Greedy by default; set temperature > 0 for n > 1."""
    timeout: float = Field(default=5.0, gt=0)
    """Seconds each program may run."""
    max_concurrency: int = Field(default=4, ge=1)
    """Programs of one problem running at once."""
    chat: bool = True

    @model_validator(mode="after")
    def _check(self) -> ProgramOfThoughtOptions:
        if self.n > 1 and self.sampling.greedy:
            raise ValueError(f"sampling.temperature must be > 0 when n > 1, got {self.sampling.temperature}.")
        return self


class ProgramOfThought:
    """Programs written by the model, executed in the sandbox, outputs voted (module docstring).

    ``runner`` replaces the sandbox call (tests); by default programs run in
    :mod:`tts.verifiers.program`.
    """

    name: ClassVar[str] = "program_of_thought"
    Options = ProgramOfThoughtOptions

    def __init__(self, options: ProgramOfThoughtOptions | None = None, *, runner: ProgramRunner | None = None,
                 **kw: object) -> None:
        self.options = options or ProgramOfThoughtOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = FewShotProposer(
            FewShotProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat, shots=0))
        self.runner: ProgramRunner = runner or _sandbox

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        candidates = await self.proposer.propose(problem, ctx, n=self.options.n)
        limit = asyncio.Semaphore(self.options.max_concurrency)

        async def execute(candidate: Candidate) -> None:
            async with limit:
                await self.execute(candidate, ctx)

        await asyncio.gather(*(execute(c) for c in candidates))
        groups = vote.group(candidates)
        winner = vote.plurality(groups)
        return Result.choose(problem, candidates, winner=groups[winner][0] if winner is not None else None,
                             votes={k: len(v) for k, v in groups.items()},
                             failed=sum(c.answer is None for c in candidates))

    async def execute(self, candidate: Candidate, ctx: Context) -> None:
        """Run the candidate's program; its answer becomes the program's last output line."""
        candidate.answer = candidate.key = None
        code = extract_code(candidate.text)
        candidate.meta["code"] = code
        if code is None:
            candidate.meta["error"] = "no code block"
            return
        start = ctx.clock()
        run = await self.runner(code, self.options.timeout)
        out = {"ok": run.ok, "exit_code": run.exit_code, "timed_out": run.timed_out,
               "killed_reason": getattr(run, "killed_reason", None), "stdout": run.stdout,
               "stderr": run.stderr}
        ctx.trace.add(TraceEvent("execute", None, [], start, ctx.clock(),
                                 note=json.dumps({"code": code, **out})))
        candidate.meta.update(out)
        answer = output_answer(run.stdout) if run.ok and not run.timed_out else None
        if answer is None:
            reason = "timed out" if run.timed_out else ("no output" if run.ok else "error exit")
            candidate.meta["error"] = out["killed_reason"] or reason
            return
        candidate.answer = answer
        candidate.key = ctx.canonical(answer)
