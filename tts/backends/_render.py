"""Prompt rendering shared by the engines that tokenize themselves (hf, vllm).

Raw text gets the tokenizer's special tokens (BOS where the model uses one); chat messages go
through the tokenizer's chat template with the generation prompt, which already holds the special
tokens. ``Request.assistant_prefix`` is appended to the rendered text in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tts.errors import ConfigError
from tts.types import Request

__all__ = ["Rendered", "render"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered prompt: the text the model sees and its token ids."""

    text: str
    ids: tuple[int, ...]


def render(tokenizer: Any, request: Request, *, backend: str, chat_template: str | None = None) -> Rendered:
    """The text and token ids of ``request``'s prompt (see the module docstring)."""
    if isinstance(request.prompt, str):
        text = request.prompt + request.assistant_prefix
        special = True
    else:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if chat_template is not None:
            kwargs["chat_template"] = chat_template
        try:
            text = tokenizer.apply_chat_template(request.messages(), **kwargs) + request.assistant_prefix
        except ValueError as exc:
            raise ConfigError(
                f"{backend} backend: cannot render chat messages ({exc}); set chat_template= "
                "(vllm), use an instruction-tuned model or send raw-text prompts."
            ) from exc
        special = False
    ids = tuple(tokenizer.encode(text, add_special_tokens=special))
    if not ids:
        raise ConfigError("prompt must not be empty, got ''.")
    return Rendered(text, ids)
