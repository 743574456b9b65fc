"""The program-of-thought proposer: the model writes a short Python program; the sandbox runs it;
the last line it prints holds the candidate's answer (read with the task's answer format, so
``The final answer is: 109`` gives ``109``; the whole line when the format finds nothing).

The program is the first fenced code block of the reply (a ```python block preferred; an unclosed
fence at the end counts, for replies cut by ``max_tokens``). Programs run in the project's sandbox
(:func:`tts.verifiers.program.arun_program`) under ``timeout`` seconds each, at most
``max_concurrency`` at once per request. A program that fails (no code, an error exit, a time-out,
no output) has no answer, so it never votes. Each run is recorded in the trace as an ``execute``
event (code, exit code, output).

As a component (``proposer: {name: program_of_thought, ...}``) it wraps into any sampling strategy:
``self_consistency`` votes over executed outputs, with early stopping; ``best_of_n`` scores them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pydantic import Field

from tts.context import Context
from tts.sampling import Count, SamplingParams
from tts.strategies._proposer import FewShotProposer, FewShotProposerOptions
from tts.types import Candidate, Completion, Request, TraceEvent

__all__ = [
    "ProgramOfThoughtProposer",
    "ProgramOfThoughtProposerOptions",
    "ProgramRunner",
    "extract_code",
    "output_answer",
]

ProgramRunner = Callable[[str, float], Awaitable[Any]]
"""``(code, timeout) -> result`` with ``ok``, ``stdout``, ``stderr``, ``exit_code``, ``timed_out``."""


def extract_code(text: str) -> str | None:
    """The program in a reply: the first ```python (or ```py) block, else the first fenced block
    of any language; None when the reply has no fence. (Unlike ProgramVerifier, which grades a
    final code answer and takes the last block, a program-of-thought reply's later blocks are
    usually its example output.)"""
    from tts.verifiers.program import code_blocks

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


class ProgramOfThoughtProposerOptions(FewShotProposerOptions):
    prompt: str = "program_of_thought"
    """Template asking for a fenced Python program (see tts.prompts)."""
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=512)
    timeout: float = Field(default=5.0, gt=0)
    """Seconds each program may run."""
    max_concurrency: Count = 4
    """Programs of one request (n samples, or one early-stopping window) running at once."""


class ProgramOfThoughtProposer(FewShotProposer):
    """Candidates whose answers are their programs' printed outputs (module docstring).

    ``runner`` replaces the sandbox call (tests)."""

    name: ClassVar[str] = "program_of_thought"
    Options: ClassVar[type[FewShotProposerOptions]] = ProgramOfThoughtProposerOptions
    options: ProgramOfThoughtProposerOptions

    def __init__(
        self, options: ProgramOfThoughtProposerOptions | None = None, *, runner: ProgramRunner | None = None, **kw: Any
    ) -> None:
        super().__init__(options, **kw)
        self.runner: ProgramRunner = runner or _sandbox

    async def finish(self, ctx: Context, request: Request, completions: list[Completion]) -> list[Candidate]:
        candidates = await super().finish(ctx, request, completions)
        limit = asyncio.Semaphore(self.options.max_concurrency)

        async def execute(candidate: Candidate) -> None:
            async with limit:
                await self.execute(candidate, ctx)

        await asyncio.gather(*(execute(c) for c in candidates))
        return candidates

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
        out = {
            "ok": run.ok,
            "exit_code": run.exit_code,
            "timed_out": run.timed_out,
            "killed_reason": getattr(run, "killed_reason", None),
            "stdout": run.stdout,
            "stderr": run.stderr,
        }
        ctx.trace.add(TraceEvent("execute", None, [], start, ctx.clock(), note=json.dumps({"code": code, **out})))
        candidate.meta.update(out)
        line = output_answer(run.stdout) if run.ok and not run.timed_out else None
        if line is None:
            reason = "timed out" if run.timed_out else ("no output" if run.ok else "error exit")
            candidate.meta["error"] = out["killed_reason"] or reason
            return
        answer = ctx.task.extract(line) or line  # "The final answer is: 109" -> 109
        candidate.answer = answer
        candidate.key = ctx.canonical(answer)
