"""Dynamic batch size under a tail-latency cap, on the fake engine's virtual clock.

A decode step of a batch of B sequences costs ``decode_step + decode_per_seq x B`` (the fake's
CostModel). 512 problems x self-consistency n=8 run with a fixed batch of the largest size
(C=256 sequences) and with the dynamic batch size (``step_time_cap``: the same controller the
``hf`` backend uses), capped at 50% of the fixed batch's P95 step time. Prints P95 step time
over the cap (target at most 1.0) and last ``throughput_ratio=<dynamic/fixed>`` completion tokens
per virtual second (target at least 0.8).

    python bench/dynamic_batch.py
"""

from __future__ import annotations

import time

from tts import FakeBackend, OracleModel, OracleSpec, SelfConsistency, run
from tts.backends.fake import CostModel
from tts.metrics import percentile

PROBLEMS, N, C = 512, 8, 256
COST = CostModel(decode_step=0.002, decode_per_seq=0.0001, max_concurrency=C)


def measure(cap: float | None) -> tuple[float, float, list[int]]:
    """(P95 seconds per decode step, completion tokens per virtual second, sizes) of one run."""
    model = OracleModel()
    problems = [model.add(f"p{i}", OracleSpec(0.6, length=(40, 160))) for i in range(PROBLEMS)]
    fake = FakeBackend(model, cost=COST, step_time_cap=cap)
    report = run(SelfConsistency(n=N), problems, fake, concurrency=PROBLEMS)
    steps = [step for _, count, step in fake.waves for _ in range(count)]
    sizes = fake.dynamic.history if fake.dynamic is not None else []
    return percentile(steps, 95), report.usage.completion_tokens / fake.clock(), sizes


def main() -> None:
    start = time.perf_counter()
    fixed_p95, fixed_tput, _ = measure(None)
    cap = 0.5 * fixed_p95
    dyn_p95, dyn_tput, sizes = measure(cap)
    print(f"workload: {PROBLEMS} problems x n={N}; step = {COST.decode_step} + {COST.decode_per_seq} x batch")
    print(f"fixed batch {C}: p95_step={fixed_p95 * 1000:.2f} ms throughput={fixed_tput:.0f} tokens/s")
    print(f"dynamic (cap {cap * 1000:.2f} ms): p95_step={dyn_p95 * 1000:.2f} ms throughput={dyn_tput:.0f} tokens/s")
    print(f"dynamic sizes: first={sizes[:6]} last={sizes[-1]} min={min(sizes)} max={max(sizes)} waves={len(sizes)}")
    print(f"seconds={time.perf_counter() - start:.2f}")
    print(f"p95_over_cap={dyn_p95 / cap:.3f}")
    print(f"throughput_ratio={dyn_tput / fixed_tput:.3f}")


if __name__ == "__main__":
    main()
