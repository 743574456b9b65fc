"""MATH-500 best-of-N with the math verifier in Python (the same objects as math500_best_of_n.yaml).
An outcome reward model joins as a second weighted verifier:
verifiers=[..., {"name": "orm", "weight": 0.5, "options": {"model": "PATH_OR_HUB_ID"}}].

    python recipes/math500_best_of_n.py --limit 10 --data-dir ../shared/data
"""

from __future__ import annotations

import tts
from tts.recipe import main as run_recipe
from tts.strategies.best_of_n import BestOfN
from tts.task import Task


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, BestOfN]:
    data = tts.load_dataset("math500", limit=limit or 50, seed=0, data_dir=data_dir)
    task = Task(
        name="math500",
        instruction="Put the final answer in \\boxed{}.",
        cot_template="{question}\nSolve step by step. {instruction}",
        answer_format="math",
    )
    strategy = BestOfN(
        n=8,
        proposer={"name": "few_shot", "prompt": "cot", "sampling": {"temperature": 0.8, "max_tokens": 384}},
        select="best",
        verifiers=[{"name": "math", "timeout": 5.0}],
        fallback="majority",
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    run_recipe(build, argv, doc=__doc__, limit=50, concurrency=8)


if __name__ == "__main__":
    main()
