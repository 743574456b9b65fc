"""Orchestration overhead: 64 problems x self-consistency n=8 on a zero-cost fake backend.

Prints the CPU time tts-scale spends per completion (scheduler, context, parsing, voting, traces,
results), median of several rounds after a warm-up. Target: at most 50 microseconds.

    python bench/overhead.py
"""

from __future__ import annotations

import statistics
import time

from tts import FakeBackend, OracleModel, OracleSpec, SelfConsistency, run

PROBLEMS, N, ROUNDS = 64, 8, 7


def one_round() -> float:
    model = OracleModel()
    problems = [model.add(f"p{i}", OracleSpec(p_correct=0.6)) for i in range(PROBLEMS)]
    backend = FakeBackend(model)
    strategy = SelfConsistency(n=N)
    start = time.process_time()
    report = run(strategy, problems, backend, concurrency=PROBLEMS)
    elapsed = time.process_time() - start
    assert backend.completions_generated == PROBLEMS * N and len(report.results) == PROBLEMS
    return elapsed / (PROBLEMS * N)


def main() -> None:
    one_round()  # warm-up: imports, caches
    per = [one_round() for _ in range(ROUNDS)]
    print(f"problems={PROBLEMS} n={N} rounds={ROUNDS}")
    print(f"us_per_completion_min={min(per) * 1e6:.1f}")
    print(f"us_per_completion={statistics.median(per) * 1e6:.1f}")


if __name__ == "__main__":
    main()
