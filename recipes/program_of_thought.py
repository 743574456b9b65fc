"""Program of thought in Python (the same objects as program_of_thought.yaml): 3 programs run in
the sandbox, their printed outputs voted.

    python recipes/program_of_thought.py --limit 10 --data-dir ../shared/data
"""

from __future__ import annotations

import tts
from tts.recipe import main as run_recipe
from tts.strategies.program_of_thought import ProgramOfThought
from tts.task import Task


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, ProgramOfThought]:
    data = tts.load_dataset("gsm8k", limit=limit or 50, seed=0, data_dir=data_dir)
    task = Task(name="gsm8k", instruction="Print only the final number.", answer_format="math")
    strategy = ProgramOfThought(
        n=3,
        proposer={"name": "program_of_thought", "timeout": 5.0, "sampling": {"temperature": 0.6, "max_tokens": 384}},
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    run_recipe(build, argv, doc=__doc__, limit=50, concurrency=8)


if __name__ == "__main__":
    main()
