"""Studies on Ray: a local cluster (ray.init on this machine, 2 workers, fake oracle backend)
gives the same table as a local run; rows stream back to the one writer; a rerun resumes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tts.study import StudyRunner, load_study
from tts.study.store import TIMING_COLUMNS, Store

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray cluster starts in ~10 s


def _study(out: Path, limit: int = 40) -> Any:
    return load_study(
        data={
            "name": "ray",
            "dataset": {"name": "add2", "limit": limit},
            "backend": {"name": "fake", "oracle": {"p_correct": [0.3, 0.6, 0.9], "length": [10, 40]}},
            "pipelines": [
                {"label": "greedy", "strategy": {"name": "greedy"}},
                {"label": "sc", "strategy": {"name": "self_consistency", "n": 4}},
            ],
            "seeds": [0, 1],
            "report": False,
        },
        out=out,
    )


def _table(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with Store(path, readonly=True) as store:
        results = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in store.results()]
        return results, store.samples()


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_study_on_ray_gives_the_same_table_as_locally_and_resumes(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tts.study import executors

    start = time.perf_counter()
    local = StudyRunner(_study(tmp_path / "local")).run()
    assert local.ran == 160
    monkeypatch.setattr(executors, "SHARD_PROBLEMS", 10)  # units of 10 problems: the 2 workers take turns
    part = StudyRunner(_study(tmp_path / "ray", limit=25), executor="ray").run()  # an interrupted study, say
    assert (part.ran, part.skipped) == (100, 0)
    remote = StudyRunner(_study(tmp_path / "ray"), executor="ray", workers=2).run()
    assert (remote.ran, remote.skipped, remote.problems) == (60, 100, 160)  # resumed: nothing repeated
    assert _table(local.store) == _table(remote.store)
    with Store(remote.store, readonly=True) as store:
        runs = store.runs()
    assert sum(r["problems"] for r in runs) == 160 and len(runs) == 12 + 8  # one session row per unit
    assert time.perf_counter() - start < 60


def test_an_unknown_executor_is_refused_in_one_line(tmp_path: Path) -> None:
    from tts.errors import ConfigError

    with pytest.raises(ConfigError, match="--executor must be local or ray, got 'dask'"):
        StudyRunner(_study(tmp_path / "x"), executor="dask").run()
