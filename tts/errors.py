"""The one exception hierarchy of tts-scale.

Every error the library raises on purpose derives from :class:`TTSError`; messages are one line that
names the field or component and says the fix.

- :class:`TTSError`: base class.
  - :class:`ConfigError` (also a ``ValueError``): invalid options, sampling parameters, pipeline or
    dataset specification. The CLI exits with code 2 on these.
    - :class:`UnsupportedControl`: a backend was asked for a control it does not have (a constraint,
      token-level beam search, logprobs, ...). The message names the control and the backends
      that support it.
  - :class:`DatasetError` (a ``ConfigError``): a dataset cannot be found or parsed.
  - :class:`ModelNotFound` (a ``ConfigError``): model weights are missing; says how to get them.
  - :class:`BackendError`: the engine failed at run time (crash, server error after retries).
    - :class:`RequestTimeout`: a request exceeded its time limit.
  - :class:`BudgetExceeded`: a token, call, time or cost budget ran out.
  - :class:`Cancelled`: awaiting a handle whose
    request was cancelled.

Runtime failures (``BackendError``, ``BudgetExceeded``) make the CLI exit with code 1.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "DatasetError",
    "ModelNotFound",
    "RequestTimeout",
    "TTSError",
    "UnsupportedControl",
]


class TTSError(Exception):
    """Base class of every error tts-scale raises on purpose."""


class ConfigError(TTSError, ValueError):
    """Invalid configuration: the message names the field and the fix."""


class UnsupportedControl(ConfigError):
    """A backend lacks a requested control (constraint, beam search, logprobs, ...)."""


class DatasetError(ConfigError):
    """A dataset cannot be found or parsed."""


class ModelNotFound(ConfigError):
    """Model weights are missing; the message says how to get them."""


class BackendError(TTSError):
    """The engine failed at run time."""


class RequestTimeout(BackendError):
    """A request exceeded its time limit."""


class BudgetExceeded(TTSError):
    """A token, call, wall-time or cost budget is exhausted."""


class Cancelled(TTSError):
    """The request behind an awaited handle was cancelled."""
