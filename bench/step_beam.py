"""Step beam search against best-of-N at equal generated tokens, both judged by the tiny process
reward model the verifier tests train (``tests/_tiny_models.py``: a one-layer classifier of whether
the last "a + b = c" equation of a solution is right). No real process reward model is available
offline; this is the only PRM here, on the synthetic task it is trained for.

Task: "What is the sum ?" of a chain ``a + b = c1`` then ``c1 + x = c2`` (a, b <= 4, x <= 9); the
answer is c2, right only when both steps are. The policy is simulated on the fake backend: each
step is right with probability ``p`` (default 0.5), a wrong result is uniform over the other
numbers below 19. Five tokens per step.

- best-of-N: N=8 whole solutions (one request), the PRM's ``min`` over steps picks one;
- step beam search: beam_width 2, n=4 per beam (8 steps generated per level, as best-of-8 does),
  steps scored by the PRM, path value the ``min`` of its step scores;
- trivial baselines: one sample (chance, p^2 in expectation) and the most frequent answer of 8.

Prints accuracy with bootstrap 95% intervals, generated tokens per problem, the paired difference
beam minus best-of-N with its interval and, last, ``beam_minus_best_of_n=<x>``.

    flock /tmp/h3/engine.lock python bench/step_beam.py [--problems 300] [--p 0.5]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEP_TOKENS = 5


class ChainPolicy:
    """Writes the chain's steps, each right with probability ``p`` (a reply model of the fake backend)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def _step(self, a: int, b: int, rng: random.Random) -> tuple[str, int]:
        c = a + b if rng.random() < self.p else rng.choice([v for v in range(19) if v != a + b])
        return f"{a} + {b} = {c}", c

    def reply(self, request: Any, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        a, b, x = map(int, re.search(r"chain (\d+) (\d+) (\d+)", prompt).groups())  # type: ignore[union-attr]
        done = re.findall(r"= (\d+)", prompt.split("assistant:", 1)[1])
        if "\n" in request.params.stop:  # one step of a search
            if done:
                return self._step(int(done[-1]), x, rng)[0], STEP_TOKENS, None
            return self._step(a, b, rng)[0], STEP_TOKENS, None
        first, c1 = self._step(a, b, rng)
        return f"{first}\n{self._step(c1, x, rng)[0]}", 2 * STEP_TOKENS, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_models import QUESTION, train_sum_reward_model

    from tts import BestOfN, FakeBackend, Problem, SelfConsistency, Task, compare, run
    from tts.stats import bootstrap_ci
    from tts.strategies.step_beam_search import StepBeamSearch
    from tts.verifiers.reward_model import ProcessRewardModel

    t0 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="sum_rm_"))
    train_sum_reward_model(folder)
    print(f"PRM trained in {time.perf_counter() - t0:.1f}s", flush=True)
    prm = ProcessRewardModel(
        str(folder),
        aggregate="min",
        threshold=None,
        batch_size=64,
        model_options={"device": "cpu", "template": QUESTION + "\n{solution}"},
    )
    rng = random.Random(args.seed)
    problems = []
    for i in range(args.problems):
        a, b, x = rng.randint(0, 4), rng.randint(0, 4), rng.randint(0, 9)
        problems.append(Problem(f"c{i}", f"{QUESTION} chain {a} {b} {x}", str(a + b + x)))
    task = Task(name="chain", answer_format="last_number", cot_template="{question}", direct_template="{question}")
    sampling = {"temperature": 1.0, "max_tokens": 16}
    runs: dict[str, Any] = {}
    strategies = {
        "one sample": SelfConsistency(n=1, proposer={"name": "few_shot", "sampling": sampling}),
        "majority@8": SelfConsistency(n=8, proposer={"name": "few_shot", "sampling": sampling}),
        "best_of_n@8": BestOfN(n=8, proposer={"name": "few_shot", "sampling": sampling}),
        "step_beam 2x4": StepBeamSearch(
            beam_width=2, n=4, max_depth=2, delimiter="\n", aggregate="min", sampling=sampling
        ),
    }
    for name, strategy in strategies.items():
        backend = FakeBackend(ChainPolicy(args.p), seed=args.seed)
        t0 = time.perf_counter()
        report = run(strategy, problems, backend, task=task, verifier=prm, concurrency=64)
        assert all(r.ok for r in report.results), next(r.error for r in report.results if not r.ok)
        acc, lo, hi = bootstrap_ci([float(bool(r.correct)) for r in report.results])
        runs[name] = report
        print(
            f"{name:>14}: accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}]  generated tokens/problem "
            f"{backend.completion_tokens / len(problems):.1f}  ({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
    print(f"expected one-sample accuracy p^2 = {args.p**2:.3f}")
    diff = compare(runs["best_of_n@8"], runs["step_beam 2x4"], seed=args.seed)
    print(f"step beam - best-of-N: {diff.difference:+.3f} [95% CI {diff.ci[0]:+.3f}, {diff.ci[1]:+.3f}]")
    print(f"beam_minus_best_of_n={diff.difference:.3f}")


if __name__ == "__main__":
    main()
