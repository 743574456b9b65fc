"""Priorities end to end: interactive requests beside a batch workload on one engine.

64 problems x self-consistency n=8 (one batch run, 512 samples) share one fake engine with 56
interactive greedy requests (about 10% of the samples) arriving at a fixed rate on the virtual
clock, all through ``tts.arun`` on one scheduler. The engine decodes C=32 sequences a step and
takes at most 4 requests (32 samples) per engine batch, so queued work waits. Without
priorities both runs submit at priority 0 (served in arrival order); with them the interactive
run submits at 0 and the batch run at 1 (``arun(priority=...)``), so the engine serves an
interactive request in its next batch. Prints the interactive requests' P50/P95 latency and the
batch run's makespan both ways; last ``p95_ratio=<with/without>`` (target at most 0.5).

    python bench/priority.py
"""

from __future__ import annotations

import asyncio
import time

from tts import FakeBackend, Greedy, OracleModel, OracleSpec, SelfConsistency, arun
from tts.backends.fake import CostModel
from tts.metrics import latency_stats
from tts.scheduler import Scheduler

PROBLEMS, N, C, INTERACTIVE = 64, 8, 32, 56
COST = CostModel(per_batch=0.02, prefill_per_token=0.0001, decode_step=0.01, max_concurrency=C)


def backend() -> tuple[FakeBackend, list, list]:
    model = OracleModel()
    batch = [model.add(f"b{i}", OracleSpec(0.6, length=(60, 120))) for i in range(PROBLEMS)]
    inter = [model.add(f"i{i}", OracleSpec(0.8, length=(20, 40))) for i in range(INTERACTIVE)]
    return FakeBackend(model, cost=COST, max_batch=4), batch, inter


async def wait_until(fake: FakeBackend, t: float) -> None:
    """Sleep on the virtual clock: yield while the engine runs; when it has gone idle, move time on."""
    idle = 0
    while fake.clock() < t:
        before = fake.clock()
        await asyncio.sleep(0)
        idle = idle + 1 if fake.clock() == before else 0
        if idle > 200:  # nothing runs: the clock only moves by itself now
            fake.clock.advance(t - fake.clock())


async def scenario(priorities: bool, span: float | None) -> tuple[list[float], float, float]:
    fake, batch, inter = backend()
    scheduler = Scheduler(fake)
    batch_run = asyncio.ensure_future(
        arun(SelfConsistency(n=N), batch, scheduler, concurrency=PROBLEMS, priority=1 if priorities else 0)
    )
    latencies: list[float] = []

    async def interactive(i: int) -> None:
        assert span is not None
        arrival = span * (i + 0.5) / INTERACTIVE
        await wait_until(fake, arrival)
        late = fake.clock() - arrival  # the clock moves by whole engine batches: count the wait
        report = await arun(Greedy(), [inter[i]], scheduler, priority=0)
        latencies.extend(r.latency + late for r in report.results)

    if span is not None:
        await asyncio.gather(*(interactive(i) for i in range(INTERACTIVE)))
    report = await batch_run
    return latencies, report.wall_time, fake.clock()


def main() -> None:
    start = time.perf_counter()
    _, makespan_alone, _ = asyncio.run(scenario(False, None))
    span = 0.9 * makespan_alone  # arrivals at a fixed rate over the batch run
    without, makespan_without, _ = asyncio.run(scenario(False, span))
    with_, makespan_with, _ = asyncio.run(scenario(True, span))
    a, b = latency_stats(without), latency_stats(with_)
    print(f"batch: {PROBLEMS} problems x n={N}; interactive: {INTERACTIVE} greedy requests over {span:.2f} s")
    print(f"batch makespan alone={makespan_alone:.2f} s without={makespan_without:.2f} s with={makespan_with:.2f} s")
    print(f"interactive latency without priorities: p50={a.p50:.3f} p95={a.p95:.3f} max={a.max:.3f} (n={a.count})")
    print(f"interactive latency with priorities:    p50={b.p50:.3f} p95={b.p95:.3f} max={b.max:.3f} (n={b.count})")
    print(f"seconds={time.perf_counter() - start:.2f}")
    print(f"p95_ratio={b.p95 / a.p95:.3f}")


if __name__ == "__main__":
    main()
