"""Options of the OpenAI-compatible backend (see :mod:`tts.backends.openai`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tts.backends.base import BackendOptions

__all__ = ["OpenAIOptions"]


class OpenAIOptions(BackendOptions):
    """Options of the OpenAI-compatible backend."""

    base_url: str | tuple[str, ...] = "http://127.0.0.1:8000/v1"
    """Server base URL(s), ending in ``/v1``; several URLs are load-balanced."""
    model: str | None = None
    """Model name sent with each request; ``None`` asks the first server's ``/models`` once."""
    endpoint: Literal["chat", "completions"] = "chat"
    """``chat`` (server renders chat messages) or ``completions`` (raw-text prompts only)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (no key: no Authorization header)."""
    n_mode: Literal["auto", "native", "split"] = "auto"
    """``native``: one call with n; ``split``: n concurrent n=1 calls; ``auto``: native until the
    server rejects n>1 or returns fewer choices, then split."""
    max_concurrency: int = Field(default=64, ge=1)
    """HTTP calls in flight at once (also the connection pool size)."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds one HTTP attempt may take (connect, send, generate, read)."""
    deadline: float = Field(default=300.0, gt=0)
    """Seconds one request may take across all its attempts and backoff delays, counted from its
    first attempt; when it passes the request fails with :class:`tts.errors.RequestTimeout`."""
    max_retries: int = Field(default=4, ge=0)
    """Retries after the first attempt for 429, 408, 5xx, connection errors and timeouts."""
    backoff_base: float = Field(default=0.5, ge=0)
    """First retry delay in seconds; doubles per attempt, with jitter (a random 50-100%)."""
    backoff_max: float = Field(default=20.0, ge=0)
    """Upper bound of one retry delay (also caps ``Retry-After``)."""
    eject_after: int = Field(default=3, ge=1)
    """Consecutive failures (5xx, timeouts) that take an endpoint out of rotation; a refused
    connection takes it out at once."""
    endpoint_cooldown: float = Field(default=10.0, ge=0)
    """Seconds an ejected endpoint stays out of rotation before it is tried again."""
    server_extensions: bool = True
    """Send vLLM/SGLang extensions (structured outputs, top_k, min_p, priority, ...)."""
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Name of the output-length field on the chat endpoint (hosted reasoning models need
    ``max_completion_tokens``)."""
    stream: bool = False
    """Stream answers (``stream: true`` on the wire, server-sent events): a call cancelled
    mid-generation is charged the tokens received until the cut (the server's running usage, or
    logprob entries, or content deltas) instead of ``max_tokens`` per sample."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Fields merged into every request body (e.g. ``{"chat_template_kwargs": {...}}``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (not for the API key: use ``api_key_env``; values of ``Authorization``
    and ``*key*`` / ``*token*`` headers are masked in error texts all the same)."""

    @field_validator("base_url", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        urls = (value,) if isinstance(value, str) else value
        if not urls:
            raise ValueError("base_url must name at least one server, got [].")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {url!r}.")
        return value

    @property
    def urls(self) -> tuple[str, ...]:
        urls = (self.base_url,) if isinstance(self.base_url, str) else self.base_url
        return tuple(u.rstrip("/") for u in urls)
