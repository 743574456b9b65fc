"""Reward-model verifiers: step splitting, aggregation, batching, the vLLM adapter (fake engine),
and a tiny reward model trained here, saved, and loaded by path through the verifiers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from _tiny_models import QUESTION, SumTask, tiny_token_prm, train_sum_reward_model

from tts.errors import ConfigError
from tts.types import Candidate, Problem
from tts.verifiers.calibration import auroc
from tts.verifiers.reward_model import (
    HFRewardModel,
    OutcomeRewardModel,
    ProcessRewardModel,
    RewardInput,
    VLLMRewardModel,
    aggregate_steps,
    split_steps,
)

PROBLEM = Problem("sum", QUESTION)


class RecordingScorer:
    """Scores a text by the share of its lines that do not contain 'bad'; records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[RewardInput]] = []

    def rewards(self, inputs):
        self.batches.append(list(inputs))
        return [1.0 - sum("bad" in line for line in s.split("\n")) / len(s.split("\n")) for _, s in inputs]


# --------------------------------------------------------------------------------------------------
# Steps and aggregation
# --------------------------------------------------------------------------------------------------


def test_split_steps_by_labels_paragraphs_lines_and_separator() -> None:
    labelled = "Let us think.\nStep 1: add 2 and 3.\nso 5\nStep 2: double it.\n## Step 3. Answer 10."
    assert split_steps(labelled) == [
        "Let us think.",
        "Step 1: add 2 and 3.\nso 5",
        "Step 2: double it.",
        "## Step 3. Answer 10.",
    ]
    assert split_steps("First add.\nStill first.\n\n  \nThen double.\n\n") == [
        "First add.\nStill first.",
        "Then double.",
    ]
    assert split_steps("a\nb\n\nc", how="newline") == ["a", "b", "c"]
    assert split_steps("x ки y ки z", how="separator", separator="ки") == ["x", "y", "z"]
    assert split_steps("one line only") == ["one line only"]
    with pytest.raises(ConfigError, match="separator"):
        split_steps("x", how="separator")


def test_aggregations() -> None:
    values = [0.9, 0.5, 0.8]
    assert aggregate_steps(values, "last") == 0.8
    assert aggregate_steps(values, "min") == 0.5
    assert aggregate_steps(values, "product") == pytest.approx(0.36)
    assert aggregate_steps(values, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ConfigError, match="aggregate"):
        aggregate_steps(values, "max")


# --------------------------------------------------------------------------------------------------
# Verifier mechanics on a recording scorer
# --------------------------------------------------------------------------------------------------


async def test_orm_scores_candidates_in_batches_of_the_configured_size() -> None:
    scorer = RecordingScorer()
    orm = OutcomeRewardModel(scorer, batch_size=3, threshold=0.75)
    candidates = [Candidate(f"line {i}" + ("\nbad" if i % 2 else ""), str(i)) for i in range(7)]
    scores = await orm.score(PROBLEM, candidates)
    assert [len(b) for b in scorer.batches] == [3, 3, 1]
    assert scorer.batches[0][1] == RewardInput(QUESTION, "line 1\nbad")
    assert [s.value for s in scores] == [1.0, 0.5] * 3 + [1.0]
    assert [s.passed for s in scores] == [True, False] * 3 + [True]
    assert orm.cost.kind == "model" and orm.cost.calls == 1
    with pytest.raises(ConfigError, match="batch_size"):
        OutcomeRewardModel(scorer, batch_size=0)


async def test_prm_scores_every_step_prefix_and_aggregates() -> None:
    scorer = RecordingScorer()
    text = "Step 1: fine.\nStep 2: bad step.\nStep 3: fine again."
    prm = ProcessRewardModel(scorer, aggregate="min", batch_size=2)
    [score] = await prm.score(PROBLEM, [Candidate(text, None)])
    prefixes = [s for batch in scorer.batches for _, s in batch]
    assert prefixes == [
        "Step 1: fine.",
        "Step 1: fine.\nStep 2: bad step.",
        "Step 1: fine.\nStep 2: bad step.\nStep 3: fine again.",
    ]
    assert [len(b) for b in scorer.batches] == [2, 1]
    assert score.steps == pytest.approx((1.0, 0.5, 2 / 3))
    assert score.value == pytest.approx(0.5) and score.passed is True
    assert "weakest step 2 of 3" in score.feedback
    for how, expected in [("last", 2 / 3), ("product", 1 / 3), ("mean", (1 + 0.5 + 2 / 3) / 3)]:
        [s] = await ProcessRewardModel(RecordingScorer(), aggregate=how).score(PROBLEM, [Candidate(text, None)])
        assert s.value == pytest.approx(expected), how
    # steps set by a strategy win over splitting; a custom separator splits the rest
    [s] = await ProcessRewardModel(RecordingScorer(), aggregate="last").score(
        PROBLEM, [Candidate("ignored", None, steps=["ok", "bad"])]
    )
    assert s.steps == (1.0, 0.5)
    sep = ProcessRewardModel(RecordingScorer(), split="separator", separator=" | ")
    assert sep.steps_of(Candidate("a | b | c", None)) == ["a", "b", "c"]


