"""The SQLite results store: atomic writes per problem, resumable lookups, exports."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tts.errors import ConfigError
from tts.study.analysis import compute_metrics
from tts.study.curves import curves
from tts.study.store import RESULT_COLUMNS, SAMPLE_COLUMNS, SCHEMA_VERSION, Store


def row(pid: str, seed: int = 0, correct: int | None = 1, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    base.update(
        config_id="c1",
        seed=seed,
        problem_id=pid,
        position=int(pid[1:]),
        answer="4",
        reference="4",
        correct=correct,
        timed_out=0,
        prompt_tokens=10,
        completion_tokens=20,
        calls=1,
        n_samples=2,
    )
    base.update(kw)
    return base


def sample(pid: str, idx: int, key: str, correct: int) -> dict[str, Any]:
    return {
        "config_id": "c1",
        "seed": 0,
        "problem_id": pid,
        "idx": idx,
        "answer": key,
        "key": key,
        "correct": correct,
        "tokens": 5,
        "score": None,
        "logprob": None,
        "finish_reason": "stop",
    }


def test_results_and_samples_round_trip_and_done_set(tmp_path: Path) -> None:
    with Store(tmp_path / "s" / "results.sqlite") as store:
        store.add_config("c1", "sc n=2", "sc", 0, 2, {"strategy.sampling.temperature": 0.7}, {"strategy": {"n": 2}})
        store.add_result(row("p0"), [sample("p0", 0, "4", 1), sample("p0", 1, "5", 0)])
        store.add_result(row("p1", correct=0), [sample("p1", 0, "3", 0)])
        store.add_result(row("p1", seed=1), [])
        assert store.done("c1", 0) == {"p0", "p1"} and store.done("c1", 1) == {"p1"} and store.done("c2", 0) == set()
        assert [r["problem_id"] for r in store.results("c1")] == ["p0", "p1", "p1"]
        assert [(s["idx"], s["key"]) for s in store.samples("c1")] == [(0, "4"), (1, "5"), (0, "3")]
        cfg = store.configs()[0]
        assert cfg["n_value"] == 2 and cfg["sweep"] == {"strategy.sampling.temperature": 0.7}
        # a resumed session may rename a configuration; its id and spec stay
        store.add_config("c1", "renamed", "sc", 3, 2, {}, {"other": 1})
        cfg = store.configs()[0]
        assert cfg["label"] == "renamed" and cfg["position"] == 3 and cfg["spec"] == {"strategy": {"n": 2}}
        store.set_meta("study", {"name": "x"})
        assert store.meta("study") == {"name": "x"} and store.meta("missing", 5) == 5
        assert store.count() == 3


def test_a_result_and_its_samples_are_written_together(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    store.add_config("c1", "x", "x", 0, None, {}, {})
    with pytest.raises(sqlite3.IntegrityError):  # a bad sample row aborts the whole problem
        store.add_result(row("p0"), [sample("p0", 0, "4", 1), {**sample("p0", 1, "4", 1), "idx": None}])
    assert store.count() == 0 and store.samples() == []
    store.add_result(row("p0"), [sample("p0", 0, "4", 1)])
    store.close()
    with Store(tmp_path / "r.sqlite", readonly=True) as again:  # another process reads what was committed
        assert again.done("c1", 0) == {"p0"}
        with pytest.raises(sqlite3.OperationalError):
            again.add_result(row("p1"))


def test_exports(tmp_path: Path) -> None:
    with Store(tmp_path / "r.sqlite") as store:
        store.add_config("c1", "greedy", "greedy", 0, None, {}, {})
        store.add_result(row("p0"))
        store.add_result(row("p1", correct=0))
        path = store.export_csv(tmp_path / "out" / "results.csv")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        assert [r["label"] for r in rows] == ["greedy", "greedy"] and [r["correct"] for r in rows] == ["1", "0"]
        with pytest.raises(ConfigError, match="table must be one of"):
            store.table("nope")
        pd = pytest.importorskip("pandas")
        frame = store.dataframe("results")
        assert isinstance(frame, pd.DataFrame) and frame["correct"].sum() == 1


def test_missing_store_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; run the study first"):
        Store(tmp_path / "none.sqlite", readonly=True)


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE configs (config_id TEXT PRIMARY KEY, label TEXT NOT NULL, pipeline TEXT NOT NULL,
    position INTEGER NOT NULL, budget TEXT, sweep TEXT NOT NULL, spec TEXT NOT NULL);
CREATE TABLE results (config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL,
    position INTEGER NOT NULL, answer TEXT, reference TEXT, correct INTEGER, error TEXT,
    timed_out INTEGER NOT NULL DEFAULT 0, latency REAL, prompt_tokens INTEGER, cached_prompt_tokens INTEGER,
    completion_tokens INTEGER, calls INTEGER, completions INTEGER, verifier_calls INTEGER, n_samples INTEGER,
    agreement REAL, distinct_answers INTEGER, readability REAL, final_text TEXT, finished_at REAL,
    PRIMARY KEY (config_id, seed, problem_id));
CREATE TABLE samples (config_id TEXT NOT NULL, seed INTEGER NOT NULL, problem_id TEXT NOT NULL, idx INTEGER NOT NULL,
    answer TEXT, key TEXT, correct INTEGER, tokens INTEGER, score REAL, logprob REAL, finish_reason TEXT,
    PRIMARY KEY (config_id, seed, problem_id, idx));
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, config_id TEXT NOT NULL, seed INTEGER NOT NULL,
    started REAL, wall REAL, problems INTEGER, peak_rss_kb INTEGER, kv_cache REAL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO configs VALUES ('c1', 'sc n=2', 'sc', 0, '2', '{}', '{}');
INSERT INTO results (config_id, seed, problem_id, position, answer, reference, correct, error, timed_out,
    prompt_tokens, cached_prompt_tokens, completion_tokens, calls, n_samples, distinct_answers)
    VALUES ('c1', 0, 'p0', 0, '4', '4', 1, NULL, 0, 10, 0, 20, 1, 2, 2),
           ('c1', 0, 'p1', 1, NULL, '4', 0, 'TimeoutError: late', 1, 10, 0, 0, 1, 0, 0);
INSERT INTO samples (config_id, seed, problem_id, idx, answer, key, correct, tokens, score, logprob)
    VALUES ('c1', 0, 'p0', 0, '4', '4', 1, 10, 0.9, NULL), ('c1', 0, 'p0', 1, '5', '5', 0, 10, 0.1, NULL);
"""


