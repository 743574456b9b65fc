"""Core value types: problems, requests, completions, candidates, scores, results, usage, traces.

Hot-path types are slotted dataclasses (thousands are made per second); options and sampling
parameters are pydantic models (validated once, at construction).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tts.sampling import SamplingParams

if TYPE_CHECKING:
    from tts.watch import Watcher

__all__ = [
    "Candidate",
    "Completion",
    "FinishReason",
    "Message",
    "Problem",
    "Prompt",
    "Request",
    "Result",
    "Score",
    "Status",
    "Trace",
    "TraceEvent",
    "Usage",
]

FinishReason = Literal["stop", "length", "abort", "error", "cut"]
"""Why a sample ended: a stop (EOS or stop string), ``max_tokens``, aborted (its request cancelled
in flight), an engine error, or ``cut`` mid-generation by the request's watcher (:mod:`tts.watch`)."""
Status = Literal["ok", "failed", "timeout", "cut"]
"""How a problem ended: answered; failed (an error); timed out; or cut by a budget (the strategy
returned its best answer so far)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One task instance. ``reference`` is the final answer (not a whole worked solution)."""

    id: str
    question: str
    reference: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        # numbers are common in datasets (ids, numeric answers): store them as text; refuse the rest
        for name, optional in (("id", False), ("question", False), ("reference", True)):
            value = getattr(self, name)
            if isinstance(value, str) or (optional and value is None):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                object.__setattr__(self, name, str(value))
                continue
            from tts.errors import ConfigError

            raise ConfigError(
                f"problem.{name} must be a string{' or None' if optional else ''}, "
                f"got {type(value).__name__} {value!r}."
            )
        if not isinstance(self.metadata, dict):
            from tts.errors import ConfigError

            raise ConfigError(f"problem.metadata must be a mapping, got {type(self.metadata).__name__}.")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


Prompt = str | tuple[Message, ...]


def as_prompt(prompt: str | Sequence[Message] | Sequence[dict[str, str]]) -> Prompt:
    """Normalise raw text or chat messages (dicts or :class:`Message`) into a hashable prompt."""
    if isinstance(prompt, str):
        return prompt
    out = []
    for m in prompt:
        out.append(m if isinstance(m, Message) else Message(m["role"], m["content"]))  # type: ignore[arg-type]
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Request:
    """A prompt, how to decode it, and how urgent it is.

    ``prompt`` is raw text (sent as is) or chat messages (rendered with the model's chat template).
    ``assistant_prefix`` is text the answer must start with: generation continues from it (partial
    solutions in step-level search, budget forcing). ``priority``: lower runs earlier (vLLM's rule).
    ``watch``: a :class:`~tts.watch.Watcher` that reads each sample's tokens as they stream and may
    cut it (streaming backends only; not part of the request's identity).
    """

    prompt: Prompt
    params: SamplingParams = field(default_factory=SamplingParams)
    priority: int = 0
    assistant_prefix: str = ""
    watch: Watcher | None = field(default=None, compare=False, repr=False)

    @classmethod
    def chat(
        cls,
        user: str,
        params: SamplingParams | None = None,
        *,
        system: str | None = None,
        priority: int = 0,
        assistant_prefix: str = "",
    ) -> Request:
        msgs = ((Message("system", system),) if system else ()) + (Message("user", user),)
        return cls(msgs, params or SamplingParams(), priority, assistant_prefix)

    @property
    def prompt_key(self) -> tuple[Prompt, str]:
        """What identifies the text the engine sees (params excluded)."""
        return (self.prompt, self.assistant_prefix)

    def messages(self) -> list[dict[str, str]]:
        """The prompt as OpenAI-style message dicts (raw text becomes one user message)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [{"role": m.role, "content": m.content} for m in self.prompt]

    def describe(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt if isinstance(self.prompt, str) else self.messages(),
            "assistant_prefix": self.assistant_prefix,
            "params": self.params.model_dump(exclude_defaults=True, by_alias=True),
            "priority": self.priority,
        }


@dataclass(slots=True)
class Completion:
    """One generated output.

    ``prompt_tokens`` / ``cached_prompt_tokens`` describe the request this completion belongs to
    (all n completions of a request share them; usage counts them once per request).
    ``logprobs`` holds the chosen tokens' log-probabilities when asked; ``top_logprobs`` the
    alternatives. ``reasoning`` is separate reasoning content (``<think>`` or a server's
    ``reasoning_content``), kept apart from ``text``.
    """

    text: str
    token_count: int
    finish_reason: FinishReason = "stop"
    cumulative_logprob: float | None = None
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning: str | None = None
    prompt_text: str | None = None
    index: int = 0

    @property
    def mean_logprob(self) -> float | None:
        if self.logprobs:
            return sum(self.logprobs) / len(self.logprobs)
        if self.cumulative_logprob is not None and self.token_count:
            return self.cumulative_logprob / self.token_count
        return None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d.pop("prompt_text", None)
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Score:
    """A verifier's judgement of one candidate: a value (higher is better), pass/fail where it
    applies, feedback text (what ``refine`` shows the model) and optional per-step values."""

    value: float
    passed: bool | None = None
    feedback: str = ""
    verifier: str = ""
    steps: tuple[float, ...] | None = None


@dataclass(slots=True)
class Candidate:
    """A completion parsed by a strategy: the extracted answer, its canonical key, steps and scores."""

    text: str
    answer: str | None
    key: str | None = None
    completion: Completion | None = None
    steps: list[str] | None = None
    scores: list[Score] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """The latest score's value (verifiers append; combiners write one combined score)."""
        return self.scores[-1].value if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"answer": self.answer, "key": self.key, "text": self.text}
        if self.completion is not None:
            d["tokens"] = self.completion.token_count
            d["finish_reason"] = self.completion.finish_reason
            if self.completion.cumulative_logprob is not None:
                d["cumulative_logprob"] = self.completion.cumulative_logprob
        if self.scores:
            d["scores"] = [asdict(s) for s in self.scores]
        if self.meta:
            d["meta"] = self.meta
        return d


