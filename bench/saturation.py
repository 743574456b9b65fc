"""Does tree search keep the engine saturated? Tree-of-thoughts BFS over 64 problems on the fake
backend's virtual clock, against what an oracle scheduler would need.

Workload (the issue's): BFS with breadth 5, generator ``propose`` (one sequence listing 5 proposals,
32 tokens each: 160 tokens), evaluator ``value`` with k=3 (8-token replies), depth 3, 64 problems
through ``tts.run`` and the scheduler; engine ``CostModel(prefill_per_token=0.001, decode_step=1.0,
max_concurrency=256, per_batch=0)`` with the fake backend's prefix cache.

The ideal is what an oracle scheduler needs: over every generation and evaluation phase,
``ceil(sequences in the phase / C) x decode steps of the phase``, plus the prefill of the prompt
tokens not already cached (every distinct prompt sent once, in phase order, through the fake
backend's cache model). Solving one problem at a time is about 64x the ideal.

Prints the ideal, the measured virtual time and, last, ``ratio=<measured / ideal>`` (target <= 1.15).

    python bench/saturation.py
"""

from __future__ import annotations

import math
import random
from typing import Any

from tts import FakeBackend, Problem, run
from tts.backends.fake import CostModel
from tts.strategies.tree_of_thoughts import TreeOfThoughts
from tts.types import Request

PROBLEMS, BREADTH, PROPOSALS, K, DEPTH = 64, 5, 5, 3, 3
THOUGHT, VALUE = 32, 8
COST = CostModel(prefill_per_token=0.001, decode_step=1.0, max_concurrency=256, per_batch=0)
WORDS = ["add", "subtract", "multiply", "divide", "carry", "borrow", "halve", "double", "square", "compare"]


class Thinker:
    """Five distinct 32-token proposals per propose call; an 8-token sure/likely/impossible verdict."""

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        if "Propose" in prompt:
            lines = [f"{rng.choice(WORDS)} {rng.randrange(10**6)}" for _ in range(PROPOSALS)]
            return "\n".join(lines), THOUGHT * PROPOSALS, None
        return rng.choice(("sure", "likely", "impossible")), VALUE, None


def strategy() -> TreeOfThoughts:
    return TreeOfThoughts(
        generator="propose",
        evaluator="value",
        value_samples=K,
        breadth=BREADTH,
        samples=PROPOSALS,
        max_depth=DEPTH,
        sampling={"temperature": 0.7, "max_tokens": THOUGHT},
        value_sampling={"temperature": 0.7, "max_tokens": VALUE},
    )


def ideal(results: list[Any], block_size: int) -> tuple[float, float]:
    """Decode and prefill seconds an oracle scheduler needs for the requests these results made."""
    phases: dict[tuple[int, int], list[tuple[int, str]]] = {}  # (depth, 0 gen / 1 eval) -> (tokens, prompt)
    for r in results:
        for e in r.trace.events:
            if e.kind != "generate" or not e.completions:
                continue
            tokens = max(c.token_count for c in e.completions)
            phase = (-e.request.priority, 0 if "Propose" in e.completions[0].prompt_text else 1)
            phases.setdefault(phase, []).extend((tokens, e.completions[0].prompt_text) for _ in e.completions)
    decode = sum(math.ceil(len(seqs) / COST.max_concurrency) * max(t for t, _ in seqs) for seqs in phases.values())
    cache = FakeBackend(prefix_cache=True, block_size=block_size)
    prefill = 0
    for key in sorted(phases):
        for prompt in dict.fromkeys(p for _, p in phases[key]):
            words = prompt.split()
            prefill += len(words) - cache._cached_tokens(words)
    return decode * COST.decode_step, prefill * COST.prefill_per_token


def main() -> float:
    backend = FakeBackend(Thinker(), cost=COST, prefix_cache=True)
    problems = [Problem(f"s{i}", f"Problem {i}: reach the goal from state {i * 7919 % 1000}.") for i in range(PROBLEMS)]
    report = run(strategy(), problems, backend, concurrency=PROBLEMS)
    assert all(r.error is None for r in report.results), report.results[0].error
    decode, prefill = ideal(report.results, backend.block_size)
    measured = backend.clock()
    print(f"problems={PROBLEMS} engine_batches={backend.calls} requests={backend.requests}")
    print(f"ideal_decode={decode:.1f} ideal_prefill={prefill:.3f} ideal={decode + prefill:.3f}")
    print(f"measured={measured:.3f}")
    one = FakeBackend(Thinker(), cost=COST, prefix_cache=True)
    run(strategy(), problems, one, concurrency=1)
    print(f"one_problem_at_a_time={one.clock():.3f} ({one.clock() / (decode + prefill):.1f}x the ideal)")
    ratio = measured / (decode + prefill)
    print(f"ratio={ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
