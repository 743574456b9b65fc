"""Evidence fact check: claim splitting, evidence sources, verdicts on a rule-based NLI fake, the
LLM-judge NLI on scripted replies, and a tiny NLI cross-encoder trained here and loaded by path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _tiny_models import NLI_LABELS, CapitalTask, fact, nli_example, train_capital_nli

from tts.backends.fake import FakeBackend
from tts.context import Context
from tts.errors import ConfigError
from tts.scheduler import Scheduler
from tts.types import Candidate, Problem
from tts.verifiers.calibration import auroc
from tts.verifiers.fact_check import (
    FactCheckVerifier,
    HFNLIModel,
    JudgeNLI,
    NLIResult,
    gather_passages,
    split_claims,
)

PASSAGES = ["Paris is the capital of France.", "The Seine flows through Paris."]


class RuleNLI:
    """Entailment when the claim is a passage; contradiction when it names another capital of the
    same country; records the pairs it is asked about."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    async def nli(self, pairs, ctx):
        self.pairs += list(pairs)
        out = []
        for premise, claim in pairs:
            same = premise.rstrip(".") == claim.rstrip(".")
            clash = "capital of" in claim and premise.split(" is ")[-1] == claim.split(" is ")[-1] and not same
            out.append(NLIResult(float(same), float(clash)))
        return out


def test_split_claims_into_sentences() -> None:
    text = (
        "Paris is the capital of France. It has 2.1 million people, e.g. in the centre! Is it big? Yes.\n\n"
        "- The Seine flows through it.\n- Dr. Smith lives there now."
    )
    assert split_claims(text) == [
        "Paris is the capital of France.",
        "It has 2.1 million people, e.g. in the centre!",
        "Is it big?",
        "The Seine flows through it.",
        "Dr. Smith lives there now.",
    ]
    assert split_claims("Yes. No. Fine.") == []  # too short to check
    assert split_claims("Yes. No.", min_words=1) == ["Yes.", "No."]


async def test_evidence_from_metadata_or_a_retriever() -> None:
    queries = ["claim one", "claim two"]
    p = Problem("p", "q", metadata={"passages": [{"text": "A."}, "B."]})
    assert await gather_passages(p, queries, None, 3) == [["A.", "B."], ["A.", "B."]]

    seen = []

    def retriever(query, k):
        seen.append((query, k))
        return [{"content": f"about {query}"}]

    ctx = Context(Scheduler(FakeBackend()), retriever=retriever)
    assert await gather_passages(Problem("p", "q"), queries, ctx, 2) == [["about claim one"], ["about claim two"]]
    assert seen == [("claim one", 2), ("claim two", 2)]

    class AsyncRetriever:
        async def retrieve(self, query, k):
            return [f"{query}!"] * k

    ctx = Context(Scheduler(FakeBackend()), retriever=AsyncRetriever())
    assert await gather_passages(Problem("p", "q"), ["x"], ctx, 2) == [["x!", "x!"]]
    with pytest.raises(ConfigError, match="passages"):
        await gather_passages(Problem("p", "q"), ["x"], Context(Scheduler(FakeBackend())), 2)


async def test_fact_check_verdicts_feedback_and_steps() -> None:
    nli = RuleNLI()
    verifier = FactCheckVerifier(nli, aggregate="mean")
    problem = Problem("p", "Tell me about Paris.", metadata={"passages": PASSAGES})
    candidates = [
        Candidate("Paris is the capital of France. The Seine flows through Paris.", None),
        Candidate("Lyon is the capital of France. The Seine flows through Paris.", None),
        Candidate("Paris has many museums and parks.", None),
        Candidate("Yes.", None),
    ]
    scores = await verifier.score(problem, candidates)
    assert [s.value for s in scores] == [1.0, 0.5, 0.0, 0.0]
    assert [s.passed for s in scores] == [True, False, False, False]
    assert scores[0].steps == (1.0, 1.0) and scores[1].steps == (0.0, 1.0)
    assert "Contradicted by the evidence: Lyon is the capital of France." in scores[1].feedback
    assert "Not supported by the evidence: Paris has many museums and parks." in scores[2].feedback
    assert scores[3].feedback == "No checkable claim found."
    # each (passage, claim) pair is judged once even when claims repeat across candidates
    assert len(nli.pairs) == len(set(nli.pairs)) == 2 * 4
    [weakest] = await FactCheckVerifier(RuleNLI(), aggregate="min").score(problem, candidates[1:2])
    assert weakest.value == 0.0
    assert verifier.cost.kind == "model"


