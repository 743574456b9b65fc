"""Checks on dataset rows as read from a file, so a malformed dataset is refused at load in one
line naming the file, the line and the fix (rather than a traceback, or a run that silently drops
or overwrites problems).

- :func:`read_text`: the file as UTF-8 text (a UTF-16 or binary file is refused with the fix);
- :func:`check_rows`: each row a JSON object (a mapping), CSV rows with as many fields as the header;
- :func:`check_limit`: a problem count from 1 to :data:`tts.sampling.MAX_PROBLEMS` (a generated task
  asked for 10^11 problems would build them all);
- :func:`check_ids`: no problem id twice (a study stores results by problem id: a repeated id
  would overwrite the other problem's row, so "ran 10 problems" would store 5).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tts._text import read_utf8
from tts.errors import DatasetError

__all__ = ["check_ids", "check_limit", "check_rows", "parse_json", "read_text"]


def read_text(path: Path) -> str:
    """The file's text; refuses UTF-16, binary and other non-UTF-8 files in one line."""
    return read_utf8(path, "dataset file", DatasetError)


def parse_json(text: str, path: Path) -> list[Any]:
    """The rows of a ``.json`` file: a list of objects, or ``{"data": [...]}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); fix the file.") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return list(data["data"])
    if not isinstance(data, list):
        raise DatasetError(
            f'{path}:1: a .json dataset must be a list of objects or {{"data": [...]}}, got '
            f"{type(data).__name__}; use that shape or a .jsonl file."
        )
    return data


def check_rows(rows: Sequence[Any], path: Path) -> None:
    """Refuse rows that are not objects and short or long CSV rows (an empty file is refused where
    it is used: a run has no problems, a prompt no examples)."""
    csv_file = path.suffix == ".csv"
    for i, row in enumerate(rows):
        line = i + 2 if csv_file else i + 1  # CSV: after the header (JSONL: blank lines aside)
        if not isinstance(row, dict):
            kind = {"list": "a list", "str": "a string", "int": "a number", "float": "a number"}.get(
                type(row).__name__, type(row).__name__
            )
            raise DatasetError(
                f"{path}: row {i + 1} is {kind}, not an object; write one JSON object per "
                'problem, e.g. {"question": ..., "answer": ...}.'
            )
        if csv_file and (None in row or any(v is None for v in row.values())):
            raise DatasetError(
                f"{path}:{line}: CSV row has {'more' if None in row else 'fewer'} fields than the header; "
                "quote values that contain commas and give every column."
            )


def check_ids(ids: Sequence[str], source: str) -> None:
    """Refuse repeated problem ids, naming them."""
    repeated = [pid for pid, count in Counter(ids).items() if count > 1]
    if repeated:
        shown = ", ".join(repr(p) for p in repeated[:5]) + (
            f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        )
        raise DatasetError(
            f"dataset {source!r} repeats problem ids {shown}; give every problem its own id "
            "(results are stored by id, a repeated one would overwrite the other)."
        )


def check_limit(limit: object) -> None:
    """Refuse a problem count that is not an integer from 1 to ``MAX_PROBLEMS``."""
    from tts.sampling import MAX_PROBLEMS

    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise DatasetError(f"dataset limit must be an integer, got {limit!r}.")
    if not 1 <= limit <= MAX_PROBLEMS:
        raise DatasetError(f"dataset limit must be in [1, {MAX_PROBLEMS}], got {limit}.")
