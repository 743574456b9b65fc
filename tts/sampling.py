"""Sampling parameters: validated and normalised on construction.

Every field is documented where it is declared. Incoherent combinations are rejected with one-line
messages of the form ``"top_p must be in (0, 1], got 1.5."``; direct construction raises
:class:`tts.errors.ConfigError`, and nested validation (pipelines) reports the same text per field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tts.errors import ConfigError, format_validation_error

__all__ = [
    "MAX_COUNT",
    "MAX_N",
    "MAX_PROBLEMS",
    "MAX_TOKENS",
    "Constraint",
    "Count",
    "CountOrZero",
    "ProblemCount",
    "SamplingParams",
    "TokenCount",
    "format_validation_error",
]


MAX_N = 65536
"""The most samples one request may ask for."""
MAX_TOKENS = 1 << 20
"""The most tokens one completion may ask for."""
MAX_COUNT = MAX_N
"""The most of any other count in options (samples, rounds, shots, windows, workers, concurrency)."""
MAX_PROBLEMS = 10_000_000
"""The most problems one dataset, run or study configuration may hold."""

# Bounded counts: every count in strategy, proposer, pipeline and study options has one of these
# types, so a typo (``n: 99999999999999999999999``) is refused at validation instead of hanging.
# Strict: ``true``, ``2.5`` and ``"4"`` are not counts.
Count = Annotated[int, Field(ge=1, le=MAX_COUNT, strict=True)]
"""A count of at least 1 and at most :data:`MAX_COUNT` (65536)."""
CountOrZero = Annotated[int, Field(ge=0, le=MAX_COUNT, strict=True)]
"""A count from 0 to :data:`MAX_COUNT` (65536)."""
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS, strict=True)]
"""A number of tokens (or characters) from 1 to :data:`MAX_TOKENS` (1048576)."""
ProblemCount = Annotated[int, Field(ge=1, le=MAX_PROBLEMS, strict=True)]
"""A number of problems from 1 to :data:`MAX_PROBLEMS` (10000000)."""


class Constraint(BaseModel):
    """A constraint on the output text, enforced by the backend while decoding.

    ``kind`` selects the constraint language: ``regex`` (a regular expression the whole output
    must match), ``choice`` (the output is exactly one of ``choices``), ``json`` (``schema`` is a JSON
    schema, or ``None`` for any JSON object), ``grammar`` (an EBNF / GBNF grammar string).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["regex", "choice", "json", "grammar"]
    pattern: str | None = None
    """Regular expression, for ``kind="regex"``."""
    choices: tuple[str, ...] = ()
    """Allowed outputs, for ``kind="choice"``."""
    schema_: str | None = Field(default=None, alias="schema")
    """JSON schema (as JSON text), for ``kind="json"``; ``None`` allows any JSON object."""
    grammar: str | None = None
    """EBNF grammar, for ``kind="grammar"``."""

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.kind == "regex" and not self.pattern:
            raise ValueError("constraint.pattern must be a regular expression for kind='regex', got None.")
        if self.kind == "choice" and not self.choices:
            raise ValueError("constraint.choices must list at least one option for kind='choice', got [].")
        if self.kind == "grammar" and not self.grammar:
            raise ValueError("constraint.grammar must be a grammar string for kind='grammar', got None.")
        return self

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls(kind="regex", pattern=pattern)

    @classmethod
    def choice(cls, choices: list[str] | tuple[str, ...]) -> Constraint:
        return cls(kind="choice", choices=tuple(choices))

    @classmethod
    def json(cls, schema: str | dict[str, Any] | None = None) -> Constraint:  # type: ignore[override]
        import json as _json

        text = _json.dumps(schema, sort_keys=True) if isinstance(schema, dict) else schema
        return cls(kind="json", schema=text)

    @classmethod
    def ebnf(cls, grammar: str) -> Constraint:
        return cls(kind="grammar", grammar=grammar)


