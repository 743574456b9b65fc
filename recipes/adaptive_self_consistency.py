"""Adaptive self-consistency in Python (the same objects as adaptive_self_consistency.yaml): the
documented ``stop: auto`` (stop when more chains will not change the answer), at most 16 chains.

    python recipes/adaptive_self_consistency.py --limit 20 --data-dir ../shared/data
"""

from __future__ import annotations

import tts
from tts.recipe import main as run_recipe
from tts.task import Task


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, tts.SelfConsistency]:
    data = tts.load_dataset("gsm8k", limit=limit or 50, seed=0, data_dir=data_dir)
    task = Task(
        name="gsm8k", instruction="End your reply with 'The answer is N.' where N is a number.", answer_format="math"
    )
    strategy = tts.SelfConsistency(
        n=16,
        stop="auto",
        proposer={"name": "few_shot", "sampling": {"temperature": 0.7, "max_tokens": 256}},
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    report = run_recipe(build, argv, doc=__doc__, limit=50, concurrency=16)
    print(f"samples per problem: {report.usage.completions / max(len(report.results), 1):.1f} (at most 16)")


if __name__ == "__main__":
    main()
