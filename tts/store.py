"""The results store of a study: one SQLite file, written as each problem finishes.

Tables:

- ``configs``: one row per configuration (pipeline x budget x sweep point): its id (a hash of the
  resolved configuration), label, pipeline label, budget, sweep values and full resolved config.
- ``results``: one row per (configuration, seed, problem): answer, correctness, error, timeout,
  latency, token and call counts, answer agreement and readability of the final answer.
- ``samples``: every candidate of every result (answer, canonical key, correctness, tokens,
  verifier score, mean token logprob): what the subsampled curves are computed from.
- ``runs``: one row per session of a (configuration, seed): wall time, problems finished, peak
  process memory and KV-cache use where the engine reports it.
- ``meta``: key/value pairs (manifest, price, schema version).

A result and its samples are written in one transaction, so a study killed at any point loses at
most the problems in flight, and a resumed study skips every (configuration, seed, problem) it
finds here: nothing lost, nothing run twice. WAL mode keeps readers (reports) and the writer apart.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RESULT_COLUMNS", "SAMPLE_COLUMNS", "TIMING_COLUMNS", "Store"]

SCHEMA_VERSION = 1

RESULT_COLUMNS: tuple[str, ...] = (
    "config_id", "seed", "problem_id", "position", "answer", "reference", "correct", "error", "timed_out",
    "latency", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "calls", "completions",
    "verifier_calls", "n_samples", "agreement", "distinct_answers", "readability", "final_text", "finished_at",
)
SAMPLE_COLUMNS: tuple[str, ...] = (
    "config_id", "seed", "problem_id", "idx", "answer", "key", "correct", "tokens", "score", "logprob",
    "finish_reason",
)
TIMING_COLUMNS: frozenset[str] = frozenset({"latency", "finished_at"})
"""Columns that depend on timing (left out when comparing an interrupted run with a clean one)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_id TEXT PRIMARY KEY, label TEXT NOT NULL, pipeline TEXT NOT NULL, position INTEGER NOT NULL,
    budget TEXT, sweep TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL, position INTEGER NOT NULL,
    answer TEXT, reference TEXT, correct INTEGER, error TEXT, timed_out INTEGER NOT NULL DEFAULT 0,
    latency REAL, prompt_tokens INTEGER, cached_prompt_tokens INTEGER, completion_tokens INTEGER,
    calls INTEGER, completions INTEGER, verifier_calls INTEGER, n_samples INTEGER, agreement REAL,
    distinct_answers INTEGER, readability REAL, final_text TEXT, finished_at REAL,
    PRIMARY KEY (config_id, seed, problem_id)
);
CREATE TABLE IF NOT EXISTS samples (
    config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL, idx INTEGER NOT NULL,
    answer TEXT, key TEXT, correct INTEGER, tokens INTEGER, score REAL, logprob REAL, finish_reason TEXT,
    PRIMARY KEY (config_id, seed, problem_id, idx)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, config_id TEXT NOT NULL, seed INTEGER NOT NULL, started REAL,
    wall REAL, problems INTEGER, peak_rss_kb INTEGER, kv_cache REAL
);
"""


class Store:
    """A study's SQLite file (see module docstring). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                from tts.errors import ConfigError

                raise ConfigError(f"results store {str(self.path)!r} not found; run the study first or check "
                                  "the path.")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.db.commit()
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))
        self.db.commit()

    def add_config(self, config_id: str, label: str, pipeline: str, position: int, budget: Any,
                   sweep: dict[str, Any], spec: dict[str, Any]) -> None:
        """Record a configuration (its label and position may change between sessions; its id not)."""
        self.db.execute(
            "INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(config_id) DO UPDATE SET "
            "label=excluded.label, pipeline=excluded.pipeline, position=excluded.position",
            (config_id, label, pipeline, position, json.dumps(budget), json.dumps(sweep, sort_keys=True),
             json.dumps(spec, sort_keys=True)))
        self.db.commit()

    def add_result(self, row: dict[str, Any], samples: Sequence[dict[str, Any]] = ()) -> None:
        """Write one problem's result and its samples atomically."""
        with self.db:
            self.db.execute(f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) VALUES "
                            f"({', '.join('?' * len(RESULT_COLUMNS))})", [row.get(c) for c in RESULT_COLUMNS])
            self.db.executemany(f"INSERT OR REPLACE INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(SAMPLE_COLUMNS))})",
                                [[s.get(c) for c in SAMPLE_COLUMNS] for s in samples])

    def add_run(self, config_id: str, seed: int, started: float, wall: float, problems: int,
                peak_rss_kb: int | None, kv_cache: float | None) -> None:
        with self.db:
            self.db.execute("INSERT INTO runs (config_id, seed, started, wall, problems, peak_rss_kb, kv_cache) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (config_id, seed, started, wall, problems, peak_rss_kb, kv_cache))

    # ------------------------------------------------------------------ reading

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def done(self, config_id: str, seed: int) -> set[str]:
        """Problem ids already finished for (configuration, seed)."""
        rows = self.db.execute("SELECT problem_id FROM results WHERE config_id = ? AND seed = ?", (config_id, seed))
        return {r[0] for r in rows}

    def configs(self) -> list[dict[str, Any]]:
        """Configurations in study order, with budget, sweep and spec decoded."""
        out = []
        for r in self.db.execute("SELECT * FROM configs ORDER BY position, label"):
            d = dict(r)
            d["budget"] = json.loads(d["budget"]) if d["budget"] is not None else None
            d["sweep"] = json.loads(d["sweep"])
            d["spec"] = json.loads(d["spec"])
            out.append(d)
        return out

    def results(self, config_id: str | None = None) -> list[dict[str, Any]]:
        """Result rows (one per configuration, seed and problem), in a stable order."""
        query = "SELECT * FROM results"
        args: tuple[Any, ...] = ()
        if config_id is not None:
            query += " WHERE config_id = ?"
            args = (config_id,)
        query += " ORDER BY config_id, seed, position, problem_id"
        return [dict(r) for r in self.db.execute(query, args)]

    def samples(self, config_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM samples"
        args: tuple[Any, ...] = ()
        if config_id is not None:
            query += " WHERE config_id = ?"
            args = (config_id,)
        query += " ORDER BY config_id, seed, problem_id, idx"
        return [dict(r) for r in self.db.execute(query, args)]

    def runs(self, config_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs" + (" WHERE config_id = ?" if config_id else "") + " ORDER BY id"
        return [dict(r) for r in self.db.execute(query, (config_id,) if config_id else ())]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # ------------------------------------------------------------------ export

    def table(self, name: str = "results") -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a table, ``results`` rows carrying their configuration's label."""
        if name == "results":
            cur = self.db.execute("SELECT c.label, r.* FROM results r JOIN configs c USING (config_id) "
                                  "ORDER BY c.position, r.seed, r.position, r.problem_id")
        elif name in ("samples", "configs", "runs", "meta"):
            cur = self.db.execute(f"SELECT * FROM {name}")
        else:
            from tts.errors import ConfigError

            raise ConfigError(f"table must be one of results, samples, configs, runs, meta, got {name!r}.")
        columns = [d[0] for d in cur.description]
        return columns, [tuple(r) for r in cur.fetchall()]

    def export_csv(self, path: str | Path, name: str = "results") -> Path:
        """Write a table as CSV; returns the path."""
        columns, rows = self.table(name)
        return write_csv(path, columns, rows)

    def dataframe(self, name: str = "results") -> Any:
        """A table as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            from tts.errors import ConfigError

            raise ConfigError("dataframe() needs pandas: pip install pandas, or use export_csv().") from None
        columns, rows = self.table(name)
        return pd.DataFrame.from_records(rows, columns=columns)


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return p
