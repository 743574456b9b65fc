"""The CPU demo in Python: greedy against self-consistency (8 samples) on the built-in "larger" task,
with a paired bootstrap of the difference (the same objects as cpu_demo.yaml).

    python recipes/cpu_demo.py --limit 20            # --backend vllm for the real engine
"""

from __future__ import annotations

import argparse

import tts
from tts.task import Task


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, tts.SelfConsistency]:
    data = tts.load_dataset("larger", limit=limit or 100, seed=0)
    task = Task(
        name="larger",
        instruction="Answer with the larger number only.",
        direct_template="{question} {instruction}",
        cot_template="{question} Think briefly, then answer. {instruction}",
        answer_format="first_number",
    )
    strategy = tts.SelfConsistency(
        n=8, proposer={"name": "few_shot", "prompt": "direct", "sampling": {"temperature": 0.7, "max_tokens": 16}}
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    data, task, strategy = build(args.limit)
    backend = tts.Scheduler(tts.make_backend(args.backend, **({"model": args.model} if args.model else {})))
    greedy = tts.run(
        tts.Greedy(proposer={"name": "few_shot", "prompt": "direct", "sampling": {"temperature": 0, "max_tokens": 16}}),
        data.problems,
        backend,
        task=task,
    )
    sc = tts.run(strategy, data.problems, backend, task=task)
    c = tts.compare(greedy, sc)
    print(f"greedy accuracy: {c.accuracy_a:.3f}")
    print(f"self_consistency@8 accuracy: {c.accuracy_b:.3f}")
    print(f"difference: {c.difference:+.3f} (95% CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], {c.problems} problems)")


if __name__ == "__main__":
    main()
