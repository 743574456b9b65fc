"""Game of 24 with tree-of-thoughts BFS in Python (the same objects as game24_tot.yaml): the
paper's propose and value prompts, breadth 5, the Game24 rule on the answers. Puzzles: rows
901-1000 of the ToT paper's game24.csv (MIT).

    python recipes/game24_tot.py --limit 10
"""

from __future__ import annotations

from pathlib import Path

import tts
from tts.recipe import main as run_recipe
from tts.strategies.tree_of_thoughts import TreeOfThoughts
from tts.task import Task

DATA = Path(__file__).resolve().parent / "data" / "game24_901_1000.csv"


def strategy() -> TreeOfThoughts:
    return TreeOfThoughts(
        search="bfs",
        prompts="game24",
        generator="propose",
        evaluator="value",
        value_samples=3,
        breadth=5,
        samples=8,
        max_depth=4,
        threshold=0.5,
        sampling={"temperature": 0.7, "max_tokens": 64},
        value_sampling={"temperature": 0.7, "max_tokens": 64},
        verifiers=[{"name": "game24"}],
    )


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, TreeOfThoughts]:
    data = tts.load_dataset(str(DATA), limit=limit)
    return data, data.task, strategy()


def main(argv: list[str] | None = None) -> None:
    run_recipe(build, argv, doc=__doc__, limit=None, concurrency=10)


if __name__ == "__main__":
    main()
