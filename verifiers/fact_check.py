"""Evidence-based fact check: each claim of an answer checked against retrieved passages.

The answer is split into claims (sentences, :func:`split_claims`); each claim is paired with the
evidence passages and an NLI model says whether a passage entails or contradicts it. A claim is
supported by its best passage (max P(entailment)); the candidate's value aggregates its claims
(``mean``: the supported fraction, softly; ``min``: the weakest claim), and the feedback lists the
unsupported and contradicted claims, which is what ``refine`` should fix.

Evidence: ``problem.metadata["passages"]`` (strings, or dicts with ``text``), else the context's
retriever through ``ctx.retrieve(query, k)``, queried with each claim (or the question).

NLI models (one method, ``async nli(pairs, ctx) -> [NLIResult]``):

- :class:`HFNLIModel`: a transformers cross-encoder (``AutoModelForSequenceClassification``) whose
  ``config.id2label`` names an entailment and a contradiction label. Users pass a model id or a
  local path; nothing ships with tts-scale.
- :class:`JudgeNLI`: the generation model itself answers "supported / contradicted / not enough
  info" per (passage, claim), through ``ctx.generate``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import Field

from tts.errors import ConfigError
from tts.sampling import SamplingParams
from tts.types import Candidate, Problem, Request, Score

from ._hf import LazyClassifier, device_of, load_classifier
from .base import VerifierCost, VerifierOptions, fill_template, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "FactCheckOptions",
    "FactCheckVerifier",
    "HFNLIModel",
    "JudgeNLI",
    "NLIModel",
    "NLIResult",
    "gather_passages",
    "split_claims",
]

log = logging.getLogger(__name__)


class NLIResult(NamedTuple):
    """Probabilities that the premise entails / contradicts the hypothesis."""

    entailment: float
    contradiction: float


@runtime_checkable
class NLIModel(Protocol):
    """Judges (premise, hypothesis) pairs."""

    async def nli(self, pairs: Sequence[tuple[str, str]], ctx: Context | None) -> list[NLIResult]: ...


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|Prof|St|No|Fig|approx)\.$", re.IGNORECASE)


def split_claims(text: str, min_words: int = 3) -> list[str]:
    """Sentences of ``text`` with at least ``min_words`` words: the claims to check. Splits after
    . ! ? before a capital or a digit, not after common abbreviations or inside numbers."""
    claims: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*•]\s)", text):
        pieces = _SENTENCE_END.split(block.strip())
        merged: list[str] = []
        for piece in pieces:
            if merged and _ABBREVIATIONS.search(merged[-1]):
                merged[-1] = f"{merged[-1]} {piece}"
            else:
                merged.append(piece)
        for sentence in merged:
            sentence = re.sub(r"^\s*[-*•]\s*", "", " ".join(sentence.split()))
            if len(sentence.split()) >= min_words:
                claims.append(sentence)
    return claims


def _passage_text(p: Any) -> str:
    if isinstance(p, str):
        return p
    if isinstance(p, dict):
        for key in ("text", "content", "passage", "contents"):
            if key in p:
                return str(p[key])
    for attr in ("text", "content", "page_content"):
        if hasattr(p, attr):
            return str(getattr(p, attr))
    if isinstance(p, tuple) and p:
        return _passage_text(p[0])
    raise ConfigError(f"passage {p!r} has no text: use strings, dicts with 'text', or objects with .text.")


async def gather_passages(problem: Problem, queries: Sequence[str], ctx: Context | None, k: int) -> list[list[str]]:
    """Evidence for each query: the problem's own passages (the same for every query) or the
    retriever's top ``k`` per query."""
    given = problem.metadata.get("passages")
    if given is not None:
        passages = [_passage_text(p) for p in ([given] if isinstance(given, str) else given)]
        return [passages for _ in queries]
    if ctx is None or ctx.retriever is None:
        raise ConfigError(
            f"fact check needs evidence for problem {problem.id!r}: set "
            "problem.metadata['passages'] or give the run a retriever."
        )
    found = await asyncio.gather(*(ctx.retrieve(q, k) for q in queries))
    return [[_passage_text(p) for p in passages] for passages in found]


# --------------------------------------------------------------------------------------------------
# NLI models
# --------------------------------------------------------------------------------------------------


