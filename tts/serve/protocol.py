"""The OpenAI chat-completions wire format as the server reads and writes it.

Reading: :func:`parse_request` turns a request body into a :class:`ChatRequest` or raises
:class:`ApiError` with one line naming the field: bad JSON, an unknown field (with "did you mean"),
a value out of range, or a field the server cannot honour (``tools``, ``response_format``,
``logprobs``, ...: refused when set to anything but its no-op value, never ignored). The messages
become one question (:func:`question_of`): system (or developer) messages first, then one user
message.

Writing: :func:`completion_body`, :func:`chunk` and :func:`error_body` build the JSON the official
clients parse; ``usage`` carries the real totals of every engine call the strategy made, and a
choice's ``tts`` field the extracted answer, its status and votes (plus candidates and the trace
when asked for).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts.errors import format_validation_error
from tts.types import Result, Usage

__all__ = [
    "UNHONOURED",
    "ApiError",
    "ChatRequest",
    "StreamOptions",
    "chunk",
    "completion_body",
    "error_body",
    "parse_request",
    "question_of",
    "usage_body",
]

Returned = Literal["candidates", "trace"]


class ApiError(Exception):
    """An error answered with an OpenAI-shaped body: HTTP ``status``, one-line ``message``, the
    error ``type`` and the offending ``param`` when there is one."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param


def error_body(status: int, message: str, type: str = "invalid_request_error", param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param, "code": status}}).encode()


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send a last chunk with the request's ``usage`` (and no choices)."""


def _zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _empty(value: Any) -> bool:
    return value in ([], {}, "")


UNHONOURED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tools": ("tool calls", _empty),
    "tool_choice": ("tool calls", lambda v: v in ("none", "auto")),
    "functions": ("function calls", _empty),
    "function_call": ("function calls", lambda v: v in ("none", "auto")),
    "parallel_tool_calls": ("tool calls", lambda v: isinstance(v, bool)),
    "response_format": ("structured output", lambda v: v == {"type": "text"}),
    "logprobs": ("log-probabilities of the chosen answer", lambda v: v is False),
    "top_logprobs": ("log-probabilities of the chosen answer", _zero),
    "logit_bias": ("logit bias", _empty),
    "top_p": ("top_p overrides (set it in the pipeline's sampling)", lambda v: v == 1 and not isinstance(v, bool)),
    "stop": ("stop overrides (set them in the pipeline's sampling)", _empty),
    "presence_penalty": ("penalties", _zero),
    "frequency_penalty": ("penalties", _zero),
    "audio": ("audio output", _empty),
    "modalities": ("output modalities other than text", lambda v: v == ["text"]),
    "prediction": ("predicted outputs", _empty),
    "reasoning_effort": ("reasoning effort (choose the pipeline's strategy and budget instead)", _empty),
    "web_search_options": ("web search", _empty),
    "verbosity": ("verbosity", _empty),
    "service_tier": ("service tiers", lambda v: v in ("auto", "default")),
}
"""Fields of the OpenAI API that a test-time scaling pipeline cannot honour: what they ask for, and
which values ask for nothing (those, and ``null``, are accepted)."""


