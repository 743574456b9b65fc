"""Game of 24 with tree-of-thoughts BFS on a real engine (SmolLM2-135M-Instruct on CPU): the
paper's propose and value prompts, 10 puzzles (rows 901-910 of the ToT paper's game24.csv),
breadth 2, 4 proposals per state, value k=1, at most 64 tokens per thought (a propose call lists 4:
256 tokens), depth 4 (three steps, then the answer); answers checked by the Game24 rule (parsed,
never run).

Prints accuracy with a 95% bootstrap interval beside two trivial baselines (chance: a random
expression over the four numbers, estimated from 2000 per puzzle; a fixed one: ``a + b + c + d``),
tokens per problem, backend calls and wall time; last ``accuracy=<x>``. A 135M model solves few
puzzles; the number is what it is. Run under the engine lock:

    flock /tmp/h3/engine.lock python bench/game24_tot.py --engine hf
    flock /tmp/h3/engine.lock python bench/game24_tot.py --engine vllm
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "game24_901_1000.csv"


def strategy(breadth: int = 2, proposals: int = 4, thought_tokens: int = 64, depth: int = 4) -> Any:
    from tts.strategies.tree_of_thoughts import TreeOfThoughts

    return TreeOfThoughts(
        prompts="game24",
        generator="propose",
        evaluator="value",
        value_samples=1,
        breadth=breadth,
        samples=proposals,
        max_depth=depth,
        threshold=0.5,
        sampling={"temperature": 0.7, "max_tokens": thought_tokens},
        value_sampling={"temperature": 0.7, "max_tokens": thought_tokens},
        verifiers=[{"name": "game24"}],
    )


def backend(engine: str) -> Any:
    if engine == "hf":
        from tts.backends.hf import HFBackend

        return HFBackend(threads=2)
    from tts.backends.vllm import VLLMBackend

    return VLLMBackend(
        mode="offline",
        enforce_eager=True,
        dtype="bfloat16",
        kv_cache_memory_bytes=2 << 30,
        max_model_len=2048,
        seed=0,
    )


def solved(answer: str | None, numbers: list[int]) -> bool:
    from tts.verifiers.program import check_game24, extract_expression

    return check_game24(extract_expression(answer), numbers)[0]


def chance(numbers: list[int], rng: random.Random, draws: int = 2000) -> float:
    """Share of random expressions (random order, operators and bracketing) that make 24."""
    hits = 0
    for _ in range(draws):
        items = [str(n) for n in rng.sample(numbers, len(numbers))]
        while len(items) > 1:
            i = rng.randrange(len(items) - 1)
            items[i : i + 2] = [f"({items[i]} {rng.choice('+-*/')} {items[i + 1]})"]
        hits += solved(items[0], numbers)
    return hits / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--puzzles", type=int, default=10)
    args = parser.parse_args()

    from tts import load_dataset, run
    from tts.stats import bootstrap_ci
    from tts.verifiers.program import game24_numbers

    data = load_dataset(str(DATA), limit=args.puzzles)
    start = time.perf_counter()
    engine = backend(args.engine)
    print(f"engine {args.engine} ready in {time.perf_counter() - start:.1f}s", flush=True)
    try:
        t0 = time.perf_counter()
        report = run(strategy(), data.problems, engine, task=data.task, concurrency=args.puzzles)
        wall = time.perf_counter() - t0
    finally:
        getattr(engine, "shutdown", lambda: None)()
    rng = random.Random(0)
    hits, base_chance, base_fixed = [], [], []
    for r in report.results:
        numbers = game24_numbers(r.problem)
        hits.append(float(solved(r.answer, numbers)))
        base_chance.append(chance(numbers, rng))
        base_fixed.append(float(solved(" + ".join(map(str, numbers)), numbers)))
        print(f"{r.problem.question}: {r.status} answer={r.answer!r} nodes={r.meta.get('nodes')} ok={bool(hits[-1])}")
    acc, lo, hi = bootstrap_ci(hits)
    n, u = len(report.results), report.usage
    print(f"engine={args.engine} puzzles={n} wall_s={wall:.1f} failed={sum(not r.ok for r in report.results)}")
    print(f"accuracy={acc:.3f} [95% CI {lo:.3f}, {hi:.3f}]")
    print(f"baseline_chance={sum(base_chance) / n:.4f} baseline_fixed_sum={sum(base_fixed) / n:.3f}")
    print(
        f"tokens_per_problem: prompt={u.prompt_tokens / n:.0f} completion={u.completion_tokens / n:.0f} "
        f"calls={u.calls / n:.1f}"
    )
    print(f"accuracy={acc:.3f}")


if __name__ == "__main__":
    main()