def _find_label(id2label: dict[int, str], wanted: str | None, pattern: str, what: str) -> int:
    names = {int(i): str(n) for i, n in id2label.items()}
    if wanted is not None:
        for i, n in names.items():
            if n.lower() == wanted.lower():
                return i
        raise ConfigError(f"{what}_label {wanted!r} is not one of the model's labels {sorted(names.values())}.")
    for i, n in names.items():
        if re.search(pattern, n, re.IGNORECASE):
            return i
    raise ConfigError(f"the NLI model has no {what} label among {sorted(names.values())}; pass {what}_label=NAME.")


class HFNLIModel(LazyClassifier):
    """A transformers NLI cross-encoder, loaded on first use; labels read from ``config.id2label``
    (names containing "entail" and "contradict", or ``entailment_label`` /
    ``contradiction_label``). Pairs run in batches of ``batch_size`` off the event loop."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        device: str = "auto",
        max_length: int | None = 512,
        entailment_label: str | None = None,
        contradiction_label: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        super().__init__(model, device=device, max_length=max_length, trust_remote_code=trust_remote_code)
        self.batch_size = batch_size
        self.entailment_label = entailment_label
        self.contradiction_label = contradiction_label

    def load(self) -> tuple[Any, Any, int, int]:
        """Model, tokenizer, entailment column and contradiction column."""
        loaded: tuple[Any, Any, int, int] = super().load()
        return loaded

    def _load(self) -> tuple[Any, Any, int, int]:
        from transformers import AutoModelForSequenceClassification

        device = device_of(self.device)
        tokenizer, model = load_classifier(
            self.model_name,
            AutoModelForSequenceClassification,
            what="NLI model",
            hint="pass a local directory or a downloadable cross-encoder id such as "
            "cross-encoder/nli-deberta-v3-small.",
            trust_remote_code=self.trust_remote_code,
        )
        id2label = model.config.id2label
        entail = _find_label(id2label, self.entailment_label, r"entail", "entailment")
        contra = _find_label(id2label, self.contradiction_label, r"contradict", "contradiction")
        model.to(device).eval()
        log.info("loaded NLI model %s on %s", self.model_name, device)
        return model, tokenizer, entail, contra

    def predict(self, pairs: Sequence[tuple[str, str]]) -> list[NLIResult]:
        """Synchronous NLI of (premise, hypothesis) pairs, in batches."""
        import torch

        model, tokenizer, entail, contra = self.load()
        out: list[NLIResult] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            batch = self.encode(tokenizer, model, [p for p, _ in chunk], [h for _, h in chunk])
            with torch.inference_mode():
                probs = model(**batch).logits.float().softmax(-1).cpu().tolist()
            out += [NLIResult(row[entail], row[contra]) for row in probs]
        return out

    async def nli(self, pairs: Sequence[tuple[str, str]], ctx: Context | None = None) -> list[NLIResult]:
        if not pairs:
            return []
        return await asyncio.to_thread(self.predict, list(pairs))


JUDGE_NLI_TEMPLATE = (
    "[Passage]\n{premise}\n\n[Claim]\n{hypothesis}\n\n"
    "Does the passage support the claim? Answer supported, contradicted or unknown."
)


class JudgeNLI:
    """NLI by the generation model: one greedy, constrained-where-possible request per pair;
    "supported" counts as entailment 1.0, "contradicted" as contradiction 1.0."""

    def __init__(self, *, template: str = JUDGE_NLI_TEMPLATE, max_tokens: int = 4, system: str | None = None) -> None:
        self.template = template
        self.max_tokens = max_tokens
        self.system = system

    async def nli(self, pairs: Sequence[tuple[str, str]], ctx: Context | None) -> list[NLIResult]:
        if ctx is None:
            raise ConfigError("JudgeNLI generates through the context: call it with a Context.")
        from .judge import choice_constraint

        constraint = choice_constraint(ctx, ["supported", "contradicted", "unknown"])
        params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens, constraint=constraint)
        requests = [
            Request.chat(fill_template(self.template, "NLI", premise=p, hypothesis=h), params, system=self.system)
            for p, h in pairs
        ]
        outputs = await ctx.generate_many(requests)
        out = []
        for completions in outputs:
            text = completions[0].text.strip().lower() if completions else ""
            verdict = re.search(r"not supported|unsupported|contradict|support|unknown|not enough", text)
            word = verdict.group(0) if verdict else ""
            out.append(NLIResult(float(word == "support"), float(word.startswith("contradict"))))
        return out


# --------------------------------------------------------------------------------------------------
# Verifier
# --------------------------------------------------------------------------------------------------


class FactCheckOptions(VerifierOptions):
    """Options of :class:`FactCheckVerifier` (``FactCheckVerifier(nli)`` sets ``nli``)."""

    nli: Any
    """An :class:`NLIModel`, ``"judge"`` (:class:`JudgeNLI`) or a model path / id (:class:`HFNLIModel`)."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    """A claim is supported when its best P(entailment) reaches it, contradicted when its best
    P(contradiction) does."""
    aggregate: Literal["mean", "min"] = "mean"
    query: Literal["claim", "question"] = "claim"
    """What the retriever is asked: each claim, or the question once."""
    top_k: int = Field(default=5, ge=1)
    """Passages per query."""
    min_words: int = Field(default=3, ge=1)
    """Shorter sentences are not claims."""
    source: Literal["text", "answer"] = "text"
    """Where claims come from: the candidate's text or its answer."""