async def test_judge_nli_asks_the_model_per_passage_and_claim() -> None:
    backend = FakeBackend.scripted(
        by_prompt={"[Claim]\nParis is the capital": "supported", "[Claim]\nLyon is the capital": "Contradicted."},
        default="unknown",
    )
    ctx = Context(Scheduler(backend), problem=None)
    verifier = FactCheckVerifier("judge")
    problem = Problem("p", "Capital?", metadata={"passages": PASSAGES[:1]})
    scores = await verifier.score(
        problem,
        [Candidate("Paris is the capital of France.", None), Candidate("Lyon is the capital of France.", None)],
        ctx,
    )
    assert [s.value for s in scores] == [1.0, 0.0]
    assert "Contradicted" in scores[1].feedback
    assert backend.requests == 2 and ctx.usage.calls == 2
    prompts = [e.request.messages()[-1]["content"] for e in ctx.trace.events if e.request is not None]
    assert all(p.startswith("[Passage]\nParis is the capital of France.\n\n[Claim]\n") for p in prompts)
    assert verifier.cost.kind == "llm" and isinstance(verifier.model, JudgeNLI)


# --------------------------------------------------------------------------------------------------
# A tiny NLI cross-encoder trained here
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capital_nli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CapitalTask]:
    path = tmp_path_factory.mktemp("capital_nli")
    return path, train_capital_nli(path)


def test_tiny_nli_model_reads_labels_from_config_and_entails_held_out_facts(
    capital_nli: tuple[Path, CapitalTask],
) -> None:
    path, task = capital_nli
    model = HFNLIModel(str(path), device="cpu", batch_size=64)
    _, _, entail, contra = model.load()
    assert (NLI_LABELS[entail], NLI_LABELS[contra]) == ("ENTAILMENT", "CONTRADICTION")
    rng = random.Random(7)
    examples = [nli_example(rng, task.test_facts) for _ in range(300)]
    results = model.predict([(p, h) for p, h, _ in examples])
    is_entailed = [label == 2 for *_, label in examples]
    assert auroc([r.entailment for r in results], is_entailed) > 0.9
    accuracy = sum((r.entailment >= 0.5) == e for r, e in zip(results, is_entailed, strict=True)) / len(examples)
    assert accuracy > 0.9


async def test_fact_check_with_the_tiny_nli_model_separates_true_from_false_answers(
    capital_nli: tuple[Path, CapitalTask],
) -> None:
    path, task = capital_nli
    rng = random.Random(11)
    candidates, labels, passages = [], [], []
    for i in range(60):
        facts = rng.sample(task.test_facts, 4)
        claims = [fact(*facts[0]), fact(*facts[1])]
        true = i % 2 == 0
        if not true:  # one claim names the wrong capital
            wrong_city = rng.choice([c for c, _ in task.test_facts if c != facts[1][0]])
            claims[1] = fact(wrong_city, facts[1][1])
        candidates.append(Candidate(" ".join(claims), None))
        labels.append(true)
        passages.append([fact(*f) for f in facts])
    verifier = FactCheckVerifier(str(path))
    values = []
    for cand, ps in zip(candidates, passages, strict=True):
        [s] = await verifier.score(Problem("capitals", "Name two capitals.", metadata={"passages": ps}), [cand])
        assert s.steps is not None and len(s.steps) == 2
        values.append(s.value)
    assert auroc(values, labels) > 0.9
