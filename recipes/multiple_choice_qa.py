"""A multiple-choice QA task in Python (the same objects as multiple_choice_qa.yaml): the answer
letter is read with a regular expression given here, as data, not code.

    python recipes/multiple_choice_qa.py --limit 20
"""

from __future__ import annotations

from pathlib import Path

import tts
from tts.config import TaskSpec, apply_task
from tts.recipe import main as run_recipe
from tts.task import Task

DATA = Path(__file__).resolve().parent / "data" / "capitals_mc.jsonl"
TASK = TaskSpec(
    name="capitals_mc",
    instruction="Reply with the letter of the correct option, as 'Answer: X'.",
    direct_template="{question}\n{instruction}",
    cot_template="{question}\nThink briefly about each option. {instruction}",
    answer_format="text",
    answer_pattern=r"(?m)[Aa]nswer\s*(?:is)?\s*[:=]?\s*\(?([ABCD])\b|^\s*\(?([ABCD])[).:]",
)


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, tts.SelfConsistency]:
    data = tts.load_dataset(str(DATA), limit=limit, fields={"question": "question", "reference": "answer", "id": "id"})
    task = apply_task(data.task, TASK)
    strategy = tts.SelfConsistency(
        n=5, proposer={"name": "few_shot", "prompt": "direct", "sampling": {"temperature": 0.7, "max_tokens": 24}}
    )
    return data, task, strategy


def main(argv: list[str] | None = None) -> None:
    run_recipe(build, argv, doc=__doc__, limit=None, concurrency=40)


if __name__ == "__main__":
    main()