class ChatRequest(BaseModel):
    """A ``/v1/chat/completions`` body (the fields the server honours)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """The pipeline's name (``/v1/models`` lists them)."""
    messages: list[dict[str, Any]] = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    """Choices returned: each is one run of the pipeline's strategy."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Overrides the pipeline's sampling temperature."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Overrides the pipeline's tokens per completion (within the server's cap)."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """The newer name of ``max_tokens``."""
    seed: int | None = None
    """Seeds every sample of the request (choice i: ``seed + i``)."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    """Accepted; not used."""
    metadata: dict[str, str] | None = None
    """Accepted; not used."""
    store: bool | None = None
    """Accepted; nothing is stored."""
    tts: dict[str, Any] | None = None
    """The strategy's own options (``{"n": 16, "stop": "esc"}``) and ``budget`` (per-choice limits),
    sent by OpenAI clients as ``extra_body={"tts": {...}}``."""
    tts_return: list[Returned] = []
    """Extras to return with each choice: ``candidates`` (with their votes and scores), ``trace``."""

    @property
    def completion_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``, or :class:`ApiError` (400) naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}; send a JSON object.") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply; send a plain JSON object.") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}.")
    for name, (what, noop) in UNHONOURED.items():
        if data.get(name) is not None and not noop(data[name]):
            raise ApiError(
                400,
                f"{name} is not supported: a test-time scaling pipeline cannot honour {what}; drop the field.",
                param=name,
            )
    known = {k: v for k, v in data.items() if k not in UNHONOURED}
    try:
        return ChatRequest.model_validate(known)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, format_validation_error(exc, model=ChatRequest), param=param) from None


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ApiError(
                    400, f"{where}.content[{i}] must be a text part, got {kind!r}; send text only.", param=where
                )
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts.", param=where)


def question_of(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """``(system, question)`` of a conversation: system (or developer) messages, then one user message.
    A conversation with earlier turns is refused: the pipeline's prompt is built from one question."""
    system: list[str] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ApiError(400, f"{where} must be an object with role and content.", param=where)
        role = m.get("role")
        if role in ("system", "developer") and i < len(messages) - 1:
            system.append(_text(m.get("content"), where))
        elif role == "user" and i == len(messages) - 1:
            question = _text(m.get("content"), where)
            if not question.strip():
                raise ApiError(400, f"{where}.content is empty; send the question.", param=where)
            return ("\n\n".join(system) if system else None), question
        elif i == len(messages) - 1:
            raise ApiError(400, f"{where}.role must be 'user' (the question), got {role!r}.", param=where)
        else:
            raise ApiError(
                400,
                f"{where} ({role!r}) is an earlier turn: send system messages then one user message (the "
                "pipeline builds its prompt from one question).",
                param=where,
            )
    raise ApiError(400, "messages must end with a user message.", param="messages")


# ------------------------------------------------------------------------------------ writing


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI ``usage`` from the totals of every engine call (verifiers' requests included)."""
    prompt = usage.prompt_tokens + usage.verifier_prompt_tokens
    completion = usage.completion_tokens + usage.verifier_completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
        "tts": {
            "calls": usage.calls,
            "completions": usage.completions,
            "verifier_prompt_tokens": usage.verifier_prompt_tokens,
            "verifier_completion_tokens": usage.verifier_completion_tokens,
            "cancelled": usage.cancelled,
            "cache_hits": getattr(usage, "cache_hits", 0),
            "cost": usage.cost,
        },
    }


def reply_of(result: Result) -> tuple[str, str]:
    """``(content, finish_reason)`` of a result: the text of the chosen candidate (the first
    candidate's when none was chosen, as when no sample had an answer)."""
    if not result.candidates:
        return "", "stop"
    cand = result.candidates[result.winner if result.winner is not None else 0]
    finish = cand.completion.finish_reason if cand.completion is not None else "stop"
    return cand.text, "length" if finish == "length" else "stop"


def choice_extras(result: Result, returned: Collection[str]) -> dict[str, Any]:
    """A choice's ``tts`` field: the extracted answer, status, the strategy's meta (votes, ...)
    and, when asked for, the candidates and the trace."""
    out: dict[str, Any] = {"answer": result.answer, "status": result.status, **result.meta}
    if "candidates" in returned:
        out["candidates"] = [c.to_dict() for c in result.candidates]
        out["winner"] = result.winner
    if "trace" in returned:
        out["trace"] = result.trace.to_dict()
    return out


def completion_body(
    rid: str, created: int, model: str, results: Sequence[Result], usage: Usage, returned: Collection[str]
) -> dict[str, Any]:
    choices = []
    for i, result in enumerate(results):
        content, finish = reply_of(result)
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
                "tts": choice_extras(result, returned),
            }
        )
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_body(usage),
    }


def chunk(rid: str, created: int, model: str, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One server-sent event of a streamed completion."""
    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"
