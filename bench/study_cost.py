"""What a scaling curve costs: accuracy for every n = 1..32 over 50 problems from one generation pass.

A study on the fake oracle backend samples 32 completions per problem once; the curves for every
smaller n come from subsampling those samples (tts.study.curves). The fake backend counts the
completions it generated; needed is 32 x 50. Target: generated_over_needed=1.0 (a curve that ran
each n separately would cost sum(1..32)/32 = 16.5x).

    python bench/study_cost.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tts.study import StudyRunner, load_study
from tts.study.curves import curves
from tts.study.store import Store

PROBLEMS, N = 50, 32


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        study = load_study(
            data={
                "name": "study-cost",
                "dataset": {"name": "add2", "limit": PROBLEMS},
                "backend": {"name": "fake", "oracle": {"p_correct": [0.3, 0.5, 0.7, 0.9], "length": [40, 120]}},
                "pipelines": [{"label": "sc", "strategy": {"name": "self_consistency", "weight": "mean_logprob"}}],
                "n_values": [N],
                "report": False,
            },
            out=Path(tmp) / "out",
        )
        runner = StudyRunner(study)
        runner.run()
        with Store(study.store_path, readonly=True) as store:
            found = {c.method: c for c in curves(store, subsets=200)}
        generated = sum(b.completions_generated for b in runner.backends)
    majority = found["majority"]
    assert majority.n == list(range(1, N + 1)), majority.n
    elapsed = time.perf_counter() - start
    print(f"problems={PROBLEMS} n_max={N} curve_points={len(majority.n)} methods={','.join(sorted(found))}")
    for n in (1, 2, 4, 8, 16, 32):
        j = n - 1
        accs = " ".join(f"{m}={found[m].accuracy[j]:.3f}" for m in ("majority", "weighted", "best_of_n", "pass@k"))
        print(f"n={n:2d} {accs} tokens/problem={majority.tokens[j]:.0f}")
    print(f"seconds={elapsed:.2f}")
    print(f"generated={generated} needed={N * PROBLEMS}")
    print(f"generated_over_needed={generated / (N * PROBLEMS):.3f}")


if __name__ == "__main__":
    main()