async def test_prm_token_mode_uses_step_rewards_per_candidate() -> None:
    seen = []

    class StepScorer:
        def step_rewards(self, inputs):
            seen.append(list(inputs))
            return [[0.9 if "good" in s else 0.2 for s in steps] for _, steps in inputs]

    prm = ProcessRewardModel(StepScorer(), mode="tokens", aggregate="product", threshold=0.5)
    scores = await prm.score(PROBLEM, [Candidate("good\n\nbad", None), Candidate("good\n\ngood", None)])
    assert seen == [[(QUESTION, ["good", "bad"]), (QUESTION, ["good", "good"])]]
    assert [s.value for s in scores] == pytest.approx([0.18, 0.81])
    assert [s.passed for s in scores] == [False, True]
    with pytest.raises(ConfigError, match="step_rewards"):
        ProcessRewardModel(RecordingScorer(), mode="tokens")


# --------------------------------------------------------------------------------------------------
# vLLM adapter against a fake engine
# --------------------------------------------------------------------------------------------------


class FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [7 if w == "[STEP]" else 1 for w in text.split()]


class FakeLLM:
    """Mimics vllm.LLM (runner="pooling"): classify -> .outputs.probs; encode(token_classify) ->
    .outputs.data rows and .prompt_token_ids."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict]] = []
        self.llm_engine = SimpleNamespace(
            model_config=SimpleNamespace(hf_config=SimpleNamespace(id2label={0: "wrong", 1: "neutral", 2: "correct"}))
        )

    def get_tokenizer(self):
        return FakeTokenizer()

    def classify(self, prompts, **kw):
        self.calls.append(("classify", list(prompts), kw))
        return [
            SimpleNamespace(outputs=SimpleNamespace(probs=[0.1, 0.2, 0.7] if "42" in p else [0.6, 0.3, 0.1]))
            for p in prompts
        ]

    def encode(self, prompts, **kw):
        self.calls.append(("encode", list(prompts), kw))
        out = []
        for p in prompts:
            ids = [7 if w == "[STEP]" else 1 for w in p.replace("[STEP]", " [STEP] ").split()]
            rows = [[0.5, 0.5] for _ in ids]
            tags = [i for i, t in enumerate(ids) if t == 7]
            for k, pos in enumerate(tags):
                rows[pos] = [1 - 0.1 * (k + 1), 0.1 * (k + 1)]  # step k+1 scores 0.1 * (k + 1)
            out.append(SimpleNamespace(outputs=SimpleNamespace(data=rows), prompt_token_ids=ids))
        return out


async def test_vllm_adapter_classify_and_token_classify_on_a_fake_engine() -> None:
    llm = FakeLLM()
    scorer = VLLMRewardModel(llm=llm, label="correct", template="Q: {question} A: {solution}")
    orm = OutcomeRewardModel(scorer, batch_size=8)
    scores = await orm.score(PROBLEM, [Candidate("it is 42", "42"), Candidate("it is 41", "41")])
    assert [s.value for s in scores] == pytest.approx([0.7, 0.1])
    name, prompts, kw = llm.calls[0]
    assert name == "classify" and prompts == [f"Q: {QUESTION} A: it is 42", f"Q: {QUESTION} A: it is 41"]
    assert kw == {"use_tqdm": False}

    prm = ProcessRewardModel(VLLMRewardModel(llm=llm, label=1, step_tag="[STEP]"), mode="tokens", aggregate="last")
    [s] = await prm.score(PROBLEM, [Candidate("a\nb\nc", None)])
    name, prompts, kw = llm.calls[-1]
    assert name == "encode" and kw["pooling_task"] == "token_classify"
    assert prompts == [f"{QUESTION}\na[STEP]b[STEP]c[STEP]"]
    assert s.steps == pytest.approx((0.1, 0.2, 0.3)) and s.value == pytest.approx(0.3)


def test_vllm_adapter_builds_no_engine_until_used_and_needs_a_model() -> None:
    scorer = VLLMRewardModel("some/reward-model", dtype="bfloat16")
    assert scorer._llm is None and scorer.engine_options == {"dtype": "bfloat16"}
    with pytest.raises(ConfigError, match="model"):
        VLLMRewardModel()


def test_verifier_modules_import_no_heavy_library() -> None:
    code = (
        "import sys, tts.verifiers.reward_model, tts.verifiers.judge, tts.verifiers.fact_check, "
        "tts.verifiers.consistency, tts.verifiers.combine, tts.verifiers.calibration\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'sentence_transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------------------------------
# A tiny reward model trained here
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sum_rm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SumTask]:
    path = tmp_path_factory.mktemp("sum_rm")
    task = train_sum_reward_model(path)
    return path, task


async def test_trained_orm_ranks_held_out_sums_through_the_verifier(sum_rm: tuple[Path, SumTask]) -> None:
    path, task = sum_rm
    labels = [i % 2 == 0 for i in range(200)]
    candidates = [Candidate(task.solution([ok]), None) for ok in labels]
    orm = OutcomeRewardModel(str(path), batch_size=32, model_options={"device": "cpu"})
    scores = await orm.score(PROBLEM, candidates)
    assert all(0.0 <= s.value <= 1.0 for s in scores)
    assert auroc([s.value for s in scores], labels) > 0.9
    assert isinstance(orm.scorer, HFRewardModel) and orm.scorer._index == 1  # "correct" of two labels


async def test_trained_model_as_prm_finds_the_wrong_step(sum_rm: tuple[Path, SumTask]) -> None:
    path, task = sum_rm
    kinds = [(True, True), (False, True), (True, False), (False, False)] * 30
    candidates = [Candidate(task.solution(list(k)), None) for k in kinds]
    labels = [all(k) for k in kinds]
    scorer = HFRewardModel(str(path), device="cpu")
    by_min = await ProcessRewardModel(scorer, aggregate="min", batch_size=64).score(PROBLEM, candidates)
    by_last = await ProcessRewardModel(scorer, aggregate="last", batch_size=64).score(PROBLEM, candidates)
    assert all(s.steps is not None and len(s.steps) == 2 for s in by_min)
    auroc_min = auroc([s.value for s in by_min], labels)
    auroc_last = auroc([s.value for s in by_last], labels)
    # min sees a wrong first step; last only judges the final one
    assert auroc_min > 0.9 and auroc_min > auroc_last + 0.05
    first_ok = [s.steps[0] for s, k in zip(by_min, kinds, strict=True) if k[0]]
    first_bad = [s.steps[0] for s, k in zip(by_min, kinds, strict=True) if not k[0]]
    assert auroc(first_ok + first_bad, [1] * len(first_ok) + [0] * len(first_bad)) > 0.9


def test_hf_token_prm_reads_scores_at_step_tags(tmp_path: Path) -> None:
    import torch

    tiny_token_prm(tmp_path)
    scorer = HFRewardModel(str(tmp_path), head="token", step_tag="[STEP]", device="cpu")
    steps = ["1 + 2 = 3", "3 + 4 = 7", "7 + 1 = 8"]
    [values] = scorer.step_rewards([(QUESTION, steps)])
    model, tokenizer = scorer.load()
    enc = tokenizer(f"{QUESTION}\n" + "".join(s + "[STEP]" for s in steps), return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits[0].softmax(-1)[:, 1]
    tag = tokenizer.convert_tokens_to_ids("[STEP]")
    expected = [float(probs[i]) for i, t in enumerate(enc["input_ids"][0].tolist()) if t == tag]
    assert len(values) == 3 and values == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ConfigError, match="head='sequence'"):
        scorer.rewards([RewardInput("q", "s")])
    with pytest.raises(ConfigError, match="step_tag"):
        HFRewardModel(str(tmp_path), head="token")
