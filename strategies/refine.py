"""Refine: generate, verify, revise with the verifier's feedback, until it passes or k rounds.

Round 0 is a normal proposal. Each round the candidate is verified (``ctx.verify``); when the
score passes (``Score.passed`` is True) the loop stops, otherwise the model sees its previous
attempt and the verifier's ``Score.feedback`` (template ``refine_revise``) and writes a new one,
up to ``rounds`` revisions. Every round's candidate, with its score, is kept in the result
(``Candidate.meta["round"]``).

The winner is the passing candidate, else (``pick="last"``) the final revision, or
(``pick="best"``) the highest score, ties to the later round.

The verifier is the context's (``Context(verifier=...)``, ``tts.run(..., verifier=...)``), or one
named here from the registry (``verifier: math``) with ``verifier_options``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tts.context import Context
from tts.prompts import resolve_prompt
from tts.sampling import SamplingParams
from tts.strategies.few_shot import FewShotProposer, FewShotProposerOptions
from tts.types import Candidate, Problem, Result

__all__ = ["Refine", "RefineOptions"]

NO_FEEDBACK = "The verifier rejected this attempt but gave no details."


class RefineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(default=3, ge=0)
    """Revisions at most (k); 0 only generates and verifies."""
    prompt: str = "cot"
    """Template of the first attempt (see tts.prompts)."""
    sampling: SamplingParams = SamplingParams(temperature=0, max_tokens=256)
    revise_prompt: str = "refine_revise"
    """Template of a revision: ``{question}``, ``{previous}``, ``{feedback}``, ``{instruction}``."""
    revise_sampling: SamplingParams | None = None
    """Sampling of revisions (``None``: as ``sampling``)."""
    verifier: str | None = None
    """A registered verifier name; ``None``: the context's verifier."""
    verifier_options: dict[str, Any] = Field(default_factory=dict)
    pick: Literal["last", "best"] = "last"
    """Winner when no round passes: the final revision or the highest score."""
    chat: bool = True


class Refine:
    """Generate, verify, revise with feedback (module docstring)."""

    name: ClassVar[str] = "refine"
    Options = RefineOptions

    def __init__(self, options: RefineOptions | None = None, *, verifier: Any = None, **kw: object) -> None:
        """``verifier``: a verifier object, or a registered name (the ``verifier`` option)."""
        if isinstance(verifier, str):
            kw["verifier"], verifier = verifier, None
        self.options = options or RefineOptions(**kw)  # type: ignore[arg-type]
        o = self.options
        self.proposer = FewShotProposer(
            FewShotProposerOptions(prompt=o.prompt, sampling=o.sampling, chat=o.chat, shots=0))
        self.reviser = resolve_prompt(o.revise_prompt).require("previous", "feedback")
        self.verifier = verifier
        if verifier is None and o.verifier is not None:
            from tts.registry import REGISTRY

            self.verifier = REGISTRY.get("verifier", o.verifier)(**o.verifier_options)

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
            request = self.reviser.request(o.revise_sampling or o.sampling, chat=o.chat,
                                           question=problem.question, previous=candidate.text.strip(),
                                           feedback=score.feedback or NO_FEEDBACK,
                                           instruction=ctx.task.instruction)
            candidate = ctx.parse((await ctx.generate(request))[0])
        if passed is not None:
            winner = passed
        elif o.pick == "best":
            winner = max(range(len(history)), key=lambda i: (history[i].score or 0.0, i))
        else:
            winner = len(history) - 1
        return Result.choose(problem, history, winner=winner, rounds=len(history) - 1,
                             passed=passed is not None)
