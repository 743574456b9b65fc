"""Weighted fair share: two tenants with weights 1:3 saturating one engine.

Tenant ``a`` (weight 1) runs 300 problems of self-consistency n=4 with long chains (100-200
tokens); tenant ``b`` (weight 3) runs 300 problems of n=8 with short ones (20-60 tokens). Both
submit everything at once to one scheduler over one fake engine (64 sequences a step); the
scheduler's :class:`tts.fair.FairShare` keeps 64 sequences in the engine and releases by decode
tokens over weight. Share = each tenant's decode tokens over the window in which both still had
work queued (until the first tenant's last answer). Prints the shares with and without the fair
share; last ``share_error=<max relative deviation from 0.25/0.75>`` (target at most 0.1).

    python bench/fairness.py
"""

from __future__ import annotations

import asyncio
import time

from tts import FakeBackend, OracleModel, OracleSpec, SelfConsistency, arun
from tts.backends.fake import CostModel
from tts.fair import FairShare
from tts.runner import Report
from tts.scheduler import Scheduler

PROBLEMS, C = 300, 64
WEIGHTS = {"a": 1.0, "b": 3.0}
COST = CostModel(per_batch=0.01, decode_step=0.005, decode_per_seq=0.0001, max_concurrency=C)


def shares(reports: dict[str, Report]) -> tuple[dict[str, float], float]:
    """Decode-token shares over the window where both tenants had work left, and the window's end."""
    events = {t: [e for r in rep.results for e in r.trace.events if e.kind == "generate"] for t, rep in reports.items()}
    end = min(max(e.end for e in evs) for evs in events.values())
    tokens = {t: sum(c.token_count for e in evs if e.end <= end for c in e.completions) for t, evs in events.items()}
    total = sum(tokens.values())
    return {t: v / total for t, v in tokens.items()}, end


async def scenario(fair: bool) -> tuple[dict[str, float], float]:
    model = OracleModel()
    a = [model.add(f"a{i}", OracleSpec(0.6, length=(100, 200))) for i in range(PROBLEMS)]
    b = [model.add(f"b{i}", OracleSpec(0.6, length=(20, 60))) for i in range(PROBLEMS)]
    fake = FakeBackend(model, cost=COST)
    scheduler = Scheduler(fake, fair=FairShare(WEIGHTS, capacity=C) if fair else None)
    ra, rb = await asyncio.gather(
        arun(SelfConsistency(n=4), a, scheduler, concurrency=PROBLEMS, tenant="a"),
        arun(SelfConsistency(n=8), b, scheduler, concurrency=PROBLEMS, tenant="b"),
    )
    return shares({"a": ra, "b": rb})


def main() -> None:
    start = time.perf_counter()
    target = {t: w / sum(WEIGHTS.values()) for t, w in WEIGHTS.items()}
    plain, end_plain = asyncio.run(scenario(False))
    fair, end_fair = asyncio.run(scenario(True))
    error = max(abs(fair[t] - target[t]) / target[t] for t in target)
    plain_error = max(abs(plain[t] - target[t]) / target[t] for t in target)
    print(f"tenants: a weight 1 (n=4, 100-200 tokens), b weight 3 (n=8, 20-60 tokens); {PROBLEMS} problems each")
    print(f"without fair share: a={plain['a']:.3f} b={plain['b']:.3f} window={end_plain:.2f} s error={plain_error:.3f}")
    print(f"with fair share:    a={fair['a']:.3f} b={fair['b']:.3f} window={end_fair:.2f} s")
    print(f"seconds={time.perf_counter() - start:.2f}")
    print(f"share_error={error:.3f}")


if __name__ == "__main__":
    main()
