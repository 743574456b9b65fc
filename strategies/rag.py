"""RAG context injection: retrieve, order, inject numbered evidence, then any inner strategy.

For each problem: retrieve ``k`` passages for the question through ``ctx.retrieve`` (the run's
retriever; it searches off the event loop, so other problems keep generating), build an evidence
block (:func:`tts.retrieval.ordering.evidence_block`: the best passages within ``budget`` tokens,
numbered ``[1]``, ``[2]``, ... in the order shown, strongest at both ends by default, long passages
cut to their question-matching sentences), and hand the inner strategy (``greedy``, ``cot``,
``self_consistency``, ``best_of_n``, ...) the problem with the evidence and the question in
``template``. The result is the inner strategy's, for the original problem.

Options add query rewriting (``rewrite``: the model first writes a search query) and multi-hop
retrieval (``hops`` > 1: after each retrieval the model reads the evidence so far and writes a
follow-up query, or NONE to stop). Every hop's query, passages (id, chunk, score, text) and the
citation numbers are in ``result.meta["retrieval"]`` / ``meta["citations"]`` and in the trace
(``rag`` events); ``meta["cited"]`` lists the documents the answer cites by number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts.config.components import StrategySpec, build_component
from tts.context import Context
from tts.errors import parse_options
from tts.prompts import fill
from tts.retrieval.ordering import Evidence, evidence_block
from tts.sampling import SamplingParams
from tts.types import Problem, Request, Result, TraceEvent

__all__ = ["RAG", "RAGOptions"]

TEMPLATE = "Use the numbered passages to answer.\n\n{evidence}\n\nQuestion: {question}"
REWRITE = (
    "Write a short search query that would find the facts needed to answer this question. "
    "Reply with the query only.\n\nQuestion: {question}\nQuery:"
)
HOP = (
    "Passages found so far:\n{evidence}\n\nQuestion: {question}\n"
    "If a fact needed to answer is still missing, write one short search query for it; "
    "if nothing is missing, write NONE.\nQuery:"
)
_CITATION = re.compile(r"\[(\d{1,3})\]")


def _greedy() -> StrategySpec:
    return StrategySpec(name="greedy")


class RAGOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inner: StrategySpec = Field(default_factory=_greedy)
    """The strategy that answers from the injected evidence (any registered strategy)."""
    k: int | None = Field(default=None, ge=1, le=1000)
    """Passages retrieved per query (default: the retriever's ``k``, else 5)."""
    order: Literal["ends", "rank", "reverse"] = "ends"
    """``ends``: strongest passages at both ends (against lost-in-the-middle); ``rank``: best
    first; ``reverse``: best last."""
    budget: int = Field(default=600, ge=1, le=1_000_000)
    """Whitespace tokens of the whole evidence block."""
    sentences: int | None = Field(default=None, ge=1, le=1_000_000)
    """A passage longer than this many tokens keeps only its sentences that match the question."""
    template: str = TEMPLATE
    """The inner strategy's question: ``{evidence}`` and ``{question}`` are filled."""
    rewrite: bool = False
    """The model writes the first search query (else the question is the query)."""
    hops: int = Field(default=1, ge=1, le=5)
    """Retrievals per problem: after each, the model may write a follow-up query (or NONE)."""
    query_tokens: int = Field(default=32, ge=1, le=512)
    """Most tokens of a written query (greedy)."""
    rewrite_prompt: str = REWRITE
    """Prompt of the query rewrite, with ``{question}``."""
    hop_prompt: str = HOP
    """Prompt of a follow-up query, with ``{question}`` and ``{evidence}``."""

    @field_validator("template")
    @classmethod
    def _has_slots(cls, v: str) -> str:
        for slot in ("{evidence}", "{question}"):
            if slot not in v:
                raise ValueError(f"template must contain {slot}, got {v!r}.")
        return v


def _passage(p: Any, rank: int) -> dict[str, Any]:
    """A retrieved item as ``{id, score, chunk, text}`` (Passage objects, dicts or strings)."""
    if isinstance(p, str):
        return {"id": str(rank), "score": None, "chunk": 0, "text": p}
    get = p.get if isinstance(p, Mapping) else lambda key, default=None: getattr(p, key, default)
    text = get("text")
    if text is None:
        text = get("content", "")
    return {"id": str(get("id", rank)), "score": get("score"), "chunk": get("chunk", 0), "text": str(text)}


def _query(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.strip().strip("\"'").removeprefix("Query:").strip()


class _Uncited:
    """The task, reading answers with citation markers (``[2]``) removed."""

    def __init__(self, task: Any) -> None:
        self._task = task

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task, attr)

    def extract(self, text: str) -> str | None:
        answer: str | None = self._task.extract(_CITATION.sub("", text))
        return answer


class RAG:
    """Retrieve, order and inject numbered evidence, then run the inner strategy."""

    name: ClassVar[str] = "rag"
    Options: ClassVar[type[RAGOptions]] = RAGOptions

    def __init__(self, options: RAGOptions | None = None, *, inner: Any = None, **kw: Any) -> None:
        where = f"strategy {self.name}"
        built = inner is not None and not isinstance(inner, (str, Mapping, StrategySpec))
        if inner is not None and not built:
            kw["inner"] = inner
        self.options = options or parse_options(RAGOptions, kw, where=where)
        self.inner = inner if built else build_component(self.options.inner, "strategy")

    async def _ask(self, ctx: Context, prompt: str) -> str:
        params = SamplingParams(temperature=0, max_tokens=self.options.query_tokens, stop=("\n",))
        completions = await ctx.generate(Request.chat(prompt, params))
        return _query(completions[0].text) if completions else ""

    async def _hop(self, ctx: Context, query: str, k: int | None, hops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        start = ctx.clock()
        found = await (ctx.retrieve(query, k) if k is not None else ctx.retrieve(query))
        passages = [_passage(p, i) for i, p in enumerate(found)]
        hops.append({"query": query, "passages": passages})
        note = json.dumps(
            {
                "hop": len(hops),
                "query": query,
                "passages": [{f: p[f] for f in ("id", "chunk", "score")} for p in passages],
            }
        )
        ctx.trace.add(TraceEvent("rag", None, [], start, ctx.clock(), note=note))
        return passages

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        k = o.k or getattr(ctx.retriever, "k", None)
        query = problem.question
        if o.rewrite:
            query = await self._ask(ctx, fill(o.rewrite_prompt, question=problem.question)) or problem.question
        hops: list[dict[str, Any]] = []
        pool: dict[str, dict[str, Any]] = {}  # best passage per document over all hops
        for hop in range(o.hops):
            for p in await self._hop(ctx, query, k, hops):
                if p["id"] not in pool or (p["score"] or 0) > (pool[p["id"]]["score"] or 0):
                    pool[p["id"]] = p
            if hop + 1 == o.hops:
                break
            shown = self._evidence(problem, list(pool.values())).text
            follow = await self._ask(ctx, fill(o.hop_prompt, question=problem.question, evidence=shown))
            if not follow or follow.upper().startswith("NONE") or follow in (h["query"] for h in hops):
                break
            query = follow
        evidence = self._evidence(problem, list(pool.values()))
        question = fill(o.template, evidence=evidence.text, question=problem.question)
        augmented = Problem(problem.id, question, problem.reference, problem.metadata)
        inner = ctx.child(augmented)
        inner.task = _Uncited(ctx.task)  # type: ignore[assignment]  # "[2]" is a citation, not part of the answer
        result: Result = await self.inner.solve(augmented, inner)
        result.problem = problem
        citations = [p["id"] for p in evidence.passages]
        text = result.candidates[result.winner].text if result.winner is not None else ""
        cited = [citations[n - 1] for n in map(int, _CITATION.findall(text)) if 0 < n <= len(citations)]
        result.meta.update(retrieval=hops, citations=citations, cited=list(dict.fromkeys(cited)))
        return result

    def _evidence(self, problem: Problem, passages: list[dict[str, Any]]) -> Evidence:
        """The evidence block of ``passages`` (best first by score when every one has a score)."""
        o = self.options
        if all(p["score"] is not None for p in passages):
            passages = sorted(passages, key=lambda p: -p["score"])
        return evidence_block(passages, problem.question, budget=o.budget, order=o.order, sentences=o.sentences)
