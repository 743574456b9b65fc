"""The results store of a study: one SQLite file, written as each problem finishes.

Tables:

- ``configs``: one row per configuration (pipeline x n value x sweep point): its id (a hash of the
  resolved configuration), label, pipeline label, n value, sweep values and full resolved config.
- ``results``: one row per (configuration, seed, problem): answer, correctness, status (``ok``,
  ``failed``, ``timeout``, ``cut``), error (secrets masked by :func:`tts.secrets.redact`), latency,
  generation token and call counts, verifier calls and verifier tokens (a judge's own engine
  requests, counted apart), cost (USD, from the backend's ``pricing``, verifier requests included;
  NULL without pricing), answer agreement, readability of the final answer, and how many samples
  stopped at the token limit (``truncated``).
- ``samples``: every candidate of every result (answer, canonical key, correctness, tokens,
  verifier score and its pass/fail, mean token logprob): what the subsampled curves are computed from.
- ``runs``: one row per session of a (configuration, seed): wall time, problems finished, peak
  process memory and KV-cache use where the engine reports it. The row is written when the session
  starts and updated with each result (in the result's transaction), so a killed session keeps it.
- ``meta``: key/value pairs (the study spec, schema version).

A result and its samples are written in one transaction, so a study killed at any point loses at
most the problems in flight, and a resumed study skips every (configuration, seed, problem) it
finds answered here: nothing lost, nothing run twice. A failed or timed-out problem is stored with
its kind and retried by the next session (unless it keeps failures). WAL mode keeps readers
(reports) and the writer apart.

**Damage and sharing.** Opening a store checks its header and runs ``PRAGMA quick_check``; a
damaged file is a :class:`~tts.errors.ConfigError` saying to move it aside. A writer holds an
exclusive lock on ``OUT/.lock`` (``flock``, released when the process ends, however it ends), so
two studies never write one folder at once; the second is refused naming the first's process.

Stores written by earlier versions are upgraded when opened for writing (columns added, ``budget``
renamed ``n_value``); read-only readers accept both shapes.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from tts.errors import ConfigError, TTSError
from tts.secrets import redact

__all__ = ["FAILED", "RESULT_COLUMNS", "SAMPLE_COLUMNS", "TIMING_COLUMNS", "Store", "status_of"]

SCHEMA_VERSION = 3

FAILED: tuple[str, ...] = ("failed", "timeout")
"""Statuses of a problem that was not answered (a resumed study runs it again)."""

RESULT_COLUMNS: tuple[str, ...] = (
    "config_id",
    "seed",
    "problem_id",
    "position",
    "answer",
    "reference",
    "correct",
    "error",
    "timed_out",
    "latency",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "calls",
    "completions",
    "verifier_calls",
    "verifier_prompt_tokens",
    "verifier_completion_tokens",
    "n_samples",
    "agreement",
    "distinct_answers",
    "readability",
    "final_text",
    "finished_at",
    "status",
    "cost",
    "truncated",
    "cache_hits",
    "original_tokens",
)
SAMPLE_COLUMNS: tuple[str, ...] = (
    "config_id",
    "seed",
    "problem_id",
    "idx",
    "answer",
    "key",
    "correct",
    "tokens",
    "score",
    "logprob",
    "finish_reason",
    "passed",
)
TIMING_COLUMNS: frozenset[str] = frozenset({"latency", "finished_at"})
"""Columns that depend on timing (left out when comparing an interrupted run with a clean one)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (
    config_id TEXT PRIMARY KEY, label TEXT NOT NULL, pipeline TEXT NOT NULL, position INTEGER NOT NULL,
    n_value TEXT, sweep TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL, position INTEGER NOT NULL,
    answer TEXT, reference TEXT, correct INTEGER, error TEXT, timed_out INTEGER NOT NULL DEFAULT 0,
    latency REAL, prompt_tokens INTEGER, cached_prompt_tokens INTEGER, completion_tokens INTEGER,
    calls INTEGER, completions INTEGER, verifier_calls INTEGER, n_samples INTEGER, agreement REAL,
    distinct_answers INTEGER, readability REAL, final_text TEXT, finished_at REAL, status TEXT, cost REAL,
    verifier_prompt_tokens INTEGER, verifier_completion_tokens INTEGER, truncated INTEGER,
    PRIMARY KEY (config_id, seed, problem_id)
);
CREATE TABLE IF NOT EXISTS samples (
    config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL, idx INTEGER NOT NULL,
    answer TEXT, key TEXT, correct INTEGER, tokens INTEGER, score REAL, logprob REAL, finish_reason TEXT,
    passed INTEGER, PRIMARY KEY (config_id, seed, problem_id, idx)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, config_id TEXT NOT NULL, seed INTEGER NOT NULL, started REAL,
    wall REAL, problems INTEGER, peak_rss_kb INTEGER, kv_cache REAL
);
"""
_ADDED = {
    "results": (
        ("status", "TEXT"),
        ("cost", "REAL"),
        ("verifier_prompt_tokens", "INTEGER"),
        ("verifier_completion_tokens", "INTEGER"),
        ("truncated", "INTEGER"),
        ("cache_hits", "INTEGER"),
        ("original_tokens", "INTEGER"),
    ),
    "samples": (("passed", "INTEGER"),),
    "runs": (("prefix_cache_hit_rate", "REAL"),),
}
"""Columns added since schema version 1 (an older store gets them, NULL, when opened for writing)."""

_STATUS_SQL = "COALESCE(status, CASE WHEN timed_out THEN 'timeout' WHEN error IS NOT NULL THEN 'failed' ELSE 'ok' END)"
""":func:`status_of` in SQL."""

_HEADER = b"SQLite format 3\x00"


def status_of(row: dict[str, Any]) -> str:
    """A result row's status (rows of schema version 1 have none: read it from error and timeout)."""
    status = row.get("status")
    if status:
        return str(status)
    return "timeout" if row.get("timed_out") else "failed" if row.get("error") is not None else "ok"