class SamplingParams(BaseModel):
    """How to decode one request. Frozen and hashable, so it can key caches and merges.

    Types are strict (``n="4"``, ``n=True`` and ``max_tokens=2.0`` are refused, as are NaN and
    infinite floats) and counts are bounded, so a typo cannot ask for a billion samples.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    n: int = Field(default=1, le=MAX_N)
    """Number of completions for the prompt; they share one prefill (at most 65536)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding (then n must be 1)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set with this much probability mass, in (0, 1]."""
    top_k: int | None = None
    """Keep only the k most likely tokens (``None``: no limit)."""
    min_p: float = 0.0
    """Drop tokens whose probability is below ``min_p`` times the top token's, in [0, 1)."""
    max_tokens: int = Field(default=256, le=MAX_TOKENS)
    """Maximum number of generated tokens per completion (at most 1048576)."""
    min_tokens: int = Field(default=0, le=MAX_TOKENS)
    """Minimum number of generated tokens before end-of-sequence or a stop string may end it."""
    stop: tuple[str, ...] = ()
    """Stop strings; generation ends before the first occurrence (excluded from the text)."""
    seed: int | None = None
    """Random seed; the same seed and request give the same samples where the backend supports it."""
    logprobs: int | None = None
    """``None``: no logprobs; 0: the chosen token's logprob; k>0: also the k most likely alternatives."""
    repetition_penalty: float = 1.0
    """Multiplicative penalty (>0) on tokens already in the prompt or output; 1.0 disables it."""
    presence_penalty: float = 0.0
    """Additive penalty in [-2, 2] on tokens already generated."""
    frequency_penalty: float = 0.0
    """Additive penalty in [-2, 2] proportional to how often a token was generated."""
    banned_words: tuple[str, ...] = ()
    """Words that must not appear in the output."""
    constraint: Constraint | None = None
    """Structured-output constraint (regex, choice, JSON schema, grammar)."""
    beam_width: int | None = Field(default=None, le=MAX_N)
    """Token-level beam search with this many beams (2 to 65536); returns the n best beams."""
    length_penalty: float = 1.0
    """Beam search length penalty exponent (score / length**length_penalty)."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence until ``max_tokens`` (benchmarks)."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, model=type(self))) from None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("stop", "banned_words"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = (value,)
                elif isinstance(value, list):
                    data[key] = tuple(value)
            if data.get("top_k") in (0, -1):
                data["top_k"] = None
        return data

    @model_validator(mode="after")
    def _validate(self) -> SamplingParams:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if self.n < 1:
            bad(f"n must be >= 1, got {self.n}.")
        if self.temperature < 0:
            bad(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            bad(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k is not None and self.top_k < 1:
            bad(f"top_k must be >= 1 (or 0/None to disable), got {self.top_k}.")
        if not 0 <= self.min_p < 1:
            bad(f"min_p must be in [0, 1), got {self.min_p}.")
        if self.max_tokens < 1:
            bad(f"max_tokens must be >= 1, got {self.max_tokens}.")
        if not 0 <= self.min_tokens <= self.max_tokens:
            bad(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}.")
        if any(not s for s in self.stop):
            bad("stop must not contain empty strings, got ''.")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            bad(f"logprobs must be in [0, 20] or None, got {self.logprobs}.")
        if self.repetition_penalty <= 0:
            bad(f"repetition_penalty must be > 0, got {self.repetition_penalty}.")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2 <= value <= 2:
                bad(f"{name} must be in [-2, 2], got {value}.")
        if any(not w.strip() for w in self.banned_words):
            bad("banned_words must not contain empty strings.")
        if self.beam_width is not None:
            if self.beam_width < 2:
                bad(f"beam_width must be >= 2, got {self.beam_width}.")
            if self.n > self.beam_width:
                bad(f"n must be <= beam_width={self.beam_width} for beam search, got {self.n}.")
            if self.constraint is not None:
                bad("constraint cannot be combined with beam_width; drop one of them.")
        elif self.temperature == 0 and self.n > 1:
            bad(
                f"n must be 1 for greedy decoding (temperature=0), got {self.n}; "
                "use temperature > 0 to sample several answers or beam_width for several beams."
            )
        return self

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (temperature 0, no beams)."""
        return self.temperature == 0 and self.beam_width is None

    def replace(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        return SamplingParams(**{**self.model_dump(by_alias=True), **changes})

    def with_n(self, n: int) -> SamplingParams:
        """Fast copy with another ``n`` (no re-validation; n >= 1 keeps a valid sampling config valid)."""
        if n == self.n:
            return self
        if not 1 <= n <= MAX_N or (self.greedy and n > 1):
            return self.replace(n=n)
        return self.model_copy(update={"n": n})
