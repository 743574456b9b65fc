"""Sampling parameters: validated and normalised on construction.

Every field is documented where it is declared. Incoherent combinations are rejected with one-line
messages of the form ``"top_p must be in (0, 1], got 1.5."``; direct construction raises
:class:`tts.errors.ConfigError`, and nested validation (pipelines) reports the same text per field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tts.errors import ConfigError

__all__ = ["Constraint", "SamplingParams", "format_validation_error"]


_PHRASES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be {expected}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
}


def _model_at(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel] | None:
    """The pydantic model class found by following ``parts`` from ``model`` (None if not a model)."""
    for part in parts:
        if model is None or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation_error(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem, ``field.path must be >= 1, got 0.``, without pydantic's boilerplate.

    Unknown keys get a "did you mean" suggestion when ``model`` (the validated class) is given.
    """
    import difflib

    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        loc = ".".join([prefix, *parts] if prefix else parts)
        msg = str(err["msg"])
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead) :]
        etype = err["type"]
        if etype == "extra_forbidden":
            msg = "is not a known field; remove it or check the spelling"
            owner = _model_at(model, parts[:-1])
            if owner is not None:
                close = difflib.get_close_matches(parts[-1], list(owner.model_fields), n=1)
                msg = (f"is not a known field; did you mean {close[0]!r}?" if close
                       else f"is not a known field; valid fields: {', '.join(owner.model_fields)}")
        elif etype == "missing":
            msg = "is required; add it"
        elif etype in _PHRASES:
            msg = _PHRASES[etype].format(**err.get("ctx", {})) + f", got {err.get('input')!r}."
        if parts and msg.startswith(parts[-1] + " "):
            # validators already name their field: "top_p must be in (0, 1], got 1.5."
            head = ".".join([prefix, *parts[:-1]] if prefix else parts[:-1])
            lines.append(f"{head}.{msg}" if head else msg)
        elif loc and re.match(r"^\w+ (?:must |is not a known field|is required)", msg):
            # a nested model's own message ("temperature must be ..."): join it to the path
            lines.append(f"{loc}.{msg}")
        elif loc:
            lines.append(f"{loc} {msg}")
        else:
            lines.append(msg)
    return "; ".join(lines)


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
    """How to decode one request. Frozen and hashable, so it can key caches and merges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = 1
    """Number of completions for the prompt; they share one prefill."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding (then n must be 1)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set with this much probability mass, in (0, 1]."""
    top_k: int | None = None
    """Keep only the k most likely tokens (``None``: no limit)."""
    min_p: float = 0.0
    """Drop tokens whose probability is below ``min_p`` times the top token's, in [0, 1)."""
    max_tokens: int = 256
    """Maximum number of generated tokens per completion."""
    min_tokens: int = 0
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
    beam_width: int | None = None
    """Token-level beam search with this many beams (>= 2); returns the n best beams."""
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
        if n < 1 or (self.greedy and n > 1):
            return self.replace(n=n)
        return self.model_copy(update={"n": n})