def _damaged(path: Path, why: str) -> ConfigError:
    lines = [line.strip() for line in why.splitlines() if line.strip() and not line.startswith("***")]
    why = (lines[0][:120] + (f"; {len(lines) - 1} more problems" if len(lines) > 1 else "")) if lines else "unreadable"
    return ConfigError(f"{path} is damaged ({why}): move it aside and rerun the study, or pass --out to a new folder.")


def _check_header(path: Path) -> None:
    """A file that is not an SQLite database (or was cut short inside its header)."""
    with path.open("rb") as f:
        head = f.read(100)
    if head and (len(head) < 100 or not head.startswith(_HEADER)):
        raise _damaged(path, "not an SQLite database: bad header")


class _Lock:
    """An exclusive ``flock`` on ``FOLDER/.lock`` naming its holder (no-op where fcntl is missing)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.file: IO[str] | None = None
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return
        f = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise TTSError(
                f"{folder} is in use by {holder}; wait for it to finish (or stop it), or pass --out to another folder."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} ({redact(' '.join(sys.argv[:3]))})\n")
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None


class Store:
    """A study's SQLite file (see module docstring). Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock: _Lock | None = None
        if readonly:
            if not self.path.is_file():
                raise ConfigError(f"results store {str(self.path)!r} not found; run the study first or check the path.")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _Lock(self.path.parent)
        try:
            if self.path.is_file():
                _check_header(self.path)
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            else:
                self.db = sqlite3.connect(self.path)
            self._check()
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(_SCHEMA)
                self._upgrade()
                self.db.commit()
        except sqlite3.DatabaseError as exc:
            self._release()
            raise _damaged(self.path, str(exc)) from None
        except BaseException:
            self._release()
            raise
        self.db.row_factory = sqlite3.Row

    def _check(self) -> None:
        """``PRAGMA quick_check`` (page structure, every page read): a damaged file is refused."""
        rows = [str(r[0]) for r in self.db.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise _damaged(self.path, "\n".join(rows))

    def _release(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _upgrade(self) -> None:
        """Bring a store of an earlier schema version to this one (idempotent)."""

        def columns(table: str) -> set[str]:
            return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

        with self.db:
            if "budget" in columns("configs"):
                self.db.execute("ALTER TABLE configs RENAME COLUMN budget TO n_value")
            for table, added in _ADDED.items():
                have = columns(table)
                for name, kind in added:
                    if name not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))
        self.db.commit()

    def add_config(
        self,
        config_id: str,
        label: str,
        pipeline: str,
        position: int,
        n_value: Any,
        sweep: dict[str, Any],
        spec: dict[str, Any],
    ) -> None:
        """Record a configuration (its label and position may change between sessions; its id not)."""
        self.db.execute(
            "INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(config_id) DO UPDATE SET "
            "label=excluded.label, pipeline=excluded.pipeline, position=excluded.position",
            (
                config_id,
                label,
                pipeline,
                position,
                json.dumps(n_value),
                json.dumps(sweep, sort_keys=True),
                json.dumps(spec, sort_keys=True),
            ),
        )
        self.db.commit()

    def add_result(
        self, row: dict[str, Any], samples: Sequence[dict[str, Any]] = (), *, run: dict[str, Any] | None = None
    ) -> None:
        """Write one problem's result and its samples atomically (replacing an earlier attempt's,
        its error text redacted); ``run`` (``id`` and the session's columns) updates the session
        row in the same transaction."""
        if row.get("error"):
            row = {**row, "error": redact(str(row["error"]))}
        with self.db:
            self.db.execute(
                "DELETE FROM samples WHERE config_id = ? AND seed = ? AND problem_id = ?",
                (row["config_id"], row["seed"], row["problem_id"]),
            )
            self.db.execute(
                f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(RESULT_COLUMNS))})",
                [row.get(c) for c in RESULT_COLUMNS],
            )
            self.db.executemany(
                f"INSERT OR REPLACE INTO samples ({', '.join(SAMPLE_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(SAMPLE_COLUMNS))})",
                [[s.get(c) for c in SAMPLE_COLUMNS] for s in samples],
            )
            if run is not None:
                self._update_run(run)

    def start_run(self, config_id: str, seed: int, started: float) -> int:
        """Record a session as it starts (wall 0, no problems); returns its id for :meth:`update_run`."""
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (config_id, seed, started, wall, problems) VALUES (?, ?, ?, 0, 0)",
                (config_id, seed, started),
            )
        return int(cur.lastrowid or 0)

    def update_run(self, run: dict[str, Any]) -> None:
        """Set a session's ``wall``, ``problems``, ``peak_rss_kb``, ``kv_cache`` and
        ``prefix_cache_hit_rate`` (by ``id``)."""
        with self.db:
            self._update_run(run)

    def _update_run(self, run: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE runs SET wall = ?, problems = ?, peak_rss_kb = ?, kv_cache = COALESCE(?, kv_cache), "
            "prefix_cache_hit_rate = COALESCE(?, prefix_cache_hit_rate) WHERE id = ?",
            (
                run["wall"],
                run["problems"],
                run.get("peak_rss_kb"),
                run.get("kv_cache"),
                run.get("prefix_cache_hit_rate"),
                run["id"],
            ),
        )

    # ------------------------------------------------------------------ reading

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def done(self, config_id: str, seed: int, *, failures: bool = False) -> set[str]:
        """Problem ids already answered for (configuration, seed); ``failures``: failed and
        timed-out ones too (a resume that keeps them)."""
        where = "" if failures else f" AND {_STATUS_SQL} NOT IN {FAILED}"
        rows = self.db.execute(
            f"SELECT problem_id FROM results WHERE config_id = ? AND seed = ?{where}", (config_id, seed)
        )
        return {r[0] for r in rows}

    def statuses(self, config_ids: Sequence[str] | None = None) -> dict[str, int]:
        """How many stored results have each status (of these configurations; default all)."""
        args: tuple[str, ...]
        where, args = "", ()
        if config_ids is not None:
            where, args = f" WHERE config_id IN ({', '.join('?' * len(config_ids))})", tuple(config_ids)
        rows = self.db.execute(f"SELECT {_STATUS_SQL}, COUNT(*) FROM results{where} GROUP BY 1", args)
        return {str(r[0]): int(r[1]) for r in rows}

    def configs(self) -> list[dict[str, Any]]:
        """Configurations in study order, with n value, sweep and spec decoded."""
        out = []
        for r in self.db.execute("SELECT * FROM configs ORDER BY position, label"):
            d = dict(r)
            if "budget" in d:  # a read-only store of schema version 1
                d["n_value"] = d.pop("budget")
            d["n_value"] = json.loads(d["n_value"]) if d["n_value"] is not None else None
            d["sweep"] = json.loads(d["sweep"])
            d["spec"] = json.loads(d["spec"])
            out.append(d)
        return out

    def _rows(self, table: str, config_id: str | None, order: str) -> list[dict[str, Any]]:
        where = " WHERE config_id = ?" if config_id is not None else ""
        args = (config_id,) if config_id is not None else ()
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {table}{where} ORDER BY {order}", args)]

    def results(self, config_id: str | None = None) -> list[dict[str, Any]]:
        """Result rows (one per configuration, seed and problem), in a stable order."""
        return self._rows("results", config_id, "config_id, seed, position, problem_id")

    def samples(self, config_id: str | None = None) -> list[dict[str, Any]]:
        """Sample rows, each problem's in the order they were drawn."""
        return self._rows("samples", config_id, "config_id, seed, problem_id, idx")

    def runs(self, config_id: str | None = None) -> list[dict[str, Any]]:
        """Session rows (one per run of a configuration and seed), oldest first."""
        return self._rows("runs", config_id, "id")

    def truncation(self, config_id: str) -> tuple[int, int, int]:
        """(Samples that stopped at the token limit, those of them without an answer, samples) of a
        configuration."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(finish_reason = 'length'), 0), "
            "COALESCE(SUM(finish_reason = 'length' AND (key IS NULL OR key = '')), 0), COUNT(*) "
            "FROM samples WHERE config_id = ?",
            (config_id,),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # ------------------------------------------------------------------ export

    def table(self, name: str = "results") -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a table, ``results`` rows carrying their configuration's label."""
        if name == "results":
            cur = self.db.execute(
                "SELECT c.label, r.* FROM results r JOIN configs c USING (config_id) "
                "ORDER BY c.position, r.seed, r.position, r.problem_id"
            )
        elif name in ("samples", "configs", "runs", "meta"):
            cur = self.db.execute(f"SELECT * FROM {name}")
        else:
            raise ConfigError(f"table must be one of results, samples, configs, runs, meta, got {name!r}.")
        columns = [d[0] for d in cur.description]
        rows = [tuple(r) for r in cur.fetchall()]
        if "error" in columns:  # stores written before errors were redacted on the way in
            i = columns.index("error")
            rows = [(*r[:i], redact(r[i]) if r[i] else r[i], *r[i + 1 :]) for r in rows]
        return columns, rows

    def export_csv(self, path: str | Path, name: str = "results") -> Path:
        """Write a table as CSV; returns the path."""
        columns, rows = self.table(name)
        return write_csv(path, columns, rows)

    def dataframe(self, name: str = "results") -> Any:
        """A table as a pandas DataFrame (pandas is optional: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
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
