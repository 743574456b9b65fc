"""Refine: generate, verify, revise with the verifier's feedback, until it passes or k rounds.

Round 0 is a normal proposal. Each round the candidate is verified (``ctx.verify``); when the
score passes (``Score.passed`` is True) the loop stops, otherwise the model sees its previous
attempt and the verifier's ``Score.feedback`` (template ``refine_revise``) and writes a new one,
up to ``rounds`` revisions. Every round's candidate, with its score, is kept in the result
(``Candidate.meta["round"]``).

The winner is the passing candidate, else (``pick="last"``) the final revision, or
(``pick="best"``) the highest score, ties to the later round.

The verifier is the context's (``Context(verifier=...)``, ``tts.run(..., verifier=...)``), or a
component named here (``verifier: {name: math, ...options}``). The first attempt comes from the
``proposer``; revisions are sent with the task's assistant prefix and parsed as every reply is.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from tts.config.components import VerifierSpec, build_component
from tts.context import Context
from tts.errors import parse_options
from tts.prompts import resolve_prompt
from tts.sampling import CountOrZero, SamplingParams
from tts.strategies._proposer import ProposerSpec, SampledOptions, build_proposer, proposer
from tts.strategies._select import drop_non_answer, task_placeholders
from tts.types import Candidate, Problem, Result

__all__ = ["Refine", "RefineOptions"]

NO_FEEDBACK = "The verifier rejected this attempt but gave no details."


class RefineOptions(SampledOptions):
    rounds: CountOrZero = 3
    """Revisions at most (k); 0 only generates and verifies."""
    proposer: ProposerSpec = proposer("few_shot", sampling={"temperature": 0, "max_tokens": 256})
    """The first attempt."""
    revise_prompt: str = "refine_revise"
    """Template of a revision: ``{question}``, ``{previous}``, ``{feedback}``, ``{instruction}``."""
    revise_sampling: SamplingParams | None = None
    """Sampling of revisions (``None``: as the proposer's ``sampling``)."""
    verifier: VerifierSpec | None = None
    """A verifier component (``math`` or ``{name: math, ...options}``); ``None``: the context's."""
    pick: Literal["last", "best"] = "last"
    """Winner when no round passes: the final revision or the highest score."""


class Refine:
    """Generate, verify, revise with feedback (module docstring)."""

    name: ClassVar[str] = "refine"
    Options = RefineOptions

    def __init__(self, options: RefineOptions | None = None, *, verifier: Any = None, **kw: object) -> None:
        """``verifier``: a verifier object, or a component spec (the ``verifier`` option)."""
        if isinstance(verifier, (str, dict)):
            kw["verifier"], verifier = verifier, None
        where = f"strategy {self.name}"
        self.options = o = options or parse_options(RefineOptions, kw, where=where)
        self.proposer = build_proposer(o.proposer, where)
        self.reviser = resolve_prompt(o.revise_prompt).require("previous", "feedback")
        self.verifier = verifier
        if verifier is None and o.verifier is not None:
            self.verifier = build_component(o.verifier, "verifier")

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        candidate = (await self.proposer.propose(problem, ctx, n=1))[0]
        history: list[Candidate] = []
        passed: int | None = None
        for round_ in range(o.rounds + 1):
            candidate.meta["round"] = round_
            history.append(candidate)
            score = (await ctx.verify([candidate], self.verifier))[0]
            if score.passed:
                passed = round_
                break
            if round_ == o.rounds:
                break
            p = self.proposer.options
            request = self.reviser.request(
                o.revise_sampling or p.sampling,
                chat=p.chat,
                prefix=ctx.task.assistant_prefix,
                question=problem.question,
                previous=candidate.text.strip(),
                feedback=score.feedback or NO_FEEDBACK,
                instruction=ctx.task.instruction,
            )
            candidate = drop_non_answer(ctx.parse((await ctx.generate(request))[0]), task_placeholders(ctx.task))
        if passed is not None:
            winner = passed
        elif o.pick == "best":
            winner = max(range(len(history)), key=lambda i: (history[i].score or 0.0, i))
        else:
            winner = len(history) - 1
        return Result.choose(problem, history, winner=winner, rounds=len(history) - 1, passed=passed is not None)