def test_a_store_of_schema_version_1_is_read_and_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    con.close()
    with Store(db, readonly=True) as old:  # read as it is
        assert old.configs()[0]["n_value"] == 2
        m = compute_metrics(old)[0]
        assert (m.n_value, m.failure_rate, m.timeout_rate, m.cost_usd) == (2, 0.0, 0.5, None)
        assert [c.method for c in curves(old, subsets=5)] == ["majority", "weighted", "best_of_n", "pass@k"]
    with Store(db) as store:  # opened for writing: upgraded in place, old rows kept
        store.add_result(row("p2", status="ok", cost=0.5), [{**sample("p2", 0, "4", 1), "passed": 1}])
        assert store.meta("schema_version") == SCHEMA_VERSION and store.configs()[0]["n_value"] == 2
        got = {r["problem_id"]: r for r in store.results("c1")}
        assert set(got) == {"p0", "p1", "p2"} and got["p2"]["cost"] == 0.5 and got["p0"]["status"] is None
        assert store.samples("c1")[-1]["passed"] == 1
    con = sqlite3.connect(db)
    assert {r[1] for r in con.execute("PRAGMA table_info(results)")} >= set(RESULT_COLUMNS)
    assert {r[1] for r in con.execute("PRAGMA table_info(samples)")} >= set(SAMPLE_COLUMNS)
    con.close()


# ------------------------------------------------------------------ damage and sharing (10.13)


def _filled_store(path: Path, problems: int = 400) -> Path:
    with Store(path) as store:
        store.add_config("c1", "sc n=2", "sc", 0, 2, {}, {})
        for i in range(problems):
            store.add_result(row(f"p{i}", final_text="x" * 2000), [sample(f"p{i}", 0, "4", 1)])
    assert path.stat().st_size > 512 * 1024
    return path


def _one_line_failure(args: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from tts.cli import app

    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.strip()


@pytest.mark.parametrize("damage", ["random-middle", "truncated", "garbage-header"])
def test_a_damaged_store_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    import os

    db = _filled_store(tmp_path / "out" / "results.sqlite")
    data = bytearray(db.read_bytes())
    if damage == "random-middle":  # 64 KB of random bytes written into the middle of the file
        middle = len(data) // 2
        data[middle : middle + 65536] = os.urandom(65536)
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[:100] = os.urandom(100)
    db.write_bytes(bytes(data))
    for readonly in (True, False):
        with pytest.raises(ConfigError, match=r"results\.sqlite is damaged \(.+\): move it aside and rerun the study"):
            Store(db, readonly=readonly)
        with pytest.raises(ConfigError) as err:
            Store(db, readonly=readonly)
        assert "\n" not in str(err.value) and len(str(err.value)) < 400
    code, output = _one_line_failure(["report", str(tmp_path / "out")])
    assert code == 2 and len(output.splitlines()) == 1 and "is damaged" in output and "--out" in output


def test_two_writers_on_one_folder_are_refused_naming_the_other(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tts.errors import TTSError

    db = tmp_path / "out" / "results.sqlite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tts.study.store import Store; s = Store(sys.argv[1]); print('ready', flush=True); "
            "time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(TTSError, match=rf"out is in use by pid {holder.pid} on .*; wait for it to finish") as err:
            Store(db)
        assert "\n" not in str(err.value)
        with Store(db, readonly=True) as reader:  # readers (reports) are not locked out
            assert reader.count() == 0
    finally:
        holder.kill()
        holder.wait()
    with Store(db) as store:  # the lock dies with its process
        store.add_config("c1", "a", "a", 0, None, {}, {})
    with Store(db), pytest.raises(TTSError, match="is in use by pid"):
        Store(db)  # and holds within one process too
    with Store(db):  # released on close
        pass


def test_error_texts_are_redacted_before_they_are_stored_or_exported(tmp_path: Path) -> None:
    from tts.secrets import register_secret

    register_secret("planted-key-5f2a9c")
    db = tmp_path / "results.sqlite"
    with Store(db) as store:
        store.add_config("c1", "sc", "sc", 0, None, {}, {})
        store.add_result(row("p0", status="failed", error="BackendError: 401 for key planted-key-5f2a9c"))
        assert store.results()[0]["error"] == "BackendError: 401 for key ***"
        store.export_csv(tmp_path / "results.csv")
    for path in (db, tmp_path / "results.csv"):
        assert b"planted-key-5f2a9c" not in path.read_bytes()
    con = sqlite3.connect(db)  # an older store that holds the key: exports still mask it
    con.execute("UPDATE results SET error = 'HTTP 401 planted-key-5f2a9c'")
    con.commit()
    con.close()
    with Store(db, readonly=True) as store:
        store.export_csv(tmp_path / "old.csv")
    assert "HTTP 401 ***" in (tmp_path / "old.csv").read_text()
