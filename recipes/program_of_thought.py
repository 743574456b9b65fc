"""Program of thought in Python (the same objects as program_of_thought.yaml): 3 programs run in
the sandbox, their printed outputs voted.

    python recipes/program_of_thought.py --limit 10 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse

import tts
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--data-dir", default=None, help="folder with gsm8k_test.jsonl (default: $TTS_DATA_DIR)")
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    data, task, strategy = build(args.limit, args.data_dir)
    backend = tts.make_backend(args.backend, **({"model": args.model} if args.model else {}))
    report = tts.run(strategy, data.problems, backend, task=task, concurrency=8)
    print(report.summary())


if __name__ == "__main__":
    main()
