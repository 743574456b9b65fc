"""Prompting: editable templates, few-shot examples and their selection, least-to-most, diverse sampling.

Scripted / custom reply models pin every choice and backend call; the ``hf`` tests run the real
SmolLM2 backend on one problem with a few tokens and check the trace holds the rendered prompts.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from tts import ConfigError, FakeBackend, Problem, SamplingParams, Task, run, solve
from tts.prompts import (
    Example,
    FirstSelector,
    NearestSelector,
    PromptTemplate,
    RandomSelector,
    available_templates,
    clean_solution,
    fill,
    load_examples,
    load_template,
    resolve_prompt,
)
from tts.registry import REGISTRY
from tts.retrieval.embedders import SentenceTransformerEmbedder
from tts.strategies.few_shot import FewShot, FewShotProposer, FewShotProposerOptions
from tts.strategies.least_to_most import LeastToMost, parse_subquestions
from tts.types import Request

PROBLEM = Problem("q1", "What is 6 times 7?", "42")
POOL = [
    Example(question=f"What is {a} plus {b}?", answer=str(a + b), solution=f"{a}+{b}={a + b}. The answer is {a + b}.")
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
]


def user_text(request: Request) -> str:
    return request.messages()[-1]["content"]


# ------------------------------------------------------------------ templates


def test_shipped_templates_load_by_name_and_hold_their_placeholders() -> None:
    names = available_templates()
    assert {
        "step_by_step",
        "few_shot",
        "least_to_most_decompose",
        "least_to_most_solve",
        "usc_select",
        "refine_revise",
        "program_of_thought",
    } <= set(names)
    for name in names:
        template = load_template(name)
        assert template.name == name and "question" in template.placeholders()
    assert load_template("usc_select").placeholders() >= {"question", "responses"}
    assert len(load_template("few_shot").examples) == 2


def test_template_file_by_path_yaml_and_txt(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "system: Be terse.\nuser: |-\n  Q: {question}\n  {instruction} Use \\boxed{{}} or \\boxed{x}.\n"
        "instruction: Reply with a number.\nassistant_prefix: 'A:'\n",
        encoding="utf-8",
    )
    (tmp_path / "plain.txt").write_text("Solve: {question}\n", encoding="utf-8")
    t = load_template(str(tmp_path / "mine.yaml"))
    req = t.request(SamplingParams(temperature=0), question="2+2?", instruction="ignored: the template's")
    assert req.messages() == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Q: 2+2?\nReply with a number. Use \\boxed{{}} or \\boxed{x}."},
    ]
    assert req.assistant_prefix == "A:"
    plain = load_template(tmp_path / "plain.txt")
    assert plain.user == "Solve: {question}" and plain.name == "plain"
    assert plain.text(question="1+1") == "Solve: 1+1"


def test_template_errors_name_the_file_the_field_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_template(bad)
    bad.write_text("system: hi\nusr: '{question}'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"usr is not a known field; did you mean 'user'"):
        load_template(bad)
    with pytest.raises(ConfigError, match=r"shipped template \(.*few_shot.*\)"):
        resolve_prompt("no_such_template")
    with pytest.raises(ConfigError, match=r"user must contain \{responses\}"):
        resolve_prompt("step_by_step").require("question", "responses")


def test_fill_replaces_only_given_names() -> None:
    assert fill("{question} \\boxed{answer} {other}", question="Q{x}") == "Q{x} \\boxed{answer} {other}"


def test_cot_and_direct_resolve_to_the_task_templates_and_instruction() -> None:
    task = Task(
        instruction="Say only the number.",
        cot_template="{question} Reason. {instruction}",
        system="sys",
        examples=(("What is 1+1?", "1+1=2. The answer is 2."),),
    )
    t = resolve_prompt("cot", task)
    assert t.user == task.cot_template and t.system == "sys"
    assert t.examples == (Example(question="What is 1+1?", solution="1+1=2. The answer is 2."),)
    assert resolve_prompt("direct", task).user == task.direct_template
    assert resolve_prompt("Q: {question}").user == "Q: {question}"
    msgs = t.messages((), question="2+2?", instruction=task.instruction)
    assert [m.content for m in msgs] == ["sys", "2+2? Reason. Say only the number."]


def test_examples_as_turns_inline_and_raw_text() -> None:
    shots = POOL[:2]
    turns = PromptTemplate(user="{question}\n{instruction}", examples_as="turns")
    msgs = turns.messages(shots, question="What is 6 times 7?", instruction="End with the number.")
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[0].content == "What is 1 plus 2?\nEnd with the number."
    assert msgs[1].content == "1+2=3. The answer is 3."
    assert msgs[-1].content == "What is 6 times 7?\nEnd with the number."
    inline = PromptTemplate(
        user="Examples:\n{examples}Now: {question}", example="Q: {question}\nA: {answer}", separator="\n"
    )
    (only,) = inline.messages(shots, question="6*7?")
    assert only.content == "Examples:\nQ: What is 1 plus 2?\nA: 3\nQ: What is 3 plus 4?\nA: 7\nNow: 6*7?"
    assert inline.messages((), question="6*7?")[0].content == "Examples:\nNow: 6*7?"
    # raw text: turns become inline examples before the user text
    assert turns.text(shots[:1], question="6*7?", instruction="") == (
        "Question: What is 1 plus 2?\nAnswer: 1+2=3. The answer is 3.\n\n6*7?"
    )


# ------------------------------------------------------------------ examples and selection


def test_clean_solution_turns_gsm8k_marks_into_prose() -> None:
    raw = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert clean_solution(raw) == ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\nThe answer is 18.")


def test_examples_from_a_benchmark_and_from_a_jsonl_file(data_dir: Path, tmp_path: Path) -> None:
    gsm = load_examples("gsm8k", data_dir=data_dir, limit=3)
    assert len(gsm) == 3 and gsm[0].question.startswith("Janet")
    assert gsm[0].answer == "18" and gsm[0].solution is not None
    assert gsm[0].solution.endswith("The answer is 18.") and "<<" not in gsm[0].solution
    path = tmp_path / "shots.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"question": "Capital of Peru?", "answer": "Lima"},
                {"question": "2+2?", "solution": "2+2=4. The answer is 4."},
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    mine = load_examples(str(path))
    assert mine[0] == Example(question="Capital of Peru?", answer="Lima")
    assert mine[1].solution == "2+2=4. The answer is 4." and mine[1].worked == mine[1].solution
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no examples"):
        load_examples(str(empty))


def test_first_and_random_selection_skip_the_question_itself() -> None:
    question = POOL[0].question
    assert FirstSelector().select(question, POOL, 2, random.Random(0)) == POOL[1:3]
    a = RandomSelector().select(question, POOL, 3, random.Random(7))
    b = RandomSelector().select(question, POOL, 3, random.Random(7))
    c = RandomSelector().select(question, POOL, 3, random.Random(8))
    assert a == b and a != c and len(set(a)) == 3 and POOL[0] not in a
    assert len(RandomSelector().select("new?", POOL, 99, random.Random(0))) == len(POOL)


class WordEmbedder:
    """Bag-of-words vectors: questions sharing words are near. Counts its calls."""

    VOCAB = ("plus", "times", "capital", "france", "peru", "1", "2", "3", "4", "5", "6", "7", "8")

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def embed(self, texts):
        self.calls += 1
        self.texts += len(texts)
        return [[float(w in t.lower().replace("?", "").split()) + 1e-3 for w in self.VOCAB] for t in texts]


def test_nearest_selection_orders_closest_last_and_embeds_the_pool_once() -> None:
    pool = [
        Example(question="What is the capital of France?", answer="Paris"),
        Example(question="What is 3 plus 4?", answer="7"),
        Example(question="What is 2 times 3?", answer="6"),
        Example(question="What is the capital of Peru?", answer="Lima"),
    ]
    embedder = WordEmbedder()
    selector = NearestSelector(embedder)
    picked = selector.select("What is 2 times 4?", pool, 2, random.Random(0))
    assert [e.answer for e in picked] == ["7", "6"]  # the closest ("2 times") sits next to the question
    picked = selector.select("What is the capital of France?", pool, 1, random.Random(0))
    assert [e.answer for e in picked] == ["Lima"]  # never the question itself
    assert embedder.texts == len(pool) + 2  # the pool once, then one question per call


def test_nearest_without_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"pip install 'tts-scale\[retrieval\]'"):
        SentenceTransformerEmbedder().embed(["x"])


@pytest.mark.slow
def test_nearest_with_the_packaged_minilm_model() -> None:
    pool = [
        Example(question="How many legs do 3 spiders have?", answer="24"),
        Example(question="What is the capital of Japan?", answer="Tokyo"),
        Example(question="Which river flows through Paris?", answer="Seine"),
    ]
    picked = NearestSelector().select("What is the capital city of Italy?", pool, 1, random.Random(0))
    assert picked[0].answer == "Tokyo"


# ------------------------------------------------------------------ the few-shot proposer and strategy


def test_few_shot_prompt_holds_the_chosen_examples_as_turns() -> None:
    backend = FakeBackend.scripted(default="6*7=42. The answer is 42.")
    strategy = FewShot(proposer={"name": "few_shot", "prompt": "few_shot", "shots": 2, "select": "first"})
    result = asyncio.run(solve(strategy, PROBLEM, backend, task=Task(instruction="End with the number.")))
    assert result.answer == "42" and result.correct is True
    assert backend.requests == 1 and backend.completions_generated == 1
    (event,) = result.trace.events
    assert event.request is not None
    msgs = event.request.messages()
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == (
        "Tom has 3 apples and buys 4 more. How many apples does he have?\nEnd with the number."
    )
    assert msgs[-1]["content"] == "What is 6 times 7?\nEnd with the number."
    rendered = event.completions[0].prompt_text
    assert rendered is not None and "A box holds 6 eggs" in rendered and "What is 6 times 7?" in rendered
    assert event.to_dict()["rendered_prompt"] == rendered


def test_seeded_selection_is_one_prefix_for_all_problems_unseeded_varies_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps({"question": e.question, "answer": e.answer}) for e in POOL), encoding="utf-8")
    problems = [Problem(f"p{i}", f"What is {i} times 3?", str(3 * i)) for i in range(6)]

    def shots_per_problem(**kw: object) -> list[tuple[str, ...]]:
        backend = FakeBackend.scripted(default="The answer is 0.")
        proposer = {"name": "few_shot", "prompt": "few_shot", "examples": str(path), "shots": 2, **kw}
        report = run(FewShot(proposer=proposer), problems, backend, seed=3)
        out = []
        for r in report.results:
            req = r.trace.events[0].request
            assert req is not None
            out.append(tuple(m["content"] for m in req.messages()[:-1] if m["role"] == "user"))
        return out

    seeded = shots_per_problem(seed=11)
    assert len(set(seeded)) == 1 and len(seeded[0]) == 2
    unseeded = shots_per_problem()
    assert len(set(unseeded)) > 1  # drawn per problem from ctx.rng ...
    assert unseeded == shots_per_problem()  # ... reproducibly for the run's seed


def test_few_shot_votes_over_n_samples_in_one_request() -> None:
    backend = FakeBackend.scripted(
        by_prompt={"6 times 7": ["The answer is 42.", "The answer is 41.", "The answer is 42."]}
    )
    strategy = FewShot(n=3, proposer={"name": "few_shot", "shots": 0, "sampling": SamplingParams(temperature=0.8)})
    result = asyncio.run(solve(strategy, PROBLEM, backend))
    assert result.answer == "42" and result.meta["votes"] == {"42": 2, "41": 1}
    assert backend.requests == 1 and backend.completions_generated == 3
    with pytest.raises(ValueError, match=r"sampling\.temperature must be > 0 when n > 1"):
        FewShot(n=3)


def test_few_shot_is_registered_and_options_reject_typos() -> None:
    assert REGISTRY.get("strategy", "few_shot") is FewShot
    assert REGISTRY.get("strategy", "least_to_most") is LeastToMost
    with pytest.raises(ValueError, match="shot"):
        FewShot(shot=2)
    with pytest.raises(ValueError, match=r"temperatures must all be > 0"):
        FewShotProposerOptions(temperatures=[0.5, 0])


# ------------------------------------------------------------------ diverse sampling


class TemperatureModel:
    """A reply model whose answer is drawn from a softmax over fixed logits at the request's
    temperature, as a real model's first answer token would be: low temperatures repeat the mode,
    high ones spread out. Seeds are honoured through the rng the fake backend passes in."""

    LOGITS: ClassVar[dict[str, float]] = {"42": 3.0, "41": 1.5, "40": 1.0, "24": 0.5, "12": 0.0, "7": -0.5}

    def reply(self, request, prompt, index, rng):
        t = request.params.temperature
        weights = [math.exp(v / t) for v in self.LOGITS.values()]
        answer = rng.choices(list(self.LOGITS), weights)[0]
        text = f"The answer is {answer}."
        return text, len(text.split()), None


def distinct_rate(proposer: FewShotProposer, problems: list[Problem], n: int) -> tuple[float, FakeBackend]:
    backend = FakeBackend(TemperatureModel(), seed=5)

    class Probe:
        name = "probe"

        async def solve(self, problem, ctx):
            from tts.types import Result

            cands = await proposer.propose(problem, ctx, n)
            assert len(cands) == n
            return Result(problem, None, cands, meta={"distinct": len({c.key for c in cands})})

    report = run(Probe(), problems, backend, seed=0)
    return sum(r.meta["distinct"] for r in report.results) / (n * len(problems)), backend


def test_a_spread_of_temperatures_raises_the_rate_of_distinct_answers() -> None:
    problems = [Problem(f"d{i}", f"Question number {i}?") for i in range(40)]
    n = 8
    base = FewShotProposer(FewShotProposerOptions(shots=0, sampling=SamplingParams(temperature=0.5)))
    spread = FewShotProposer(
        FewShotProposerOptions(shots=0, sampling=SamplingParams(temperature=0.5), temperatures=(0.5, 1.0, 2.0, 4.0))
    )
    base_rate, base_backend = distinct_rate(base, problems, n)
    spread_rate, spread_backend = distinct_rate(spread, problems, n)
    assert spread_rate > base_rate + 0.1, (base_rate, spread_rate)
    # the spread costs requests, not samples: 4 temperatures -> 4 requests of 2 samples per problem
    assert base_backend.requests == len(problems) and spread_backend.requests == 4 * len(problems)
    assert base_backend.completions_generated == spread_backend.completions_generated == n * len(problems)


def test_temperature_plan_is_round_robin_and_seeds_are_distinct_and_reproducible() -> None:
    from tts.context import Context
    from tts.scheduler import Scheduler

    ctx = Context(Scheduler(FakeBackend()), seed=100)
    spread = FewShotProposer(FewShotProposerOptions(temperatures=(0.4, 0.8, 1.2)))
    assert [(p.temperature, p.n) for p in spread.plan(8, ctx)] == [(0.4, 3), (0.8, 3), (1.2, 2)]
    assert [(p.temperature, p.n) for p in spread.plan(2, ctx)] == [(0.4, 1), (0.8, 1)]
    seeded = FewShotProposer(FewShotProposerOptions(distinct_seeds=True, temperatures=(0.5, 1.0)))
    plan = seeded.plan(4, ctx)
    assert [(p.seed, p.temperature, p.n) for p in plan] == [(100, 0.5, 1), (101, 1.0, 1), (102, 0.5, 1), (103, 1.0, 1)]

    def answers() -> tuple[list[str | None], FakeBackend]:
        backend = FakeBackend(TemperatureModel())
        opts = FewShotProposerOptions(shots=0, distinct_seeds=True, sampling=SamplingParams(temperature=1.0))

        class Probe:
            name = "probe"

            async def solve(self, problem, ctx):
                from tts.types import Result

                cands = await FewShotProposer(opts).propose(problem, ctx, 6)
                return Result(problem, None, cands)

        result = asyncio.run(solve(Probe(), PROBLEM, backend, seed=9))
        assert [c.meta["seed"] for c in result.candidates] == list(range(9, 15))
        return [c.answer for c in result.candidates], backend

    first, backend = answers()
    assert backend.requests == 6  # seeded requests are never merged
    assert first == answers()[0]


# ------------------------------------------------------------------ least-to-most


DECOMPOSITION = "1. How many apples does Ann have after buying?\n2) How many does she give away?\n- junk line\n"


def test_least_to_most_solves_subquestions_in_order_feeding_answers_forward() -> None:
    backend = FakeBackend.scripted(
        by_prompt={
            "Break the following problem": DECOMPOSITION,
            "Q: How many apples does Ann have after buying?\nA: Answer": "She has 3 + 5 = 8. The answer is 8.",
            "Q: How many does she give away?\nA: Answer": "She gives away 2. The answer is 2.",
            "Q: junk line\nA: Answer": "Nothing to do. The answer is 0.",
            "Q: Ann has 3 apples": "8 - 2 = 6. The answer is 6.",
        }
    )
    problem = Problem("ann", "Ann has 3 apples, buys 5 and gives 2 away. How many are left?", "6")
    result = asyncio.run(solve(LeastToMost(), problem, backend))
    assert result.answer == "6" and result.correct is True
    assert result.meta["subquestions"] == [
        "How many apples does Ann have after buying?",
        "How many does she give away?",
        "junk line",
    ]
    assert backend.requests == 5  # one decomposition + three subquestions + the question itself
    prompts = [user_text(e.request) for e in result.trace.events if e.request is not None]
    assert len(prompts) == 5 and all(e.completions[0].prompt_text for e in result.trace.events)
    assert "Break the following problem" in prompts[0]
    assert "Q: " not in prompts[1].split("Problem:")[1].split("Q: How many apples")[0]  # nothing earlier
    assert "A: She has 3 + 5 = 8. The answer is 8." in prompts[2]  # earlier answers fed forward
    assert "A: She gives away 2. The answer is 2." in prompts[4]
    assert prompts[4].endswith("Q: " + problem.question + "\nA: Answer this question. " + Task().instruction)
    assert result.candidates[0].steps is not None and len(result.candidates[0].steps) == 4


def test_least_to_most_without_subquestions_solves_the_question_directly() -> None:
    backend = FakeBackend.scripted(
        by_prompt={"Break the following": "I cannot break this down.", "Q: What is 6 times 7?": "The answer is 42."}
    )
    result = asyncio.run(solve(LeastToMost(max_subquestions=2), PROBLEM, backend))
    assert result.answer == "42" and result.meta["subquestions"] == [] and backend.requests == 2


def test_parse_subquestions_formats_and_limit() -> None:
    text = "Subquestions:\n1. A?\n2) B?\nStep 3: C?\n* D?\nQuestion 5: E?\n1. A?\nplain text"
    assert parse_subquestions(text) == ["A?", "B?", "C?", "D?", "E?"]
    assert parse_subquestions(text, limit=2) == ["A?", "B?"]


# ------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def hf_backend():
    from tts.backends.hf import HFBackend

    return HFBackend(seed=0)


@pytest.mark.hf
def test_few_shot_and_least_to_most_on_the_real_backend(hf_backend, data_dir: Path) -> None:
    from tts.datasets import BUILTIN_TASKS

    problem = Problem("add", "What is 2 + 3?", "5")
    few = FewShot(
        proposer={
            "name": "few_shot",
            "prompt": "few_shot",
            "examples": "gsm8k",
            "data_dir": str(data_dir),
            "shots": 1,
            "select": "first",
            "sampling": SamplingParams(temperature=0, max_tokens=24),
        }
    )
    result = asyncio.run(solve(few, problem, hf_backend, task=BUILTIN_TASKS["add1"]))
    assert result.error is None and len(result.trace.events) == 1
    rendered = result.trace.to_dict()["events"][0]["rendered_prompt"]
    assert "Janet" in rendered and "What is 2 + 3?" in rendered and "<|im_start|>assistant" in rendered

    l2m = LeastToMost(
        max_subquestions=1,
        decompose_sampling=SamplingParams(temperature=0, max_tokens=32),
        sampling=SamplingParams(temperature=0, max_tokens=24),
    )
    result = asyncio.run(solve(l2m, problem, hf_backend))
    assert result.error is None
    events = result.trace.to_dict()["events"]
    assert 2 <= len(events) <= 3 and "Break the following problem" in events[0]["rendered_prompt"]
    assert all("What is 2 + 3?" in e["rendered_prompt"] for e in events)
    assert result.usage.completion_tokens == sum(c["token_count"] for e in events for c in e["completions"])
