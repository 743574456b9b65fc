"""Game of 24 tree-of-thoughts smoke tests on the real engines (SmolLM2-135M on CPU): two puzzles,
breadth 1, two proposals per state, depth 2, 24 tokens per thought. A 135M model rarely solves a
puzzle; what is checked is the search: every problem answered, one tree per problem whose node
count matches the requests made, deeper requests at lower priority values, usage within the
token caps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tts import load_dataset, run
from tts.strategies.tree_of_thoughts import TreeOfThoughts

DATA = Path(__file__).resolve().parents[1] / "recipes" / "data" / "game24_901_1000.csv"
TOKENS = 24


def _strategy() -> TreeOfThoughts:
    return TreeOfThoughts(
        prompts="game24",
        generator="propose",
        evaluator="value",
        value_samples=1,
        breadth=1,
        samples=2,
        max_depth=2,
        sampling={"temperature": 0.7, "max_tokens": TOKENS},
        value_sampling={"temperature": 0.7, "max_tokens": 8},
        verifiers=[{"name": "game24"}],
    )


def _check(engine: Any) -> None:
    data = load_dataset(str(DATA), limit=2)
    report = run(_strategy(), data.problems, engine, task=data.task, concurrency=2)
    assert len(report.results) == 2
    for r in report.results:
        assert r.ok and r.error is None, r.error
        assert r.answer is not None  # a finished path, or the answer written from the best state
        g = r.trace.graph
        events = [e for e in r.trace.events if e.kind == "generate"]
        assert g is not None and g.number_of_nodes() >= 2 and len(events) == r.usage.calls
        for e in events:
            assert e.request is not None and e.request.priority <= 0
            assert e.request.params.max_tokens <= 2 * TOKENS
        assert r.usage.completion_tokens <= r.usage.calls * 2 * TOKENS
        finished = [n for n in g.nodes if g.nodes[n]["terminal"]]
        assert finished and all("passed" in g.nodes[n] for n in finished)  # the Game24 rule judged them


@pytest.mark.hf
def test_game24_tot_on_hf() -> None:
    from tts.backends.hf import HFBackend

    _check(HFBackend(threads=1))


@pytest.mark.vllm
def test_game24_tot_on_vllm() -> None:
    from tts.backends.vllm import VLLMBackend

    engine = VLLMBackend(  # the settings of tests/test_vllm_backend.py: the quickest start on CPU
        mode="offline",
        enforce_eager=True,
        dtype="bfloat16",
        block_size=32,
        kv_cache_memory_bytes=1 << 30,
        max_model_len=1024,
        max_num_batched_tokens=256,
        seed=0,
    )
    try:
        _check(engine)
    finally:
        engine.shutdown()
