"""The request cache across runs: a seeded study run twice, the second time into a fresh --out.

The second run recomputes every problem (nothing is stored in its --out), but every engine
request is answered from the SQLite request cache (tts.cache), so the fake engine generates
nothing. Targets: generated_tokens=0 and hit_rate >= 0.99 on the second run; the two stores hold
the same table (answers, samples, original token counts).

    python bench/cache.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tts.study import StudyRunner, load_study
from tts.study.store import TIMING_COLUMNS, Store

PROBLEMS, N = 64, 8


def run(tmp: Path, out: str) -> tuple[StudyRunner, list[dict[str, Any]], list[dict[str, Any]]]:
    study = load_study(
        data={
            "name": "cache",
            "dataset": {"name": "add2", "limit": PROBLEMS},
            "backend": {"name": "fake", "oracle": {"p_correct": [0.3, 0.5, 0.7, 0.9], "length": [40, 120]}},
            "run": {"cache": {"path": str(tmp / "requests.sqlite")}},
            "pipelines": [
                {"label": "greedy", "strategy": {"name": "greedy"}},
                {"label": "sc", "strategy": {"name": "self_consistency"}},
            ],
            "n_values": [N],
            "report": False,
        },
        out=tmp / out,
    )
    runner = StudyRunner(study)
    runner.run()
    with Store(study.store_path, readonly=True) as store:
        results, samples = store.results(), store.samples()
    return runner, results, samples


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        first, results1, samples1 = run(tmp, "first")
        second, results2, samples2 = run(tmp, "second")
        (cache1,) = first._caches.values()
        (cache2,) = second._caches.values()
        generated1 = sum(b.completion_tokens for b in first.backends)
        generated2 = sum(b.completion_tokens for b in second.backends)
        entries = len(cache2)
    drop = {*TIMING_COLUMNS, "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "calls", "cache_hits"}
    same = [{k: v for k, v in r.items() if k not in drop} for r in results1] == [
        {k: v for k, v in r.items() if k not in drop} for r in results2
    ] and samples1 == samples2
    tokens1 = sum(s["tokens"] or 0 for s in samples1)
    tokens2 = sum(s["tokens"] or 0 for s in samples2)
    print(f"problems={PROBLEMS} configs=2 n={N} cache_entries={entries}")
    print(f"first: generated_tokens={generated1} lookups={cache1.stats.lookups} hits={cache1.stats.hits}")
    print(f"second: lookups={cache2.stats.lookups} hits={cache2.stats.hits} stores={cache2.stats.stores}")
    print(f"same_table={same} original_sample_tokens first={tokens1} second={tokens2}")
    print(f"seconds={time.perf_counter() - start:.2f}")
    print(f"generated_tokens={generated2}")
    print(f"hit_rate={cache2.stats.hit_rate:.3f}")


if __name__ == "__main__":
    main()
