"""DeepConf online with early termination (``self_consistency`` ``cut: true``) against the same
rule applied after the fact (``cut: false``), on the fake oracle backend: exact token counts and
virtual engine time.

Both runs draw the same samples (the fake's streams are per prompt, and each problem draws its
windows one after another), set the same bar on the same ``warmup`` chains and drop the same later
chains (the watcher cuts a chain if and only if the after-the-fact filter drops it), so they give
the same answers: the difference is the tokens the dropped chains generated after their cut. The
fake's chains have one logprob per chain (its mean), so a dropped chain is cut at its first full
window of ``group`` tokens; real chains are cut where their confidence first dips.

Mix (400 problems, fixed by a seed): per-sample accuracy uniform in [0.8, 0.95] for 40% of
problems, [0.5, 0.8] for 40%, [0.1, 0.4] for 20%; wrong answers uniform over 4; chain lengths
uniform in [128, 512] tokens; mean token logprob -0.3 for a right chain, -0.6 for a wrong one,
noise 0.15. n=32, warmup 8, windows of 8, ``confidence: lowest_group``, group 32; DeepConf-low
(keep 0.1) and DeepConf-high (keep 0.9). Printed beside: plain majority at n=32 and the mean
per-sample accuracy (one sample, the trivial baseline). Last line: ``token_ratio`` (cut / after,
completion tokens, DeepConf-low).

    python bench/deepconf_cut.py
"""

from __future__ import annotations

import random
import time
from typing import Any

from tts import FakeBackend, OracleModel, OracleSpec, SelfConsistency, Task, run
from tts.backends.fake import CostModel

PROBLEMS, N, SEED = 400, 32, 0
TASK = Task(answer_format="text")
MIX = ((0.4, 0.8, 0.95), (0.4, 0.5, 0.8), (0.2, 0.1, 0.4))
COST = CostModel(decode_step=0.02, decode_per_seq=0.0002, max_concurrency=256)
DEEPCONF: dict[str, Any] = {
    "n": N,
    "online": True,
    "warmup": 8,
    "window": 8,
    "confidence": "lowest_group",
    "group": 32,
}


def specs(count: int = PROBLEMS, seed: int = SEED) -> list[OracleSpec]:
    rng = random.Random(seed)
    out: list[OracleSpec] = []
    edge = 0.0
    for share, lo, hi in MIX:
        edge += share
        while len(out) < round(edge * count):
            out.append(OracleSpec(p_correct=rng.uniform(lo, hi), wrong=("101", "102", "103", "104"), length=(128, 512)))
    return out


def solve(options: dict[str, Any]) -> dict[str, Any]:
    model = OracleModel()
    problems = [model.add(f"p{i}", s) for i, s in enumerate(specs())]
    backend = FakeBackend(model, cost=COST)
    report = run(SelfConsistency(**options), problems, backend, task=TASK, concurrency=len(problems))
    assert report.usage.completion_tokens == backend.completion_tokens
    return {
        "accuracy": report.accuracy,
        "tokens": backend.completion_tokens,
        "seconds": backend.clock(),
        "answers": [r.answer for r in report.results],
        "cut": sum(r.meta.get("cut", 0) for r in report.results),
        "kept": sum(r.meta.get("kept", 0) for r in report.results),
    }


def main() -> None:
    start = time.perf_counter()
    majority = solve({"n": N})
    one = sum(s.p_correct for s in specs()) / PROBLEMS
    print(f"problems={PROBLEMS} n={N} deepconf={DEEPCONF}")
    print(f"baselines: one_sample_accuracy={one:.4f} majority_accuracy={majority['accuracy']:.4f}")
    ratio = 0.0
    for keep in (0.9, 0.1):
        after = solve({**DEEPCONF, "keep": keep})
        cut = solve({**DEEPCONF, "keep": keep, "cut": True})
        same = after["answers"] == cut["answers"] and after["kept"] == cut["kept"]
        ratio = cut["tokens"] / after["tokens"]
        print(
            f"keep={keep}: accuracy={cut['accuracy']:.4f} same_answers={int(same)} chains_cut={cut['cut']} "
            f"tokens_after={after['tokens']} tokens_cut={cut['tokens']} token_ratio={ratio:.4f} "
            f"engine_seconds_after={after['seconds']:.1f} engine_seconds_cut={cut['seconds']:.1f} "
            f"time_ratio={cut['seconds'] / after['seconds']:.4f}"
        )
        assert same, "cutting must not change the vote"
    print(f"wall_seconds={time.perf_counter() - start:.1f}")
    print(f"token_ratio={ratio:.4f}")


if __name__ == "__main__":
    main()