@dataclass(slots=True)
class Usage:
    """Compute spent: counted once, by the scheduler, for every request.

    ``prompt_tokens`` counts the prompt once per request (n samples share it);
    ``cached_prompt_tokens`` is the part not computed (engine prefix cache, or a prompt shared with
    an identical request in flight); ``computed_prompt_tokens`` is their difference.
    """

    calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    completions: int = 0
    wall_time: float = 0.0
    verifier_calls: int = 0
    """Candidates judged by verifiers (one per candidate per verifier)."""
    verifier_prompt_tokens: int = 0
    """Prompt tokens of engine requests made by verifiers (judges, self-verification), apart from
    the strategy's own ``prompt_tokens``."""
    verifier_completion_tokens: int = 0
    """Completion tokens generated for verifiers, apart from ``completion_tokens``."""
    cancelled: int = 0
    failures: int = 0
    cost: float = 0.0
    """US dollars, from the backend's ``pricing`` (0 without pricing), verifier requests included."""
    cache_hits: int = 0
    """Requests answered from the request cache (:mod:`tts.cache`): no engine call, no tokens spent."""
    cache_hit_tokens: int = 0
    """Prompt plus completion tokens the cache hits cost when they were generated (not spent now)."""

    @property
    def spent_tokens(self) -> int:
        """Tokens the engine processed for this scope now (cache hits cost none)."""
        return self.all_tokens

    @property
    def original_tokens(self) -> int:
        """What this scope's results cost when generated: spent tokens plus the cache hits' tokens
        (curves and allocation count this, so a cached rerun compares with a fresh one)."""
        return self.all_tokens + self.cache_hit_tokens

    @property
    def computed_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens of the strategy's own requests (verifiers apart)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def verifier_tokens(self) -> int:
        return self.verifier_prompt_tokens + self.verifier_completion_tokens

    @property
    def all_tokens(self) -> int:
        """Every token the engine processed for this scope: the strategy's and its verifiers'."""
        return self.total_tokens + self.verifier_tokens

    def add(self, other: Usage) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __add__(self, other: Usage) -> Usage:
        out = Usage()
        out.add(self)
        out.add(other)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class TraceEvent:
    """One engine call of a strategy (or one verifier call): what went in and what came out."""

    kind: str
    request: Request | None
    completions: list[Completion]
    start: float
    end: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "start": self.start, "end": self.end}
        if self.request is not None:
            d["request"] = self.request.describe()
        if self.completions:
            first = self.completions[0]
            if first.prompt_text is not None:
                d["rendered_prompt"] = first.prompt_text
            d["completions"] = [c.to_dict() for c in self.completions]
        if self.note:
            d["note"] = self.note
        return d


@dataclass(slots=True)
class Trace:
    """Everything a strategy did for one problem: every request and completion, rendered prompts
    included, plus an optional search tree (a networkx DiGraph) for search strategies."""

    events: list[TraceEvent] = field(default_factory=list)
    graph: Any = None

    def add(self, event: TraceEvent) -> None:
        self.events.append(event)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"events": [e.to_dict() for e in self.events]}
        if self.graph is not None:
            import networkx as nx

            d["tree"] = nx.node_link_data(self.graph, edges="edges")
        return d


@dataclass(slots=True)
class Result:
    """The outcome of one strategy on one problem."""

    problem: Problem
    answer: str | None
    candidates: list[Candidate] = field(default_factory=list)
    winner: int | None = None
    trace: Trace = field(default_factory=Trace)
    usage: Usage = field(default_factory=Usage)
    correct: bool | None = None
    error: str | None = None
    latency: float = 0.0
    strategy: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    status: Status = "ok"

    @classmethod
    def choose(
        cls, problem: Problem, candidates: list[Candidate], winner: Candidate | int | None, **meta: Any
    ) -> Result:
        """A result whose answer is ``winner``'s (a candidate or its index); ``None`` means no answer."""
        index = next(i for i, c in enumerate(candidates) if c is winner) if isinstance(winner, Candidate) else winner
        answer = candidates[index].answer if index is not None else None
        return cls(problem=problem, answer=answer, candidates=candidates, winner=index, meta=meta)

    @property
    def ok(self) -> bool:
        """Answered (possibly cut by a budget): not failed and not timed out."""
        return self.status in ("ok", "cut")

    def to_dict(self, trace: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.problem.id,
            "question": self.problem.question,
            "reference": self.problem.reference,
            "answer": self.answer,
            "correct": self.correct,
            "strategy": self.strategy,
            "latency": self.latency,
            "usage": self.usage.to_dict(),
            "winner": self.winner,
            "candidates": [c.to_dict() for c in self.candidates],
        }
        if self.status != "ok":
            d["status"] = self.status
        if self.error is not None:
            d["error"] = self.error
        if self.meta:
            d["meta"] = self.meta
        if trace:
            d["trace"] = self.trace.to_dict()
        return d


def now() -> float:
    return time.perf_counter()


def flatten(groups: Iterable[list[Completion]]) -> list[Completion]:
    return [c for g in groups for c in g]
