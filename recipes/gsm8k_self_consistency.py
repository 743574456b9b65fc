"""GSM8K with self-consistency in Python (the same objects as gsm8k_self_consistency.yaml).

python recipes/gsm8k_self_consistency.py --limit 20 --data-dir ../shared/data
"""

from __future__ import annotations

import tts
from tts.recipe import main as run_recipe
from tts.task import Task

BUDGET = tts.Limits(max_tokens=8000)
"""At most 8000 tokens a problem (the YAML's ``budget``), enforced by the run loop."""


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, tts.SelfConsistency]:
    data = tts.load_dataset("gsm8k", limit=limit or 50, seed=0, data_dir=data_dir)
    task = Task(
        name="gsm8k",
        instruction="End your reply with 'The answer is N.' where N is a number.",
        cot_template="{question}\nLet's think step by step. {instruction}",
        answer_format="math",
    )
    strategy = tts.SelfConsistency(
        n=8,
        proposer={
            "name": "few_shot",
            "prompt": "cot",
            "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 256},
        },
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    run_recipe(build, argv, doc=__doc__, limit=50, concurrency=16, limits=BUDGET)


if __name__ == "__main__":
    main()
