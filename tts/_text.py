"""Reading a configuration or data file as text: UTF-8 (a byte-order mark is dropped), and a
UTF-16, binary or otherwise non-UTF-8 file refused in one line that names the file, the line and
the fix (``save it as UTF-8``), never a ``UnicodeDecodeError`` traceback."""

from __future__ import annotations

from pathlib import Path

from tts.errors import ConfigError

__all__ = ["read_utf8"]


def read_utf8(path: Path, what: str, error: type[ConfigError] = ConfigError) -> str:
    """The text of ``path``; ``what`` names the file in messages (``pipeline file``, ``dataset file``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {str(path)!r} cannot be read ({exc.strerror}); check the path.") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:64]:
        raise error(f"{path}:1: {what} is UTF-16 (or binary); save it as UTF-8.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