class FactCheckVerifier:
    """Checks every claim of each candidate against evidence passages (see module docstring).

    ``passed`` means every claim is supported. ``Score.steps`` holds each claim's support. A
    candidate with no claim scores 0.
    """

    name: ClassVar[str] = "fact_check"
    Options = FactCheckOptions

    def __init__(self, options: FactCheckOptions | Mapping[str, Any] | str | NLIModel | None = None, **kw: Any) -> None:
        self.options = o = verifier_options(FactCheckOptions, options, kw, self.name, first="nli")
        nli = o.nli
        if isinstance(nli, str):
            nli = JudgeNLI() if nli == "judge" else HFNLIModel(nli)
        if not callable(getattr(nli, "nli", None)):
            raise ConfigError(
                "FactCheckVerifier nli must be 'judge', a model path / id, or an object with async nli(pairs, ctx)."
            )
        self.model = nli
        self.cost = VerifierCost(kind="llm" if isinstance(nli, JudgeNLI) else "model", calls=1)

    def claims_of(self, candidate: Candidate) -> list[str]:
        text = candidate.answer if self.options.source == "answer" and candidate.answer else candidate.text
        return split_claims(text, self.options.min_words)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        o = self.options
        claims = [self.claims_of(c) for c in candidates]
        unique = list(dict.fromkeys(cl for cs in claims for cl in cs))
        queries = unique if o.query == "claim" else [problem.question]
        evidence = await gather_passages(problem, queries, ctx, o.top_k) if unique else []
        by_claim = dict(zip(unique, evidence if o.query == "claim" else evidence * len(unique), strict=True))
        pairs = list(dict.fromkeys((p, cl) for cl in unique for p in by_claim[cl]))
        results = dict(zip(pairs, await self.model.nli(pairs, ctx), strict=True)) if pairs else {}
        out = []
        for cs in claims:
            if not cs:
                out.append(
                    Score(value=0.0, passed=False, feedback="No checkable claim found.", verifier=self.name, steps=())
                )
                continue
            support, contra = [], []
            for cl in cs:
                found = [results[(p, cl)] for p in by_claim[cl]]
                support.append(max((r.entailment for r in found), default=0.0))
                contra.append(max((r.contradiction for r in found), default=0.0))
            value = sum(support) / len(support) if o.aggregate == "mean" else min(support)
            unsupported = [cl for cl, s in zip(cs, support, strict=True) if s < o.threshold]
            contradicted = [cl for cl, c in zip(cs, contra, strict=True) if c >= o.threshold]
            notes = []
            if contradicted:
                notes.append("Contradicted by the evidence: " + " | ".join(contradicted))
            rest = [cl for cl in unsupported if cl not in contradicted]
            if rest:
                notes.append("Not supported by the evidence: " + " | ".join(rest))
            feedback = "\n".join(notes) or f"All {len(cs)} claims are supported by the evidence."
            out.append(
                Score(value=value, passed=not unsupported, feedback=feedback, verifier=self.name, steps=tuple(support))
            )
        return out
