"""The SQLite results store: atomic writes per problem, resumable lookups, exports."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tts.errors import ConfigError
from tts.store import RESULT_COLUMNS, Store


def row(pid: str, seed: int = 0, correct: int | None = 1, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    base.update(config_id="c1", seed=seed, problem_id=pid, position=int(pid[1:]), answer="4", reference="4",
                correct=correct, timed_out=0, prompt_tokens=10, completion_tokens=20, calls=1, n_samples=2)
    base.update(kw)
    return base


def sample(pid: str, idx: int, key: str, correct: int) -> dict[str, Any]:
    return {"config_id": "c1", "seed": 0, "problem_id": pid, "idx": idx, "answer": key, "key": key,
            "correct": correct, "tokens": 5, "score": None, "logprob": None, "finish_reason": "stop"}


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
        assert cfg["budget"] == 2 and cfg["sweep"] == {"strategy.sampling.temperature": 0.7}
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
