"""Prefix reuse of tree search on the real vLLM engine: how many of the prompt tokens a search
submits the engine actually computes, with automatic prefix caching on.

Workload: the saturation bench's BFS made smaller (16 puzzles, rows 901-916 of game24.csv, depth 2,
breadth 5, ``propose`` with 5 proposals of at most 32 tokens, ``value`` with k=3, 8-token
verdicts), with the shipped Game of 24 prompts unchanged, on vLLM CPU (SmolLM2-135M-Instruct,
enforce_eager, prefix caching on, block size 32 (the CPU backend's unit), the cache reset first).

Figures, from the engine's own counters:

- ``computed_over_submitted``: prompt tokens the engine computed over those submitted, from
  vLLM's ``prefix_cache_queries`` / ``prefix_cache_hits`` counters (``LLM.get_metrics``), deltas
  over the run (target <= 0.3);
- ``sibling_computed_over_submitted``: the same counting only tokens after each problem's root
  prompt: per request, the tokens past its longest common token prefix with the problem's first
  request, computed (prompt minus the engine's ``num_cached_tokens`` for that request) over
  submitted; the first request of each problem is left out (target <= 0.5).

Run under the engine lock:

    flock /tmp/h3/engine.lock python bench/prefix_reuse.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "game24_901_1000.csv"


def counters(llm: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in llm.get_metrics():
        if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens"):
            out[m.name] = out.get(m.name, 0.0) + float(getattr(m, "value", 0.0))
    return out


def common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puzzles", type=int, default=16)
    args = parser.parse_args()

    from tts import load_dataset, run
    from tts.backends.vllm import VLLMBackend
    from tts.strategies.tree_of_thoughts import TreeOfThoughts

    strategy = TreeOfThoughts(
        prompts="game24",
        generator="propose",
        evaluator="value",
        value_samples=3,
        breadth=5,
        samples=5,
        max_depth=2,
        sampling={"temperature": 0.7, "max_tokens": 32},
        value_sampling={"temperature": 0.7, "max_tokens": 8},
    )
    data = load_dataset(str(DATA), limit=args.puzzles)
    t0 = time.perf_counter()
    engine = VLLMBackend(
        mode="offline",
        enforce_eager=True,
        dtype="bfloat16",
        kv_cache_memory_bytes=2 << 30,
        max_model_len=2048,
        block_size=32,
        enable_prefix_caching=True,
        seed=0,
        engine_kwargs={"disable_log_stats": False},
    )
    print(f"engine ready in {time.perf_counter() - t0:.1f}s", flush=True)
    try:
        llm = engine.llm
        engine.reset_prefix_cache()
        before = counters(llm)
        t0 = time.perf_counter()
        report = run(strategy, data.problems, engine, task=data.task, concurrency=args.puzzles)
        wall = time.perf_counter() - t0
        after = counters(llm)
        tokenizer = llm.get_tokenizer()
    finally:
        engine.shutdown()
    sib_sub = sib_comp = req_sub = req_comp = requests = 0
    for r in report.results:
        events = [e for e in r.trace.events if e.kind == "generate" and e.completions]
        if not events:
            continue
        root = tokenizer.encode(events[0].completions[0].prompt_text or "", add_special_tokens=False)
        for i, e in enumerate(events):
            c = e.completions[0]
            submitted, computed = c.prompt_tokens, c.prompt_tokens - c.cached_prompt_tokens
            req_sub, req_comp, requests = req_sub + submitted, req_comp + computed, requests + 1
            if i == 0:
                continue
            ids = tokenizer.encode(c.prompt_text or "", add_special_tokens=False)
            past = max(submitted - common(ids, root), 0)
            sib_sub += past
            sib_comp += min(computed, past)
    queries = after.get("vllm:prefix_cache_queries", 0.0) - before.get("vllm:prefix_cache_queries", 0.0)
    hits = after.get("vllm:prefix_cache_hits", 0.0) - before.get("vllm:prefix_cache_hits", 0.0)
    u = report.usage
    print(f"puzzles={len(report.results)} failed={sum(not r.ok for r in report.results)} wall_s={wall:.1f}")
    print(
        f"requests={requests} completion_tokens={u.completion_tokens} "
        f"nodes={sum(r.meta.get('nodes', 0) for r in report.results)}"
    )
    print(f"engine counters: prefix_cache_queries={queries:.0f} prefix_cache_hits={hits:.0f}")
    print(
        f"per request (engine num_cached_tokens): submitted={req_sub} computed={req_comp} "
        f"ratio={req_comp / max(req_sub, 1):.3f}"
    )
    print(f"sibling tokens past the root prompt: submitted={sib_sub} computed={sib_comp}")
    print(f"sibling_computed_over_submitted={sib_comp / max(sib_sub, 1):.3f}")
    if queries <= 0:
        raise SystemExit("the engine reported no prefix-cache counters (LLM.get_metrics); is log_stats off?")
    print(f"computed_over_submitted={(queries - hits) / queries:.3f}")


if __name__ == "__main__":
    main()
