"""Usage errors of the ``tts-scale`` command line in one line, like every other configuration error.

Click prints a usage error as three lines (usage, a hint, the error) and typer words a bad number
with pydantic's text ("Input should be a valid integer, unable to parse string as an integer").
:class:`OneLineGroup` prints one line instead, ``error: --n must be an integer, got '2.5'; see
tts-scale run --help.``, and exits 2.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import typer.core

# typer 0.29 vendors click as ``typer._click``; older typers use click itself
_ex: Any = getattr(getattr(typer.core, "_click", None), "exceptions", None)
if _ex is None:  # pragma: no cover - typer < 0.29
    import click.exceptions as _ex
_Abort: Any = getattr(typer.core, "Abort", None) or _ex.Abort

__all__ = ["OneLineGroup", "usage_line"]

_TYPES = [
    (re.compile(r"valid integer|is not a valid integer", re.I), "must be an integer"),
    (re.compile(r"valid number|is not a valid float|valid float", re.I), "must be a number"),
    (re.compile(r"valid boolean|is not a valid boolean", re.I), "must be true or false"),
]


def _value_of(opts: Sequence[str], args: Sequence[str]) -> str | None:
    """The value given on the command line to an option named ``opts``."""
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1 :]
    return None


def usage_line(exc: Any, args: Sequence[str]) -> str:
    """One line for a click usage error, naming the option, the value and where the help is."""
    ctx = getattr(exc, "ctx", None)
    helper = f"; see {ctx.command_path} --help." if ctx is not None else "; see tts-scale --help."
    message = exc.format_message()
    param = getattr(exc, "param", None)
    if isinstance(exc, _ex.BadParameter) and param is not None:
        opts = list(getattr(param, "opts", []) or [])
        name = opts[0] if opts else str(param.name).upper()
        for pattern, phrase in _TYPES:
            if pattern.search(message):
                value = _value_of(opts, args)
                got = f", got {value!r}" if value is not None else ""
                return f"{name} {phrase}{got}{helper}"
    return message.rstrip(".") + helper


class OneLineGroup(typer.core.TyperGroup):
    """A typer group whose usage errors are one ``error: ...`` line on stderr (exit 2)."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **kw: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, standalone_mode=False, **kw)
        try:
            rv = super().main(argv, standalone_mode=False, **kw)
        except _ex.NoArgsIsHelpError as exc:
            print(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), file=sys.stderr)
            sys.exit(exc.exit_code)
        except _ex.ClickException as exc:
            print(f"error: {usage_line(exc, argv)}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except _Abort:
            print("error: aborted.", file=sys.stderr)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
