"""The ``rag`` strategy on the fake backend over a hybrid index of the fictional corpus: evidence
numbered and ordered in the prompt, citations resolved to documents, passages and scores in the
trace, query rewriting and multi-hop (each hop's retrieval recorded), any inner strategy, and a
pipeline with a ``retriever`` section run end to end."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, Problem, run, solve
from tts.config import build_pipeline, parse_pipeline
from tts.errors import ConfigError
from tts.retrieval import HashEmbedder, Index, Retriever, ends_first
from tts.retrieval._fictional import fictional_corpus
from tts.strategies.rag import RAG
from tts.task import Task

CORPUS = fictional_corpus(people=120, towns=30, seed=1)
TASK = Task(name="fictional", answer_format="text", direct_template="{question}", instruction="")
INDEX = Index.build(CORPUS.documents, kind="hybrid", embedder=HashEmbedder(256))


class Recording(Retriever):
    """The real retriever, remembering each query."""

    def __init__(self, index: Index, k: int = 5) -> None:
        super().__init__(index, k=k)
        self.queries: list[str] = []

    def search(self, query: str, k: int | None = None) -> list[Any]:
        self.queries.append(query)
        return super().search(query, k)


def reader(prompt: str) -> str:
    """A fake reader: the birth town in the numbered passage that names the asked person first."""
    asked = re.search(r"Question: In which town was (.+?) born\?", prompt)
    if asked is None:
        return "I do not know."
    for line in prompt.splitlines():
        m = re.match(rf"\[(\d+)\] {re.escape(asked.group(1))} was born in \d+ in the town of (\w+)", line)
        if m:
            return f"{m.group(2)} [{m.group(1)}]"
    return "I do not know."


FOUND = [  # town questions whose biography the index ranks in the top 5 (most of them)
    q for q in CORPUS.questions if q["kind"] == "town" and q["gold"] in [p.id for p in INDEX.search(q["question"], 5)]
]


def town_question(i: int = 0) -> tuple[Problem, dict[str, str]]:
    q = FOUND[i]
    return Problem(q["id"], q["question"], q["answer"]), q


def events(result: Any, kind: str) -> list[Any]:
    return [e for e in result.trace.events if e.kind == kind]


def test_evidence_is_numbered_ordered_cited_and_traced() -> None:
    problem, q = town_question()
    retriever = Recording(INDEX)
    backend = FakeBackend.scripted(default=reader)
    result = asyncio.run(solve(RAG(), problem, backend, task=TASK, retriever=retriever))
    assert retriever.queries == [problem.question]
    ranked = [p.id for p in INDEX.search(problem.question, 5)]
    assert result.meta["citations"] == ends_first(ranked)  # strongest at both ends
    assert result.answer == q["answer"] and result.correct is True
    assert result.meta["cited"] == [q["gold"]]
    prompt = events(result, "generate")[0].request.describe()["prompt"][-1]["content"]
    assert prompt.startswith("Use the numbered passages to answer.\n\n[1] ")
    assert [line[:3] for line in prompt.splitlines()[2:7]] == ["[1]", "[2]", "[3]", "[4]", "[5]"]
    assert prompt.endswith(f"Question: {problem.question}")
    (hop,) = events(result, "rag")
    note = json.loads(hop.note)
    assert [p["id"] for p in note["passages"]] == ranked and all(p["score"] > 0 for p in note["passages"])
    assert len(events(result, "retrieve")) == 1
    assert [p["id"] for p in result.meta["retrieval"][0]["passages"]] == ranked
    assert result.problem is problem and result.usage.calls == 1 and backend.requests == 1


def test_rank_order_and_budget_options() -> None:
    problem, _ = town_question(1)
    backend = FakeBackend.scripted(default=reader)
    strategy = RAG(order="rank", budget=60, k=4)
    result = asyncio.run(solve(strategy, problem, backend, task=TASK, retriever=Retriever(INDEX)))
    ranked = [p.id for p in INDEX.search(problem.question, 4)]
    shown = result.meta["citations"]
    assert shown == ranked[: len(shown)] and 1 < len(shown) < 4  # about 40 tokens a passage: 60 fit in 2
    prompt = events(result, "generate")[0].request.describe()["prompt"][-1]["content"]
    evidence = prompt.split("\n\n")[1]
    assert sum(len(line.split()) - 1 for line in evidence.splitlines()) == 60


def test_query_rewriting_searches_the_written_query() -> None:
    problem, q = town_question(2)
    backend = FakeBackend.scripted(
        by_prompt={"Write a short search query": f'"{q["name"]} birthplace"'}, default=reader
    )
    retriever = Recording(INDEX)
    result = asyncio.run(solve(RAG(rewrite=True), problem, backend, task=TASK, retriever=retriever))
    assert retriever.queries == [f"{q['name']} birthplace"]
    assert result.meta["retrieval"][0]["query"] == f"{q['name']} birthplace"
    assert backend.requests == 2 and result.usage.calls == 2 and result.answer == q["answer"]


def test_multi_hop_follows_up_and_stops_on_none() -> None:
    problem, _ = town_question(3)
    follow = "Praranstead market town"
    backend = FakeBackend.scripted(by_prompt={"Passages found so far": [follow, "NONE"]}, default=reader)
    retriever = Recording(INDEX)
    result = asyncio.run(solve(RAG(hops=3), problem, backend, task=TASK, retriever=retriever))
    assert retriever.queries == [problem.question, follow]  # the third hop was declined
    hops = [json.loads(e.note) for e in events(result, "rag")]
    assert [(h["hop"], h["query"]) for h in hops] == [(1, problem.question), (2, follow)]
    assert [h["query"] for h in result.meta["retrieval"]] == [problem.question, follow]
    assert backend.requests == 3  # two follow-up prompts and the answer
    assert len(set(result.meta["citations"])) == len(result.meta["citations"]) >= 5  # both hops' passages, once each


def test_any_inner_strategy_and_python_objects() -> None:
    problem, q = town_question(4)
    backend = FakeBackend.scripted(default=reader)
    inner = {"name": "self_consistency", "n": 3, "proposer": {"name": "few_shot", "sampling": {"temperature": 0.7}}}
    result = asyncio.run(solve(RAG(inner=inner), problem, backend, task=TASK, retriever=Retriever(INDEX)))
    assert backend.completions_generated == 3 and result.meta["votes"] == {q["answer"].lower(): 3}
    from tts.strategies.cot import CoT

    rag = RAG(inner=CoT())
    assert isinstance(rag.inner, CoT)


def test_options_are_validated_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"template must contain \{evidence\}"):
        RAG(template="{question}")
    with pytest.raises(ConfigError, match="hops must be <= 5, got 9"):
        RAG(hops=9)
    failed = asyncio.run(solve(RAG(), town_question()[0], FakeBackend.scripted(default="x"), task=TASK))
    assert failed.status == "failed" and failed.error is not None and "ctx.retrieve needs a retriever" in failed.error


def test_a_run_and_a_pipeline_with_a_retriever_section(tmp_path: Path) -> None:
    towns = [q for q in CORPUS.questions if q["kind"] == "town"]
    problems = [Problem(q["id"], q["question"], q["answer"]) for q in towns]
    report = run(RAG(), problems, FakeBackend.scripted(default=reader), task=TASK, retriever=Retriever(INDEX))
    assert report.accuracy == len(FOUND) / len(towns) >= 0.9 and all(r.ok for r in report.results)
    INDEX.save(tmp_path / "ix")
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"id": p.id, "question": p.question, "answer": p.reference}) + "\n" for p in problems)
    )
    spec = parse_pipeline(
        {
            "backend": {"name": "fake"},
            "dataset": {"name": str(data)},
            "task": {"answer_format": "text", "direct_template": "{question}", "instruction": ""},
            "strategy": {"name": "rag", "k": 5},
            "retriever": {"name": "hybrid", "index": str(tmp_path / "ix"), "k": 5},
        }
    )
    pipeline = build_pipeline(spec, backend=FakeBackend.scripted(default=reader))
    assert pipeline.run().accuracy == report.accuracy


def test_slow_retrieval_does_not_hold_up_other_problems() -> None:
    """Four problems, each retrieval blocking 0.3 s in its thread: they overlap (the event loop and
    the scheduler keep serving), so the run takes about one retrieval, not four."""
    import time

    class Slow(Retriever):
        def search(self, query: str, k: int | None = None) -> list[Any]:
            time.sleep(0.3)
            return super().search(query, k)

    problems = [Problem(q["id"], q["question"], q["answer"]) for q in FOUND[:4]]
    start = time.perf_counter()
    report = run(RAG(), problems, FakeBackend.scripted(default=reader), task=TASK, retriever=Slow(INDEX, workers=4))
    assert time.perf_counter() - start < 0.9 and report.accuracy == 1.0


def test_cli_run_loads_the_pipelines_index_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tts-scale run`` with a ``retriever`` section builds the retriever once (one index load)
    and the run reads through it."""
    from typer.testing import CliRunner

    from tts.cli import app
    from tts.retrieval import index as index_module

    INDEX.save(tmp_path / "ix")
    towns = [q for q in CORPUS.questions if q["kind"] == "town"][:6]
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"id": q["id"], "question": q["question"], "answer": q["answer"]}) + "\n" for q in towns)
    )
    (tmp_path / "p.yaml").write_text(
        f"backend: {{name: fake, default: 'I do not know.'}}\n"
        f"dataset: {{name: {data}}}\n"
        "task: {answer_format: text, direct_template: '{question}', instruction: ''}\n"
        "strategy: {name: rag, k: 3}\n"
        f"retriever: {{name: hybrid, index: {tmp_path / 'ix'}, k: 3}}\n"
    )
    loads: list[Path] = []
    searches: list[str] = []
    load, search = index_module.Index.load, index_module.Index.search

    def counting_load(folder: Any, *args: Any, **kw: Any) -> Any:
        loads.append(Path(folder))
        return load(folder, *args, **kw)

    def counting_search(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        searches.append(query)
        return search(self, query, *args, **kw)

    monkeypatch.setattr(index_module.Index, "load", staticmethod(counting_load))
    monkeypatch.setattr(index_module.Index, "search", counting_search)
    res = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml")])
    assert res.exit_code == 0, res.output
    assert loads == [tmp_path / "ix"]  # once: the pipeline's retriever is the one the run uses
    assert sorted(searches) == sorted(q["question"] for q in towns)
