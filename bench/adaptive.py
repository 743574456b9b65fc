"""Adaptive self-consistency (``stop: auto``) against fixed n=32, and online allocation against
uniform n, on simulated problems (fake oracle backend).

Mixes (2000 problems each, fixed by a seed):

- the oracle mix: 40% of problems with per-sample accuracy p uniform in [0.8, 0.95], 40% in
  [0.5, 0.8], 20% in [0.1, 0.4]; wrong answers uniform over 4 alternatives;
- the high-entropy mix: p uniform in [0.2, 0.5]; wrong answers uniform over 10 alternatives.

Streams are paired: sample k of a problem is the same draw whichever run asks for it (each
problem's samples are seeded by its id and index, :class:`PairedOracle`), so adaptive runs see a
prefix of the fixed run's samples. Samples are what the fake backend generated (its counter), not
what was requested; cancelled look-ahead that was generated counts.

Allocation: uniform self-consistency with n=8 against ``budget: 8`` (pilot 4, the rest of the
run's samples where the vote's posterior says they change the most answers, at most 32 per
problem) on the oracle mix: ``allocation_gain`` is the accuracy difference at (at most) equal
total samples.

Targets: oracle mix ``sample_fraction <= 0.30`` with ``accuracy_ratio >= 0.99``; high-entropy mix
fraction <= 0.6 with accuracy ratio >= 0.99; ``allocation_gain >= 0``; under 50 s (CPU time of
this process, printed with the wall time: the machine may be shared). The last lines
printed are ``high_entropy_fraction``, ``high_entropy_accuracy_ratio``, ``allocation_gain``,
``sample_fraction`` and ``accuracy_ratio``.

    python bench/adaptive.py
"""

from __future__ import annotations

import random
import time
from typing import Any

from tts import FakeBackend, OracleModel, OracleSpec, Problem, SelfConsistency, Task, run
from tts.types import Request

PROBLEMS, N_MAX, UNIFORM = 2000, 32, 8
TASK = Task(answer_format="text")  # "The answer is 42." -> "42"
ADAPTIVE: dict[str, Any] = {"n": N_MAX, "stop": "auto"}
ALLOCATED: dict[str, Any] = {"n": N_MAX, "budget": UNIFORM, "pilot": 4, "window": 1}
ORACLE_MIX = ((0.4, 0.8, 0.95), (0.4, 0.5, 0.8), (0.2, 0.1, 0.4))
HIGH_ENTROPY_MIX = ((1.0, 0.2, 0.5),)


class PairedOracle(OracleModel):
    """The oracle with one stream per problem: its k-th sample is drawn from a generator seeded by
    the problem and k, whatever request asks for it."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.served: dict[str, int] = {}

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        k = self.served.get(prompt, 0)
        self.served[prompt] = k + 1
        return super().reply(request, prompt, index, random.Random(f"{self.seed}|{prompt}|{k}"))


def mix(
    count: int, seed: int = 0, shares: tuple[tuple[float, float, float], ...] = ORACLE_MIX, wrong: int = 4
) -> tuple[list[OracleSpec], list[str]]:
    """The specs of a mix (see module docstring), deterministic for a seed, and their ids."""
    rng = random.Random(seed)
    specs, edge, i = [], 0.0, 0
    answers = tuple(str(100 + j) for j in range(wrong))
    for share, lo, hi in shares:
        edge += share
        while i < round(edge * count):
            specs.append(OracleSpec(p_correct=rng.uniform(lo, hi), wrong=answers, length=(32, 32)))
            i += 1
    return specs, [f"m{j}" for j in range(count)]


def _run(options: dict[str, Any], specs: list[OracleSpec], ids: list[str], seed: int) -> tuple[float, int, int]:
    model = PairedOracle(seed=seed)
    problems: list[Problem] = [model.add(pid, spec) for pid, spec in zip(ids, specs, strict=True)]
    backend = FakeBackend(model)
    report = run(SelfConsistency(**options), problems, backend, task=TASK, concurrency=len(problems))
    assert report.accuracy is not None and report.usage.completions == backend.completions_generated
    return report.accuracy, backend.completions_generated, backend.requests


def compare(
    count: int = PROBLEMS,
    seed: int = 0,
    shares: tuple[tuple[float, float, float], ...] = ORACLE_MIX,
    wrong: int = 4,
    adaptive: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Accuracy and samples of fixed n=32 and ``adaptive`` (default ``stop: auto``) on one mix."""
    specs, ids = mix(count, seed, shares, wrong)
    out: dict[str, float] = {}
    for label, options in (("fixed", {"n": N_MAX}), ("adaptive", adaptive or ADAPTIVE)):
        acc, samples, requests = _run(options, specs, ids, seed)
        out[f"{label}_accuracy"], out[f"{label}_samples"], out[f"{label}_requests"] = acc, samples, requests
    out["sample_fraction"] = out["adaptive_samples"] / out["fixed_samples"]
    out["accuracy_ratio"] = out["adaptive_accuracy"] / out["fixed_accuracy"]
    return out


def allocation(count: int = PROBLEMS, seed: int = 0) -> dict[str, float]:
    """Uniform n=8 against online allocation with the same budget, on the oracle mix."""
    specs, ids = mix(count, seed)
    u_acc, u_samples, _ = _run({"n": UNIFORM}, specs, ids, seed)
    a_acc, a_samples, a_requests = _run(ALLOCATED, specs, ids, seed)
    assert a_samples <= u_samples, (a_samples, u_samples)
    return {
        "uniform_accuracy": u_acc,
        "uniform_samples": u_samples,
        "allocated_accuracy": a_acc,
        "allocated_samples": a_samples,
        "allocated_requests": a_requests,
        "allocation_gain": a_acc - u_acc,
    }


def main() -> None:
    start, cpu = time.perf_counter(), time.process_time()
    r = compare()
    h = compare(shares=HIGH_ENTROPY_MIX, wrong=10)
    a = allocation()
    print(f"problems={PROBLEMS} n_max={N_MAX} adaptive={ADAPTIVE} allocated={ALLOCATED}")
    for name, x in (("oracle", r), ("high_entropy", h)):
        print(
            f"{name}: fixed_accuracy={x['fixed_accuracy']:.4f} fixed_samples={x['fixed_samples']:.0f} "
            f"adaptive_accuracy={x['adaptive_accuracy']:.4f} adaptive_samples={x['adaptive_samples']:.0f} "
            f"adaptive_requests={x['adaptive_requests']:.0f}"
        )
    print(
        f"allocation: uniform_accuracy={a['uniform_accuracy']:.4f} uniform_samples={a['uniform_samples']:.0f} "
        f"allocated_accuracy={a['allocated_accuracy']:.4f} allocated_samples={a['allocated_samples']:.0f}"
    )
    print(f"wall_seconds={time.perf_counter() - start:.1f} cpu_seconds={time.process_time() - cpu:.1f}")
    print(f"high_entropy_fraction={h['sample_fraction']:.4f}")
    print(f"high_entropy_accuracy_ratio={h['accuracy_ratio']:.4f}")
    print(f"allocation_gain={a['allocation_gain']:+.4f}")
    print(f"sample_fraction={r['sample_fraction']:.4f}")
    print(f"accuracy_ratio={r['accuracy_ratio']:.4f}")


if __name__ == "__main__":
    main()
