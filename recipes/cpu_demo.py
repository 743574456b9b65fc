"""The CPU demo in Python: greedy against self-consistency (8 samples) on the built-in "larger" task,
with a paired bootstrap of the difference (the same objects as cpu_demo.yaml).

    python recipes/cpu_demo.py --limit 20            # --backend vllm for the real engine
"""

from __future__ import annotations

import tts
from tts.progress import execute
from tts.recipe import arguments, backend_of, print_table
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
    args = arguments(__doc__, argv, limit=100, concurrency=100)
    data, task, strategy = build(args.limit, args.data_dir)
    backend = tts.Scheduler(backend_of(args))
    greedy_strategy = tts.Greedy(
        proposer={"name": "few_shot", "prompt": "direct", "sampling": {"temperature": 0, "max_tokens": 16}}
    )
    greedy = execute(backend, data, greedy_strategy, task=task, label="greedy", concurrency=args.concurrency)
    sc = execute(backend, data, strategy, task=task, label="self_consistency@8", concurrency=args.concurrency)
    print_table([greedy, sc])
    c = tts.compare(greedy, sc)
    print(f"greedy accuracy: {c.accuracy_a:.3f}")
    print(f"self_consistency@8 accuracy: {c.accuracy_b:.3f}")
    print(f"difference: {c.difference:+.3f} (95% CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], {c.problems} problems)")


if __name__ == "__main__":
    main()
