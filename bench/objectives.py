"""One workload per objective (tts.objectives), each run under all three policies on the fake
engine's virtual clock; each objective's policy should win its own metric on its own workload.

- latency workload: 24 interactive problems (self-consistency n=4) arriving at a fixed rate
  while 64 background problems (n=8) fill the engine; metric: the interactive problems' P95
  latency. The policy is the interactive run's: engine batches, and its run priority.
- throughput workload: 256 problems of n=8 submitted at once (offline); metric: completion tokens
  per virtual second.
- cost workload: 96 problems of n=8, 32 of them answered by an earlier run (the request cache
  holds them); metric: tokens spent.

Each row prints P95 problem latency, throughput and tokens spent. Last line
``objectives_won=<k>/3``.

    python bench/objectives.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from tts import FakeBackend, OracleModel, OracleSpec, SelfConsistency, arun
from tts.backends.fake import CostModel
from tts.cache import RequestCache
from tts.metrics import percentile
from tts.objectives import OBJECTIVES, Policy, policy
from tts.scheduler import Scheduler
from tts.strategies.self_consistency import SelfConsistencyOptions

C = 256
COST = CostModel(per_batch=0.05, decode_step=0.002, decode_per_seq=0.0001, max_concurrency=C)
FULL_STEP = COST.decode_step + COST.decode_per_seq * C
FIELDS = set(SelfConsistencyOptions.model_fields)


def oracle(prefix: str, k: int, model: OracleModel) -> list[Any]:
    return [model.add(f"{prefix}{i}", OracleSpec((0.45, 0.65, 0.85)[i % 3], length=(40, 160))) for i in range(k)]


def engine(pol: Policy, model: OracleModel, cache: Path | None = None) -> tuple[FakeBackend, Scheduler]:
    fake = FakeBackend(model, cost=COST, **pol.backend_options("fake", {}, FULL_STEP))
    return fake, Scheduler(fake, cache=RequestCache(cache) if cache is not None and pol.cache else None)


def sc(pol: Policy, n: int) -> SelfConsistency:
    return SelfConsistency(**pol.strategy_options({"n": n}, FIELDS))


async def wait_until(fake: FakeBackend, t: float) -> None:
    idle = 0
    while fake.clock() < t:
        before = fake.clock()
        await asyncio.sleep(0)
        idle = idle + 1 if fake.clock() == before else 0
        if idle > 200:  # the engine is idle: time moves on by itself
            fake.clock.advance(t - fake.clock())


def figures(fake: FakeBackend, results: list[Any]) -> tuple[float, float, int]:
    return (
        percentile([r.latency for r in results], 95),
        fake.completion_tokens / fake.clock(),
        sum(r.usage.spent_tokens for r in results),
    )


async def latency_workload(pol: Policy, _: Path) -> tuple[float, float, int]:
    model = OracleModel()
    background, interactive = oracle("b", 64, model), oracle("i", 24, model)
    fake, scheduler = engine(pol, model)
    batch = asyncio.ensure_future(arun(sc(policy("throughput"), 8), background, scheduler, concurrency=64))
    mine: list[Any] = []

    async def arrive(i: int) -> None:
        arrival = 0.5 * i
        await wait_until(fake, arrival)
        late = fake.clock() - arrival  # the clock moves by whole engine batches: count the wait
        report = await arun(sc(pol, 4), [interactive[i]], scheduler, priority=pol.priority)
        for r in report.results:
            r.latency += late
        mine.extend(report.results)

    await asyncio.gather(*(arrive(i) for i in range(len(interactive))))
    await batch
    return figures(fake, mine)


async def throughput_workload(pol: Policy, _: Path) -> tuple[float, float, int]:
    model = OracleModel()
    problems = oracle("t", 256, model)
    fake, scheduler = engine(pol, model)
    report = await arun(sc(pol, 8), problems, scheduler, concurrency=256, priority=pol.priority)
    return figures(fake, report.results)


async def cost_workload(pol: Policy, cache: Path) -> tuple[float, float, int]:
    model = OracleModel()
    problems = oracle("c", 96, model)
    fake, scheduler = engine(pol, model, cache)
    report = await arun(sc(pol, 8), problems, scheduler, concurrency=96, seed=0, seed_requests=True)
    return figures(fake, report.results)


async def warm(cache: Path) -> None:
    """An earlier run answered 32 of the cost workload's problems, under every policy's strategy."""
    for objective in OBJECTIVES:
        pol = policy(objective)
        model = OracleModel()
        problems = oracle("c", 96, model)[:32]
        scheduler = Scheduler(FakeBackend(model, cost=COST), cache=RequestCache(cache))
        await arun(sc(pol, 8), problems, scheduler, concurrency=32, seed=0, seed_requests=True)


WORKLOADS = {
    "latency": (latency_workload, 0, min),
    "throughput": (throughput_workload, 1, max),
    "cost": (cost_workload, 2, min),
}


def main() -> None:
    start = time.perf_counter()
    won = 0
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "requests.sqlite"
        asyncio.run(warm(cache))
        print(f"{'workload':<11} {'policy':<11} {'p95_latency_s':>13} {'tokens_per_s':>12} {'tokens_spent':>12}")
        for name, (workload, metric, best) in WORKLOADS.items():
            rows = {o: asyncio.run(workload(policy(o), cache)) for o in OBJECTIVES}
            for o, (p95, tput, tokens) in rows.items():
                print(f"{name:<11} {o:<11} {p95:>13.3f} {tput:>12.0f} {tokens:>12d}")
            winner = best(rows, key=lambda o: rows[o][metric])
            tie = sum(rows[o][metric] == rows[winner][metric] for o in rows) > 1
            won += winner == name and not tie
            print(f"{name} workload: best policy on its metric = {winner}{' (tie)' if tie else ''}")
    print(f"seconds={time.perf_counter() - start:.2f}")
    print(f"objectives_won={won}/3")


if __name__ == "__main__":
    main()
