"""What goes over the wire for the OpenAI-compatible backend: request bodies, response parsing,
JSON (orjson when installed) and error bodies. Pure functions, no I/O, except :func:`read_stream`,
which reads a streamed answer (``stream: true``, server-sent events) into a :class:`StreamState`
as it arrives, so a call cut mid-generation knows what it had received."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tts.backends._openai_options import OpenAIOptions
from tts.errors import ConfigError, UnsupportedControl
from tts.secrets import redact
from tts.types import Completion, FinishReason, Request
from tts.watch import Watcher

__all__ = [
    "StreamState",
    "build_body",
    "check_request",
    "dumps",
    "error_message",
    "loads",
    "parse_response",
    "read_stream",
    "retry_after",
]

try:  # fast JSON when available
    import orjson

    dumps: Callable[[Any], bytes] = orjson.dumps
    loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "error": "error",
    "cut": "cut",
    "eos": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    "content_filter": "error",
}


def check_request(o: OpenAIOptions, request: Request) -> None:
    """Refuse what the configured endpoint cannot send (one line naming the fix)."""
    p = request.params
    if o.endpoint == "completions" and not isinstance(request.prompt, str):
        raise ConfigError(
            "openai backend: endpoint='completions' takes raw-text prompts; use endpoint='chat' for chat messages."
        )
    if o.server_extensions:
        return
    needs = [
        name
        for name, used in (
            ("top_k", p.top_k is not None),
            ("repetition_penalty", p.repetition_penalty != 1.0),
            ("min_tokens", p.min_tokens > 0),
            ("ignore_eos", p.ignore_eos),
            ("priority", request.priority != 0),
            ("assistant_prefix", bool(request.assistant_prefix) and o.endpoint == "chat"),
        )
        if used
    ]
    if needs:
        raise UnsupportedControl(
            f"openai backend: {needs[0]} needs server extensions; set server_extensions=True "
            f"(vLLM, SGLang) or drop {needs[0]} from the request."
        )


def build_body(o: OpenAIOptions, model: str | None, request: Request, n: int, seed: int | None) -> dict[str, Any]:
    """The JSON body of one call asking ``n`` samples of ``request``."""
    p = request.params
    ext = o.server_extensions
    chat = o.endpoint == "chat"
    body: dict[str, Any] = {"model": model}
    if chat:
        messages: list[dict[str, str]] = request.messages()
        if request.assistant_prefix:
            messages.append({"role": "assistant", "content": request.assistant_prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body["messages"] = messages
        body[o.max_tokens_field] = p.max_tokens
    else:
        assert isinstance(request.prompt, str)
        body["prompt"] = request.prompt + request.assistant_prefix
        body["max_tokens"] = p.max_tokens
    if p.beam_width is not None:
        body.update(use_beam_search=True, n=p.beam_width, temperature=0.0, length_penalty=p.length_penalty)
    else:
        body["n"] = n
        body["temperature"] = p.temperature
        if p.top_p != 1.0:
            body["top_p"] = p.top_p
    if p.stop:
        body["stop"] = list(p.stop)
    if seed is not None:
        body["seed"] = seed
    if p.logprobs is not None:
        if chat:
            body["logprobs"] = True
            if p.logprobs:
                body["top_logprobs"] = p.logprobs
        else:
            body["logprobs"] = p.logprobs
    if p.presence_penalty:
        body["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        body["frequency_penalty"] = p.frequency_penalty
    c = p.constraint
    if c is not None and c.kind == "json":
        if c.schema_ is None:
            body["response_format"] = {"type": "json_object"}
        else:
            schema = loads(c.schema_)
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if ext:
        if p.top_k is not None:
            body["top_k"] = p.top_k
        if p.min_p:
            body["min_p"] = p.min_p
        if p.repetition_penalty != 1.0:
            body["repetition_penalty"] = p.repetition_penalty
        if p.min_tokens:
            body["min_tokens"] = p.min_tokens
        if p.banned_words:
            body["bad_words"] = list(p.banned_words)
        if p.ignore_eos:
            body["ignore_eos"] = True
        if request.priority:
            body["priority"] = request.priority
        if c is not None and c.kind != "json":
            body["structured_outputs"] = (
                {"regex": c.pattern}
                if c.kind == "regex"
                else {"choice": list(c.choices)}
                if c.kind == "choice"
                else {"grammar": c.grammar}
            )
    if o.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True, **({"continuous_usage_stats": True} if ext else {})}
    if o.extra_body:
        body.update(o.extra_body)
    return body


class StreamState:
    """A streamed answer as received so far: per choice its text, reasoning, tokens received
    (logprob entries, else content deltas, else the server's running usage for one choice),
    logprobs and finish reason; the last usage the server reported."""

    __slots__ = ("chat", "choices", "usage")

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        """Fold one ``data:`` event into the state."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for ch in chunk.get("choices") or ():
            i = int(ch.get("index", 0))
            c = self.choices.setdefault(i, {"text": [], "reasoning": [], "deltas": 0, "logprobs": None, "finish": None})
            src = (ch.get("delta") or _EMPTY) if self.chat else ch
            text = src.get("content" if self.chat else "text")
            reasoning = src.get("reasoning_content") or src.get("reasoning")
            if text:
                c["text"].append(text)
            if reasoning:
                c["reasoning"].append(reasoning)
            if text or reasoning:
                c["deltas"] += 1
            lp = ch.get("logprobs")
            if lp:
                merged = c["logprobs"] = c["logprobs"] or (
                    {"content": []} if self.chat else {"token_logprobs": [], "top_logprobs": []}
                )
                if self.chat:
                    merged["content"].extend(lp.get("content") or ())
                else:
                    merged["token_logprobs"].extend(lp.get("token_logprobs") or ())
                    merged["top_logprobs"].extend(lp.get("top_logprobs") or ())
            if ch.get("finish_reason"):
                c["finish"] = ch["finish_reason"]

    def cut(self, chunk: dict[str, Any], watch: Watcher, sample: int) -> bool:
        """Show ``watch`` the chosen-token logprobs ``chunk`` brought (choice ``i`` is the request's
        sample ``sample + i``); a choice it cuts ends here (``finish_reason="cut"``). Whether it cut."""
        for ch in chunk.get("choices") or ():
            lp = ch.get("logprobs")
            if not lp:
                continue
            if self.chat:
                values = [float(t["logprob"]) for t in lp.get("content") or ()]
            else:
                values = [float(v) if v is not None else 0.0 for v in lp.get("token_logprobs") or ()]
            i = int(ch.get("index", 0))
            if values and watch.watch(sample + i, values):
                self.choices[i]["finish"] = "cut"
                return True
        return False

    def tokens(self, i: int) -> int:
        """Tokens of choice ``i`` received so far (see the class docstring)."""
        c = self.choices.get(i)
        if c is None:
            return 0
        lp = c["logprobs"]
        if lp:
            return len(lp["content"] if self.chat else lp["token_logprobs"])
        if len(self.choices) == 1 and self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return int(c["deltas"])

    def response(self) -> dict[str, Any]:
        """The answer as a non-streamed call would have given it."""
        choices = []
        for i in sorted(self.choices):
            c = self.choices[i]
            text = "".join(c["text"])
            reasoning = "".join(c["reasoning"]) or None
            item: dict[str, Any] = {"index": i, "finish_reason": c["finish"], "logprobs": c["logprobs"]}
            if self.chat:
                item["message"] = {"role": "assistant", "content": text, "reasoning_content": reasoning}
            else:
                item["text"] = text
            choices.append(item)
        return {"choices": choices, "usage": self.usage}

    def completions(self, request: Request) -> list[Completion]:
        """What was received, as completions; token counts as :meth:`tokens` has them (what the
        server generated and sent until now; for a finished answer, its own count)."""
        out = parse_response(self.response(), request, self.chat)
        for c in out:
            c.token_count = self.tokens(c.index)
        return out


async def read_stream(resp: Any, state: StreamState, watch: Watcher | None = None, sample: int = 0) -> bytes:
    """Read the server-sent events of a streamed answer into ``state`` as they arrive; the whole
    answer as a non-streamed JSON body (what the pool parses and checks). A malformed event
    gives its own bytes back, which the pool refuses as a malformed answer (and retries: every
    attempt starts the state afresh). ``watch`` (the request's watcher; the call's first choice
    is sample ``sample``) reads each event's logprobs; when it cuts, reading stops there: the
    answer is what came until the cut, and the caller hangs up (the server stops generating)."""
    state.choices.clear()
    state.usage = None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            chunk = loads(data)
            if not isinstance(chunk, dict):
                return bytes(data)
            state.add(chunk)
            if watch is not None and state.cut(chunk, watch, sample):
                break
        except (ValueError, TypeError, AttributeError, KeyError):
            return bytes(data) if data[:1] != b"{" else b"[]"
    return dumps(state.response())


def parse_response(data: Any, request: Request, chat: bool) -> list[Completion]:
    """Completions of one decoded answer of the chat (``chat``) or completions endpoint, token
    counts apportioned when the server gave no logprobs. Raises ``ValueError`` naming what is
    wrong when ``data`` is not shaped like such an answer (the pool retries it as malformed): the
    shape is checked while it is read, in one pass (this runs for every sample)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise ValueError(f"'choices' must be a list, got {type(choices).__name__}")
    usage = data.get("usage")
    prompt_tokens = cached = completion_tokens = 0
    if usage:
        if not isinstance(usage, dict):
            raise ValueError(f"'usage' must be an object, got {type(usage).__name__}")
        prompt_tokens = _number(usage, "prompt_tokens")
        completion_tokens = _number(usage, "completion_tokens")
        details = usage.get("prompt_tokens_details")
        if details is not None and not isinstance(details, dict):
            raise ValueError("'usage.prompt_tokens_details' must be an object")
        if details:
            cached = int(details.get("cached_tokens") or 0)
    elif usage is not None and not isinstance(usage, dict):
        raise ValueError(f"'usage' must be an object, got {type(usage).__name__}")
    prompt_text = None if chat else request.prompt + request.assistant_prefix  # type: ignore[operator]
    k = request.params.logprobs
    text_key = "content" if chat else "text"
    out: list[Completion] = []
    counted = ordered = True
    lps: list[float] | None
    tops: list[dict[str, float]] | None
    cumulative: float | None
    for i, ch in enumerate(choices):
        if not isinstance(ch, dict):
            raise ValueError(f"choices[{i}] must be an object, got {type(ch).__name__}")
        if chat:
            src = ch.get("message")
            if not isinstance(src, dict):
                raise ValueError(f"choices[{i}].message must be an object, got {type(src).__name__}")
        else:
            src = ch
        text = src.get(text_key)
        if text.__class__ is not str:
            text = _string(text, i, text_key)
        reasoning = src.get("reasoning_content")
        if reasoning is not None:
            reasoning = _string(reasoning, i, "reasoning_content")
        other = src.get("reasoning")
        if other is not None:
            other = _string(other, i, "reasoning")
        index = ch.get("index", i)
        if not isinstance(index, int):
            raise ValueError(f"choices[{i}].index must be an integer")
        finish = ch.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise ValueError(f"choices[{i}].finish_reason must be a string")
        lp = ch.get("logprobs")
        if lp:
            if not isinstance(lp, dict):
                raise ValueError(f"choices[{i}].logprobs must be an object")
            lps, tops = _parse_logprobs(lp, chat, k)
            count, cumulative = len(lps), sum(lps)
        else:
            if lp is not None and not isinstance(lp, dict):
                raise ValueError(f"choices[{i}].logprobs must be an object")
            lps = tops = cumulative = None
            count, counted = 0, False
        ordered = ordered and index == i
        out.append(
            Completion(
                text or "",
                count,
                _FINISH.get(finish or "stop", "stop"),
                cumulative,
                lps,
                tops,
                prompt_tokens,
                cached,
                reasoning or other,
                prompt_text,
                index,
            )
        )
    if not ordered:  # the server's choice order: by index, renumbered from 0
        out.sort(key=_index)
        for i, c in enumerate(out):
            c.index = i
    if out and not counted:
        _apportion(out, completion_tokens)
    return out


def _string(value: Any, i: int, key: str) -> str | None:
    """``value`` when it is a string or None; else the ``ValueError`` that names it."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"choices[{i}] {key} must be a string, got {type(value).__name__}")


def _number(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key) or 0
    if not isinstance(value, (int, float)):
        raise ValueError(f"'usage.{key}' must be a number, got {value!r}")
    return int(value)


_EMPTY: dict[str, Any] = {}


def _index(completion: Completion) -> int:
    return completion.index


def _apportion(completions: Sequence[Completion], total: int) -> None:
    """Split ``total`` tokens over completions by text length (largest remainder; sum exact)."""
    if len(completions) == 1:
        completions[0].token_count = total
        return
    weights = [len(c.text) + len(c.reasoning or "") + 1 for c in completions]
    whole = sum(weights)
    counts, remainders = [], []
    for w in weights:
        q, r = divmod(total * w, whole)
        counts.append(q)
        remainders.append(r)
    rest = total - sum(counts)
    if rest:  # largest remainders first, earlier completions first among equals
        for i in sorted(range(len(counts)), key=remainders.__getitem__, reverse=True)[:rest]:
            counts[i] += 1
    for c, k in zip(completions, counts, strict=True):
        c.token_count = k


def _parse_logprobs(lp: Any, chat: bool, k: int | None) -> tuple[list[float], list[dict[str, float]] | None]:
    if chat:
        content = lp.get("content") or []
        values = [float(t["logprob"]) for t in content]
        tops = (
            [{a["token"]: float(a["logprob"]) for a in (t.get("top_logprobs") or [])} for t in content] if k else None
        )
        return values, tops
    values = [float(v) if v is not None else 0.0 for v in (lp.get("token_logprobs") or [])]
    tops = [dict(t or {}) for t in (lp.get("top_logprobs") or [])] if k else None
    return values, tops


def error_message(raw: bytes) -> str:
    """The server's error text (secrets masked: a server may echo the request's headers)."""
    try:
        data = loads(raw)
    except ValueError:
        return redact(raw[:200].decode(errors="replace").strip()) or "(empty body)"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return redact(str(err.get("message") or err.get("detail") or err))[:500]
    return redact(str(err))[:500]


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
