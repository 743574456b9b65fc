"""The prompt proposer: renders the task's prompt, samples n completions in one request, and parses
each into a candidate. Shared by greedy, cot, self_consistency and the rest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tts.context import Context
from tts.sampling import SamplingParams
from tts.types import Candidate, Problem, Request

__all__ = ["PromptProposer", "ProposerOptions"]


class ProposerOptions(BaseModel):
    """``prompt``: ``direct``, ``cot`` or a literal template with ``{question}`` and ``{instruction}``.
    ``chat``: send chat messages (rendered with the model's chat template) rather than raw text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = "cot"
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=256)
    chat: bool = True
    priority: int = 0


class PromptProposer:
    """Candidates from one n-sampling request of the task's prompt."""

    def __init__(self, options: ProposerOptions | None = None) -> None:
        self.options = options or ProposerOptions()

    def request(self, problem: Problem, ctx: Context, n: int) -> Request:
        o = self.options
        text = ctx.task.render(problem.question, o.prompt)
        params = o.sampling.with_n(n)
        prefix = ctx.task.assistant_prefix
        if o.chat:
            return Request.chat(text, params, system=ctx.task.system, priority=o.priority, assistant_prefix=prefix)
        return Request(text, params, o.priority, prefix)

    async def propose(self, problem: Problem, ctx: Context, n: int) -> list[Candidate]:
        completions = await ctx.generate(self.request(problem, ctx, n))
        return [ctx.parse(c) for c in completions]
