"""A multiple-choice QA task in Python (the same objects as multiple_choice_qa.yaml): the answer
letter is read with a regular expression given here, as data, not code.

    python recipes/multiple_choice_qa.py --limit 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tts
from tts.config import TaskSpec, apply_task
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    data, task, strategy = build(args.limit)
    backend = tts.make_backend(args.backend, **({"model": args.model} if args.model else {}))
    report = tts.run(strategy, data.problems, backend, task=task, concurrency=40)
    print(report.summary())


if __name__ == "__main__":
    main()
