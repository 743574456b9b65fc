"""Datasets: benchmark files, any JSONL/CSV with a field mapping, the ``datasets`` library by name,
and built-in generated tasks for the CPU demo.

A dataset spec string is ``NAME[:N[:SEED]]``: ``N`` problems (a seeded random subset when SEED is
given, else the first N), where NAME is

- a built-in generated task: ``larger`` (which of two numbers is larger), ``capitals`` (capital of a
  country), ``add1`` / ``add2`` (one- and two-digit addition);
- a benchmark: ``gsm8k``, ``math500``, ``game24`` — read from a local file in ``data_dir`` (or the
  ``TTS_DATA_DIR`` environment variable) when present, else from the Hugging Face hub;
- a local ``.jsonl`` / ``.json`` / ``.csv`` path (format detected from its fields);
- ``hf:OWNER/NAME`` for any hub dataset (with ``fields`` saying which columns to use).

References are final answers (:mod:`tts.answers` reads them): GSM8K's text after ``####``, a MATH
solution's "The answer is:" / last ``\\boxed{}`` (the hub's bare ``answer`` as it is); ``capitals``
references list accepted names after ``|`` (``Kyiv|Kiev``), which the ``text`` answer format takes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts.answers import gsm8k_reference, reference_answer
from tts.errors import DatasetError
from tts.task import Task
from tts.types import Problem

__all__ = ["BUILTIN_TASKS", "Dataset", "load_dataset", "parse_spec"]


@dataclass
class Dataset:
    """Problems and the task that says how to prompt for them and read their answers."""

    name: str
    problems: list[Problem]
    task: Task = field(default_factory=Task)

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def subset(self, limit: int | None = None, seed: int | None = None) -> Dataset:
        problems = list(self.problems)
        if seed is not None:
            random.Random(seed).shuffle(problems)
        if limit is not None:
            problems = problems[:limit]
        return Dataset(self.name, problems, self.task)


NUMBER_INSTRUCTION = "End your reply with 'The answer is N.' where N is a number."
GSM8K_TASK = Task(name="gsm8k", instruction=NUMBER_INSTRUCTION, answer_format="math")
MATH_TASK = Task(name="math500", instruction="Put the final answer in \\boxed{}.", answer_format="math")
GAME24_TASK = Task(
    name="game24",
    instruction="Use each of the four numbers exactly once with + - * / and parentheses to make 24. "
    "End your reply with 'The answer is E.' where E is the expression.",
    answer_format="text",
)


# ---------------------------------------------------------------- built-in generated tasks

_CAPITALS = """
France: Paris; Germany: Berlin; Italy: Rome; Spain: Madrid; Portugal: Lisbon; Japan: Tokyo; China: Beijing;
India: New Delhi; Russia: Moscow; Canada: Ottawa; Mexico: Mexico City; Brazil: Brasilia; Argentina: Buenos Aires;
Chile: Santiago; Peru: Lima; Colombia: Bogota; Egypt: Cairo; Kenya: Nairobi; Nigeria: Abuja; Ghana: Accra;
Ethiopia: Addis Ababa; Morocco: Rabat; Algeria: Algiers; Tunisia: Tunis; Greece: Athens; Turkey: Ankara;
Poland: Warsaw; Austria: Vienna; Hungary: Budapest; Sweden: Stockholm; Norway: Oslo; Finland: Helsinki;
Denmark: Copenhagen; Ireland: Dublin; Netherlands: Amsterdam; Belgium: Brussels; Switzerland: Bern|Berne;
Czechia: Prague; Romania: Bucharest; Bulgaria: Sofia; Serbia: Belgrade; Croatia: Zagreb; Ukraine: Kyiv|Kiev;
Belarus: Minsk; Lithuania: Vilnius; Latvia: Riga; Estonia: Tallinn; Iceland: Reykjavik; Australia: Canberra;
New Zealand: Wellington; Indonesia: Jakarta; Thailand: Bangkok; Vietnam: Hanoi; Philippines: Manila;
Malaysia: Kuala Lumpur; South Korea: Seoul; North Korea: Pyongyang; Mongolia: Ulaanbaatar|Ulan Bator;
Iran: Tehran; Iraq: Baghdad; Syria: Damascus; Jordan: Amman; Lebanon: Beirut; Saudi Arabia: Riyadh;
Pakistan: Islamabad; Afghanistan: Kabul; Bangladesh: Dhaka; Nepal: Kathmandu;
Sri Lanka: Sri Jayawardenepura Kotte|Colombo; Cuba: Havana; Jamaica: Kingston; Venezuela: Caracas;
Ecuador: Quito; Bolivia: Sucre|La Paz; Uruguay: Montevideo; Paraguay: Asuncion; Uganda: Kampala;
Tanzania: Dodoma; Zimbabwe: Harare; Zambia: Lusaka; Angola: Luanda; Senegal: Dakar; Mali: Bamako;
Sudan: Khartoum; Libya: Tripoli; Qatar: Doha; Kuwait: Kuwait City; Oman: Muscat; Yemen: Sanaa;
Georgia: Tbilisi; Armenia: Yerevan; Azerbaijan: Baku; Kazakhstan: Astana; Uzbekistan: Tashkent;
Slovakia: Bratislava; Slovenia: Ljubljana; Albania: Tirana; Cyprus: Nicosia; Malta: Valletta; Panama: Panama City
"""
"""``Country: Capital`` pairs separated by ``;``; ``|`` separates accepted names of one capital (the
first is the official one), which the ``text`` answer format accepts alike."""


def _capital_pairs() -> list[tuple[str, str]]:
    pairs = (entry.split(":") for entry in _CAPITALS.split(";"))
    return [(country.strip(), capital.strip()) for country, capital in pairs]


def _gen_larger(n: int, rng: random.Random) -> list[Problem]:
    out = []
    for i in range(n):
        a, b = rng.sample(range(10, 100), 2)
        out.append(Problem(f"larger-{i}", f"Which number is larger, {a} or {b}?", str(max(a, b)), {"a": a, "b": b}))
    return out


def _gen_add(digits: int):
    lo, hi = (1, 9) if digits == 1 else (10, 99)

    def gen(n: int, rng: random.Random) -> list[Problem]:
        out = []
        for i in range(n):
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            out.append(Problem(f"add{digits}-{i}", f"What is {a} + {b}?", str(a + b), {"a": a, "b": b}))
        return out

    return gen


def _gen_capitals(n: int, rng: random.Random) -> list[Problem]:
    pairs = _capital_pairs()
    rng.shuffle(pairs)
    return [
        Problem(f"capitals-{i}", f"What is the capital of {country}?", capital)
        for i, (country, capital) in enumerate(pairs[:n])
    ]


_BUILTIN_GENERATORS = {"larger": _gen_larger, "add1": _gen_add(1), "add2": _gen_add(2), "capitals": _gen_capitals}

BUILTIN_TASKS: dict[str, Task] = {
    "larger": Task(
        name="larger",
        instruction="Answer with the larger number only.",
        direct_template="{question} {instruction}",
        cot_template="{question} Think briefly, then answer. {instruction}",
        answer_format="first_number",
    ),
    **{
        name: Task(
            name=name,
            instruction="Answer with the number only.",
            direct_template="{question} {instruction}",
            cot_template="{question} Think step by step, then end with 'The answer is N.'",
            answer_format="math",
        )
        for name in ("add1", "add2")
    },
    "capitals": Task(
        name="capitals",
        instruction="Answer with the city name only.",
        direct_template="{question} {instruction}",
        cot_template="{question} {instruction}",
        answer_format="text",
    ),
}
"""Tasks of the built-in generated datasets (the CPU demo runs ``larger``)."""

_DEFAULT_SIZES = {"larger": 200, "add1": 200, "add2": 200, "capitals": len(_capital_pairs())}


# ---------------------------------------------------------------- files and hub

_BENCHMARK_FILES = {
    "gsm8k": ("gsm8k_test.jsonl", "gsm8k.jsonl"),
    "math500": ("math500_dev.jsonl", "math500.jsonl"),
    "game24": ("game24.csv",),
}
_BENCHMARK_HUB = {"gsm8k": ("openai/gsm8k", "main", "test"), "math500": ("HuggingFaceH4/MATH-500", None, "test")}
_BENCHMARK_TASKS = {"gsm8k": GSM8K_TASK, "math500": MATH_TASK, "game24": GAME24_TASK}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from tts._rows import check_rows, parse_json, read_text

    text = read_text(path)
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        check_rows(rows, path)
        return rows
    if path.suffix == ".json":
        rows = parse_json(text, path)
        check_rows(rows, path)
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.msg}); fix or remove that line.") from None
    check_rows(rows, path)
    return rows


def _detect_format(rows: list[dict[str, Any]]) -> str:
    first = rows[0] if rows else {}
    if "Puzzles" in first:
        return "game24"
    answer = str(first.get("answer", first.get("solution", "")))
    if "####" in answer:
        return "gsm8k"
    if "\\boxed" in answer or "The answer is:" in answer:
        return "math500"
    return "raw"


def _problems_from_rows(
    rows: list[dict[str, Any]], fmt: str, name: str, fields: Mapping[str, str] | None
) -> list[Problem]:
    fields = dict(fields or {})
    q_key = fields.get("question") or next(
        (k for k in ("question", "problem", "Puzzles", "input", "prompt") if rows and k in rows[0]), "question"
    )
    r_key = fields.get("reference") or next(
        (k for k in ("answer", "reference", "target", "output", "solution") if rows and k in rows[0]), "answer"
    )
    id_key = fields.get("id") or next((k for k in ("id", "unique_id", "Rank") if rows and k in rows[0]), None)
    out = []
    for i, row in enumerate(rows):
        if q_key not in row:
            raise DatasetError(
                f"dataset {name!r} row {i} has no field {q_key!r}; pass fields={{'question': ...}} "
                f"(available: {', '.join(map(str, row))})."
            )
        question = str(row[q_key])
        raw_ref = row.get(r_key)
        reference: str | None
        if fmt == "game24":
            reference = None
            question = f"Numbers: {question}"
        elif raw_ref is None:
            reference = None
        elif fmt == "gsm8k":
            reference = gsm8k_reference(str(raw_ref))
        elif fmt == "math500":  # a whole solution (local files) or the final answer (the hub's "answer")
            reference = reference_answer(str(raw_ref))
        else:
            reference = str(raw_ref)
        pid = str(row[id_key]) if id_key and id_key in row else f"{name}-{i}"
        meta = {k: v for k, v in row.items() if k not in (q_key, r_key)}
        if raw_ref is not None and fmt in ("gsm8k", "math500") and "solution" not in meta:
            meta["solution"] = raw_ref
        out.append(Problem(pid, question, reference, meta))
    from tts._rows import check_ids

    check_ids([p.id for p in out], name)
    return out


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Only errors from ``loggers`` meanwhile (the hub clients warn on every retry; our one line says it)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _load_hub(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"loading {repo!r} from the hub needs the datasets library: pip install "
            "'tts-scale[data]', or pass a local JSONL/CSV path."
        ) from None
    from tts.models import _offline, _unreachable_hub

    host = None if _offline() else _unreachable_hub()
    if host is not None:  # fail at once: the hub client would retry for half a minute, warning each time
        raise DatasetError(
            f"{repo!r} cannot be downloaded: {host} cannot be reached; pass --data-dir with the benchmark "
            "file, a local JSONL/CSV path as the dataset, or set HF_HUB_OFFLINE=1 to use a cached copy."
        )
    try:
        with _quiet("huggingface_hub", "datasets", "fsspec"):
            ds = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:
        raise DatasetError(
            f"{repo!r} could not be loaded from the Hugging Face hub ({type(exc).__name__}); "
            "pass a local JSONL/CSV file instead, e.g. --dataset path/to/file.jsonl, or set "
            "TTS_DATA_DIR."
        ) from None
    return [dict(r) for r in ds]


def parse_spec(spec: str) -> tuple[str, int | None, int | None]:
    """``NAME[:N[:SEED]]`` -> (name, limit, seed). Paths may contain ':' only before the counts."""
    parts = spec.rsplit(":", 2)
    name, limit, seed = spec, None, None
    tail: list[int] = []
    while len(parts) > 1 and re.fullmatch(r"\d+", parts[-1]) and len(tail) < 2:
        tail.insert(0, int(parts.pop()))
    if tail:
        name = ":".join(parts)
        limit = tail[0]
        seed = tail[1] if len(tail) > 1 else None
    return name, limit, seed


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    seed: int | None = None,
    data_dir: str | Path | None = None,
    fields: Mapping[str, str] | None = None,
    split: str = "test",
    format: str | None = None,
) -> Dataset:
    """Load problems by spec (see module docstring). ``limit``/``seed`` override the spec's."""
    name, spec_limit, spec_seed = parse_spec(spec)
    limit = limit if limit is not None else spec_limit
    from tts._rows import check_limit

    check_limit(limit)
    seed = seed if seed is not None else spec_seed
    if name in _BUILTIN_GENERATORS:
        n = limit or _DEFAULT_SIZES[name]
        problems = _BUILTIN_GENERATORS[name](n, random.Random(seed if seed is not None else 0))
        return Dataset(name, problems, BUILTIN_TASKS[name])
    if name in _BENCHMARK_FILES:
        folder = Path(data_dir or os.environ.get("TTS_DATA_DIR", "") or ".")
        local = next((folder / f for f in _BENCHMARK_FILES[name] if (folder / f).is_file()), None)
        if local is not None:
            rows = _read_rows(local)
        elif name in _BENCHMARK_HUB:
            repo, config, hub_split = _BENCHMARK_HUB[name]
            rows = _load_hub(repo, config, hub_split if split == "test" else split)
        else:
            raise DatasetError(
                f"{name} needs a local file ({' or '.join(_BENCHMARK_FILES[name])}) in "
                "TTS_DATA_DIR or --data-dir, or pass its path as the dataset."
            )
        problems = _problems_from_rows(rows, format or name, name, fields)
        return Dataset(name, problems, _BENCHMARK_TASKS[name]).subset(limit, seed)
    if name.startswith("hf:"):
        rows = _load_hub(name[3:], None, split)
        fmt = format or _detect_format(rows)
        return Dataset(name, _problems_from_rows(rows, fmt, name, fields), _BENCHMARK_TASKS.get(fmt, Task())).subset(
            limit, seed
        )
    path = Path(name)
    if path.suffix in (".jsonl", ".json", ".csv") or path.exists():
        if not path.is_file():
            raise DatasetError(f"dataset file {name!r} not found; check the path.")
        rows = _read_rows(path)
        fmt = format or _detect_format(rows)
        task = _BENCHMARK_TASKS.get(fmt, Task(name=path.stem))
        return Dataset(path.stem, _problems_from_rows(rows, fmt, path.stem, fields), task).subset(limit, seed)
    known = ", ".join([*_BUILTIN_GENERATORS, *_BENCHMARK_FILES])
    raise DatasetError(f"dataset must be one of {known}, a .jsonl/.csv path or hf:OWNER/NAME, got {name!r}.")


def problems_from(items: Iterable[Mapping[str, Any] | str]) -> list[Problem]:
    """Problems from plain questions or dicts with question/reference/id."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(Problem(f"q{i}", item))
        else:
            out.append(
                Problem(
                    str(item.get("id", f"q{i}")),
                    str(item["question"]),
                    None if item.get("reference") is None else str(item["reference"]),
                    {k: v for k, v in item.items() if k not in ("id", "question", "reference")},
                )
            )
    return out
