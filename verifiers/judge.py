"""LLM-as-judge and self-verification: the model grades candidates through ``ctx.generate``.

- :class:`LLMJudge` (``judge``): a rubric prompt asks for a score from ``low`` to ``high``; the
  value is the score mapped to [0, 1].
- :class:`PairwiseJudge` (``pairwise_judge``): "which of A and B is better?", asked in both orders
  so the judge's position bias cancels; a candidate's value is its mean win rate.
- :class:`SelfVerifier` (``self_verify``): "is this answer correct? Yes or No"; the value is
  P(yes) from the first token's log-probabilities when the backend gives them, else 1/0.

Judging runs through the scheduler like any generation (batched with everything else in flight,
counted in the problem's usage and trace). Where the backend supports constraints
(``ctx.capabilities.constraints``) the reply is constrained to the allowed outputs (a
``choice`` list, else a ``regex``); otherwise the prompt asks for a fixed format and the parser
reads it robustly ("Score: 7", "7/10", "[[8]]", "**6**", a bare number).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from tts.errors import UnsupportedControl
from tts.sampling import Constraint, Count, SamplingParams
from tts.types import Candidate, Completion, Problem, Request, Score

from .base import VerifierCost, VerifierOptions, fill_template, verifier_options
from .qa import extract_choice

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "JudgeOptions",
    "LLMJudge",
    "PairwiseJudge",
    "PairwiseOptions",
    "SelfVerifier",
    "SelfVerifyOptions",
    "choice_constraint",
    "parse_preference",
    "parse_score",
    "parse_yes_no",
    "yes_probability",
]

ConstrainMode = Literal["auto", "always", "never"]


def choice_constraint(ctx: Context, choices: Sequence[str], mode: ConstrainMode = "auto") -> Constraint | None:
    """A constraint that limits the reply to ``choices``: a ``choice`` constraint where the backend
    supports it, else an equivalent ``regex``, else None (``mode="always"`` raises instead;
    ``mode="never"`` always gives None)."""
    if mode == "never":
        return None
    kinds = ctx.capabilities.constraints
    if "choice" in kinds:
        return Constraint.choice(list(choices))
    if "regex" in kinds:
        return Constraint.regex("(?:" + "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True)) + ")")
    if mode == "always":
        raise UnsupportedControl(
            "the backend supports neither choice nor regex constraints; "
            "set constrained='auto' to parse free-form replies instead."
        )
    return None


def _fill(template: str, **fields: Any) -> str:
    return fill_template(template, "judge", **fields)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
_SCORE_CUES = (
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(r"(?i)\b(?:final\s+)?(?:score|rating|grade)\b[^\d\n]{0,12}?" + _NUM),
)
_FRACTION = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*(\d+)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUM + r"(?![\w.]*\d)")


def parse_score(text: str | None, low: float = 1, high: float = 10) -> float | None:
    """The score a judge reply gives, within [low, high], or None.

    Tried in order (the last match of a kind wins): ``[[7]]``, "Score: 7" / "rating of 8" /
    "Final score - 9", "7/10" or "7 out of 10" (the denominator must be ``high``), then the last
    number in range anywhere in the reply.
    """
    if not text:
        return None

    def ok(x: str) -> float | None:
        v = float(x)
        return v if low <= v <= high else None

    for pattern in _SCORE_CUES:
        for m in reversed(list(pattern.finditer(text))):
            if (v := ok(m.group(1))) is not None:
                return v
    for m in reversed(list(_FRACTION.finditer(text))):
        if float(m.group(2)) == high and (v := ok(m.group(1))) is not None:
            return v
    for m in reversed(list(_ANY_NUMBER.finditer(text))):
        if (v := ok(m.group(1))) is not None:
            return v
    return None


_PREFERENCE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_TIE = re.compile(r"(?i)\b(tie|equally good|both (?:are )?equal)\b")


def parse_preference(text: str | None) -> Literal["A", "B", "tie"] | None:
    """Which response a pairwise judge prefers: ``[[A]]``/``[[B]]``/``[[C]]`` (tie), a bare "A"
    or "B", "Response B is better", "tie"; None when the reply says nothing usable."""
    if not text:
        return None
    marks = _PREFERENCE.findall(text)
    if marks:
        return "tie" if marks[-1] == "C" else marks[-1]
    m = re.search(r"(?i)\b(?:response|assistant|answer|option)\s+([AB])\b", text)
    letter = extract_choice(text, "AB")
    if letter is None and m is not None:
        letter = m.group(1).upper()
    if letter is not None:
        return letter  # type: ignore[return-value]
    return "tie" if _TIE.search(text) else None


def _norm_token(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().strip(".:,!*\"'").lower()


_YES = ("yes", "correct", "true")
_NO = ("no", "incorrect", "wrong", "false")


def parse_yes_no(text: str | None) -> bool | None:
    """True for a reply that starts with yes (or "correct"), False for no ("incorrect"), else None."""
    if not text:
        return None
    m = re.search(r"[A-Za-z]+", text)
    if m is None:
        return None
    word = m.group(0).lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    return None


def yes_probability(completion: Completion) -> float | None:
    """P(yes) among yes/no from the first generated token's top log-probabilities (token
    spellings such as " Yes", "YES", "Ġyes" pooled), or None when they are not available."""
    tops = completion.top_logprobs
    if not tops:
        return None
    p_yes = p_no = 0.0
    for token, lp in tops[0].items():
        word = _norm_token(token)
        if word in ("yes",):
            p_yes += math.exp(lp)
        elif word in ("no",):
            p_no += math.exp(lp)
    return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None


# --------------------------------------------------------------------------------------------------
# Rubric judge
# --------------------------------------------------------------------------------------------------

DEFAULT_RUBRIC = (
    "You are a strict grader. Judge whether the response answers the question correctly; "
    "errors in reasoning or in the final answer lower the score."
)

JUDGE_TEMPLATE = "{rubric}\n\n[Question]\n{question}\n\n[Response]\n{solution}\n\n{instruction}"
_CONSTRAINED = "Rate the response from {low} to {high}. Reply with the score only: one integer from {low} to {high}."
_FREE = (
    "Rate the response from {low} to {high}. Explain your judgement in one or two sentences, then end with "
    "a final line 'Score: N', where N is an integer from {low} to {high}."
)


class JudgeOptions(VerifierOptions):
    """Options of :class:`LLMJudge`."""

    rubric: str = DEFAULT_RUBRIC
    """What the judge looks for (the first paragraph of the prompt)."""
    low: int = 1
    """Lowest score on the scale."""
    high: int = 10
    """Highest score on the scale."""
    template: str = JUDGE_TEMPLATE
    """Prompt with {rubric}, {question}, {solution} (candidate text), {answer}, {instruction}."""
    system: str | None = None
    """Optional system message."""
    samples: Count = 1
    """Judgements per candidate, averaged (needs temperature > 0 when > 1)."""
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    """Token limit of a free-form judgement (a constrained one needs only a few)."""
    constrained: ConstrainMode = "auto"
    """Constrain the reply to the score ("auto": where the backend supports it)."""
    threshold: float | None = 0.5
    """``passed = value >= threshold`` (value in [0, 1]); None leaves ``passed`` unset."""
    priority: int = 0
    """Request priority (lower runs earlier)."""

    @model_validator(mode="after")
    def _check(self) -> JudgeOptions:
        if self.high <= self.low:
            raise ValueError(f"high must be > low={self.low}, got {self.high}.")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"temperature must be > 0 for samples={self.samples}, got 0.")
        return self


class LLMJudge:
    """Grades each candidate with a rubric prompt (see module docstring); value in [0, 1]."""

    name: ClassVar[str] = "judge"
    Options = JudgeOptions

    def __init__(self, options: JudgeOptions | None = None, **kw: Any) -> None:
        self.options = verifier_options(JudgeOptions, options, kw, self.name)
        self.cost = VerifierCost(kind="llm", calls=1)

    def request(self, problem: Problem, candidate: Candidate, ctx: Context) -> Request:
        """The judging request for one candidate (constrained where the backend allows)."""
        o = self.options
        choices = [str(i) for i in range(o.low, o.high + 1)]
        constraint = choice_constraint(ctx, choices, o.constrained)
        instruction = (_CONSTRAINED if constraint is not None else _FREE).format(low=o.low, high=o.high)
        prompt = _fill(
            o.template,
            rubric=o.rubric,
            question=problem.question,
            solution=candidate.text,
            answer=candidate.answer or "",
            instruction=instruction,
            low=o.low,
            high=o.high,
        )
        params = SamplingParams(
            n=o.samples,
            temperature=o.temperature,
            max_tokens=len(str(o.high)) + 1 if constraint is not None else o.max_tokens,
            constraint=constraint,
        )
        return Request.chat(prompt, params, system=o.system, priority=o.priority)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        o = self.options
        outputs = await ctx.generate_many([self.request(problem, c, ctx) for c in candidates])
        out = []
        for completions in outputs:
            parsed = [parse_score(c.text, o.low, o.high) for c in completions]
            values = [(v - o.low) / (o.high - o.low) for v in parsed if v is not None]
            reply = completions[0].text.strip() if completions else ""
            if not values:
                out.append(
                    Score(
                        value=0.0,
                        passed=False if o.threshold is not None else None,
                        feedback=f"The judge gave no score: {reply[:200]!r}",
                        verifier=self.name,
                    )
                )
                continue
            value = sum(values) / len(values)
            raw = [v for v in parsed if v is not None]
            feedback = f"Judge score {sum(raw) / len(raw):g}/{o.high}" + (f": {reply}" if reply else "")
            out.append(
                Score(
                    value=value,
                    passed=None if o.threshold is None else value >= o.threshold,
                    feedback=feedback,
                    verifier=self.name,
                )
            )
        return out


# --------------------------------------------------------------------------------------------------
# Pairwise judge
# --------------------------------------------------------------------------------------------------

PAIRWISE_TEMPLATE = (
    "{rubric}\n\n[Question]\n{question}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\n"
    "Which response is better?{instruction}"
)
_PAIR_CONSTRAINED = " Reply with A or B only."
_PAIR_FREE = (
    " Explain briefly, then end with [[A]] if Response A is better, [[B]] if Response B is better, or [[C]] for a tie."
)


class PairwiseOptions(VerifierOptions):
    """Options of :class:`PairwiseJudge`."""

    rubric: str = "You are a strict grader comparing two responses to the same question."
    template: str = PAIRWISE_TEMPLATE
    """Prompt with {rubric}, {question}, {a}, {b}, {instruction}."""
    system: str | None = None
    max_tokens: int = Field(default=256, ge=1)
    constrained: ConstrainMode = "auto"
    opponents: int | None = Field(default=None, ge=1)
    """Compare each candidate with the next k candidates (in a ring) instead of all others."""
    threshold: float | None = None
    """``passed = win rate >= threshold``; None leaves ``passed`` unset."""
    priority: int = 0


class PairwiseJudge:
    """Pairwise comparison with both presentation orders; value = mean win rate (ties 0.5).

    :meth:`compare` gives P(a better than b) for one pair: 1.0 when the judge prefers ``a`` in
    both orders, 0.5 when it flips with the order (pure position bias) or calls a tie.
    ``score`` runs every pair (or each candidate against ``opponents`` neighbours) in one batch;
    declared cost: 2 calls per compared pair.
    """

    name: ClassVar[str] = "pairwise_judge"
    Options = PairwiseOptions

    def __init__(self, options: PairwiseOptions | None = None, **kw: Any) -> None:
        self.options = verifier_options(PairwiseOptions, options, kw, self.name)
        self.cost = VerifierCost(kind="llm", calls=2)

    def request(self, problem: Problem, first: Candidate, second: Candidate, ctx: Context) -> Request:
        """The request showing ``first`` as Response A and ``second`` as Response B."""
        o = self.options
        constraint = choice_constraint(ctx, ["A", "B"], o.constrained)
        prompt = _fill(
            o.template,
            rubric=o.rubric,
            question=problem.question,
            a=first.text,
            b=second.text,
            instruction=_PAIR_CONSTRAINED if constraint is not None else _PAIR_FREE,
        )
        params = SamplingParams(
            temperature=0.0, max_tokens=2 if constraint is not None else o.max_tokens, constraint=constraint
        )
        return Request.chat(prompt, params, system=o.system, priority=o.priority)

    @staticmethod
    def _preference(ab: list[Completion], ba: list[Completion]) -> float:
        def points(completions: list[Completion], a_label: str) -> float:
            verdict = parse_preference(completions[0].text if completions else None)
            if verdict in ("A", "B"):
                return 1.0 if verdict == a_label else 0.0
            return 0.5

        return (points(ab, "A") + points(ba, "B")) / 2

    async def compare(self, problem: Problem, a: Candidate, b: Candidate, ctx: Context) -> float:
        """P(``a`` is better than ``b``), from both presentation orders."""
        ab, ba = await ctx.generate_many([self.request(problem, a, b, ctx), self.request(problem, b, a, ctx)])
        return self._preference(ab, ba)

    def pairs(self, n: int) -> list[tuple[int, int]]:
        """The (i, j), i < j, pairs compared for ``n`` candidates."""
        k = self.options.opponents
        if k is None or k >= n - 1:
            return list(combinations(range(n), 2))
        found = {tuple(sorted((i, (i + d) % n))) for i in range(n) for d in range(1, k + 1)}
        return sorted((i, j) for i, j in found)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        o = self.options
        n = len(candidates)
        if n == 1:
            return [
                Score(
                    value=1.0,
                    passed=None if o.threshold is None else o.threshold <= 1.0,
                    feedback="No other candidate to compare with.",
                    verifier=self.name,
                )
            ]
        pairs = self.pairs(n)
        requests = []
        for i, j in pairs:
            requests += [
                self.request(problem, candidates[i], candidates[j], ctx),
                self.request(problem, candidates[j], candidates[i], ctx),
            ]
        outputs = await ctx.generate_many(requests)
        wins = [0.0] * n
        games = [0] * n
        for p, (i, j) in enumerate(pairs):
            pref = self._preference(outputs[2 * p], outputs[2 * p + 1])
            wins[i] += pref
            wins[j] += 1.0 - pref
            games[i] += 1
            games[j] += 1
        out = []
        for w, g in zip(wins, games, strict=True):
            value = w / g if g else 0.5
            out.append(
                Score(
                    value=value,
                    passed=None if o.threshold is None else value >= o.threshold,
                    feedback=f"won {w:g} of {g} pairwise comparisons",
                    verifier=self.name,
                )
            )
        return out


# --------------------------------------------------------------------------------------------------
# Self-verification
# --------------------------------------------------------------------------------------------------

SELF_VERIFY_TEMPLATE = (
    "[Question]\n{question}\n\n[Proposed solution]\n{solution}\n\n"
    "Is the final answer of the proposed solution ({answer}) correct? Answer Yes or No."
)


class SelfVerifyOptions(VerifierOptions):
    """Options of :class:`SelfVerifier`."""

    template: str = SELF_VERIFY_TEMPLATE
    """Prompt with {question}, {solution} (candidate text), {answer}."""
    system: str | None = None
    max_tokens: int = Field(default=3, ge=1)
    constrained: ConstrainMode = "auto"
    use_logprobs: bool = True
    """Score P(yes) from log-probabilities where the backend gives them (else 1/0)."""
    top_logprobs: int = Field(default=5, ge=1, le=20)
    """Alternatives asked for at the first token (where P(yes) and P(no) are read)."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    """``passed = P(yes) >= threshold``."""
    priority: int = 0


class SelfVerifier:
    """Asks the model whether a candidate's answer is correct; value = P(yes).

    P(yes) comes from the first token's top log-probabilities (yes versus no). When only the
    chosen token's log-probability is known, P(yes) is p(chosen) for a "yes" reply and
    1 - p(chosen) for a "no"; without log-probabilities it is 1.0 or 0.0. An unreadable reply
    scores 0.0.
    """

    name: ClassVar[str] = "self_verify"
    Options = SelfVerifyOptions

    def __init__(self, options: SelfVerifyOptions | None = None, **kw: Any) -> None:
        self.options = verifier_options(SelfVerifyOptions, options, kw, self.name)
        self.cost = VerifierCost(kind="llm", calls=1)

    def request(self, problem: Problem, candidate: Candidate, ctx: Context) -> Request:
        o = self.options
        constraint = choice_constraint(ctx, ["Yes", "No"], o.constrained)
        logprobs = o.top_logprobs if o.use_logprobs and ctx.capabilities.logprobs else None
        prompt = _fill(
            o.template, question=problem.question, solution=candidate.text, answer=candidate.answer or "none given"
        )
        params = SamplingParams(temperature=0.0, max_tokens=o.max_tokens, logprobs=logprobs, constraint=constraint)
        return Request.chat(prompt, params, system=o.system, priority=o.priority)

    def _value(self, completion: Completion) -> tuple[float, str]:
        verdict = parse_yes_no(completion.text)
        p = yes_probability(completion) if self.options.use_logprobs else None
        if p is not None:
            return p, f"P(yes) = {p:.3f} from log-probabilities"
        if verdict is None:
            return 0.0, f"The verifier's reply is not yes or no: {completion.text.strip()[:100]!r}"
        if self.options.use_logprobs and completion.logprobs:
            chosen = math.exp(completion.logprobs[0])
            p = chosen if verdict else 1.0 - chosen
            return p, f"replied {'yes' if verdict else 'no'} (p = {chosen:.3f})"
        return float(verdict), f"replied {'yes' if verdict else 'no'}"

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        outputs = await ctx.generate_many([self.request(problem, c, ctx) for c in candidates])
        out = []
        for completions in outputs:
            value, feedback = self._value(completions[0]) if completions else (0.0, "no reply")
            out.append(
                Score(value=value, passed=value >= self.options.threshold, feedback=feedback, verifier=self.name)
            )
        return out
