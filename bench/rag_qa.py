"""RAG reading vs retrieval on the real ``hf`` backend (SmolLM2-135M-Instruct), fictional corpus.

100 questions whose answers exist only in the fictional corpus (:mod:`tts.retrieval._fictional`:
invented people, towns, years and trades, with namesake distractors). Greedy, at most 32 tokens.
Every condition but ``none`` runs the ``rag`` strategy (inner ``greedy``); they differ only in the
passages it is given:

- ``none``: the question alone (closed book: what the model knows, which is nothing here);
- ``gold``: the gold biography alone (reading);
- ``retrieved``: the top 3 of a hybrid index (all-MiniLM-L6-v2 + BM25), strongest at both ends
  (3 passages, as many as in the position conditions);
- ``gold@R/ORDER``: the gold passage at rank R (1, 2 or 3) among 2 fixed distractors (the
  namesake and the best non-gold hit of the index), shown in rank order (``rank``: the gold is
  first, in the middle or last) or reordered by the lost-in-the-middle ordering (``ends``: ranks
  1, 2, 3 move to positions 1, 3, 2).

With 3 passages, ``gold@2/ends`` shows exactly the prompts of ``gold@3/rank`` (gold last) and
``gold@3/ends`` those of ``gold@2/rank`` (gold in the middle): a condition whose prompts (passage
ids in the order shown, for every question) equal an earlier one's is not generated again but
takes that one's replies (greedy decoding: the same prompt gives the same reply), and says so.

The prompt: the short system message "Answer briefly." (in place of the chat template's default),
the numbered passages, the question and "Answer with a name, a year or a trade only."; the reply
stops at the end of its first sentence or line (``stop: ["\n", ". "]``), with no assistant prefix:
on 20 held-out questions with the gold passage the prefix "The answer is" made the model write
"The answer is: <a whole sentence>" and found the answer in 8 of 20 (no prefix: 82 of 100 in an
earlier run). Each passage is cut to its sentences that match the question (the rag strategy's
``sentences``; a biography keeps its two fact sentences and drops its filler), which makes the
prompts about a fifth shorter so the 100 questions fit the time.

Accuracy is reported two ways: ``exact`` (the task's short-answer extraction and equivalence) and
``contains`` (the normalised answer appears in the reply's first line), each with a 95% bootstrap
interval, beside the trivial baselines: the most frequent answer, and for the passage conditions a
reader that copies the asked fact from the first passage shown, or from a random passage.

    flock /tmp/h3/engine.lock python bench/rag_qa.py

The last line is ``gold_minus_none=<x>`` (contains accuracy, what reading the evidence buys).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import re
import time
from typing import Any

import tts
from tts.answers import normalize_answer
from tts.baselines import baseline_accuracies
from tts.retrieval import Index, Retriever, make_embedder
from tts.retrieval._fictional import fictional_corpus
from tts.retrieval.ordering import order_passages
from tts.stats import bootstrap_ci, paired_bootstrap
from tts.strategies.rag import RAG
from tts.task import Task

DISTRACTORS = 2
K = DISTRACTORS + 1
RANKS = (1, 2, 3)
TEMPLATE = "Read the passages and answer the question.\n\n{evidence}\n\nQuestion: {question}"
SENTENCES = 24
"""The rag strategy's ``sentences``: a passage over 24 words keeps its sentences that match the
question (a biography keeps its two fact sentences, about 24 words, and drops its filler)."""
TASK = Task(
    name="fictional",
    answer_format="text",
    system="Answer briefly.",
    direct_template="{question}\n{instruction}",
    instruction="Answer with a name, a year or a trade only.",
)
GREEDY = {
    "name": "greedy",
    "proposer": {
        "name": "few_shot",
        "prompt": "direct",
        "sampling": {"temperature": 0, "max_tokens": 32, "stop": ["\n", ". "]},
    },
}
FACT = {
    "town": re.compile(r"born in \d+ in the town of (\w+)"),
    "year": re.compile(r"born in (\d+)"),
    "trade": re.compile(r"worked as an? (\w+)"),
}


class Fixed:
    """A retriever that returns given passages for each question (in the given order, no scores)."""

    k = 5

    def __init__(self, passages: dict[str, list[dict[str, str]]]) -> None:
        self.passages = passages

    def retrieve(self, query: str, k: int = 5) -> list[dict[str, str]]:
        return self.passages[query][:k]


def fact(kind: str, text: str) -> str | None:
    m = FACT[kind].search(text)
    return m.group(1) if m else None


def contains(reply: str, reference: str) -> bool:
    first = next((ln for ln in reply.strip().splitlines() if ln.strip()), "")
    return f" {normalize_answer(reference)} " in f" {normalize_answer(first)} "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--embedder", default=None, help="default all-MiniLM-L6-v2; hash-384 for a quick check")
    parser.add_argument("--batch", type=int, default=100, help="hf: most sequences per generate call")
    parser.add_argument("--prefix", default="", help="the reply's assistant prefix (default none)")
    args = parser.parse_args()
    task = dataclasses.replace(TASK, assistant_prefix=args.prefix)
    start = time.perf_counter()
    corpus = fictional_corpus(people=300, towns=60, seed=0)
    docs = {d["id"]: d for d in corpus.documents}
    qs = random.Random(0).sample(corpus.questions, args.questions)
    problems = [tts.Problem(q["id"], q["question"], q["answer"], {"kind": q["kind"]}) for q in qs]
    index = Index.build(corpus.documents, kind="hybrid", embedder=make_embedder(args.embedder))
    retriever = Retriever(index, k=K)
    hits = {q["question"]: [p.id for p in index.search(q["question"], 8)] for q in qs}
    recall = sum(q["gold"] in hits[q["question"]][:K] for q in qs) / len(qs)

    def distractors(q: dict[str, str]) -> list[dict[str, str]]:
        namesake = q["gold"].replace("bio", "namesake")
        others = [i for i in hits[q["question"]] if i not in (q["gold"], namesake)][: DISTRACTORS - 1]
        return [docs[namesake], *(docs[i] for i in others)]

    conditions: dict[str, Any] = {"gold": Fixed({q["question"]: [docs[q["gold"]]] for q in qs})}
    conditions["retrieved"] = retriever
    for rank in RANKS:
        ranked = {}
        for q in qs:
            d = distractors(q)
            ranked[q["question"]] = [*d[: rank - 1], docs[q["gold"]], *d[rank - 1 :]]
        conditions[f"gold@{rank}/rank"] = ("rank", Fixed(ranked))
        conditions[f"gold@{rank}/ends"] = ("ends", Fixed(ranked))

    options = {"max_batch_sequences": args.batch, "length_grouping": True} if args.backend == "hf" else {}
    backend = tts.Scheduler(tts.make_backend(args.backend, **options))
    rows: list[tuple[str, list[float], list[float], list[list[str]]]] = []

    def record(name: str, report: Any, shown: list[list[str]]) -> None:
        exact = [float(bool(r.correct)) for r in report.results]
        replies = [r.candidates[r.winner].text if r.winner is not None else "" for r in report.results]
        cont = [float(contains(t, p.reference or "")) for t, p in zip(replies, problems, strict=True)]
        rows.append((name, exact, cont, shown))
        took = f"{time.perf_counter() - start:.0f}s"
        print(
            f"  {name}: exact {sum(exact) / len(exact):.2f}, contains {sum(cont) / len(cont):.2f} ({took} in); "
            f"e.g. {problems[0].reference!r} <- {replies[0]!r}",
            flush=True,
        )

    none = tts.run(tts.build_strategy(GREEDY), problems, backend, task=task, concurrency=100)
    record("none", none, [[] for _ in problems])
    ran: dict[tuple[tuple[str, ...], ...], tuple[str, Any]] = {}  # prompts shown -> (condition, report)
    for name, cond in conditions.items():
        order, source = cond if isinstance(cond, tuple) else ("ends", cond)
        key = None
        if isinstance(source, Fixed):
            key = tuple(tuple(p["id"] for p in order_passages(source.passages[q["question"]], order)) for q in qs)
        if key in ran:
            same, report = ran[key]
            print(f"  {name}: the prompts of {same}, its replies", flush=True)
        else:
            rag = RAG(inner=GREEDY, order=order, template=TEMPLATE, k=K, budget=800, sentences=SENTENCES)
            report = tts.run(rag, problems, backend, task=task, concurrency=100, retriever=source)
            if key is not None:
                ran[key] = (name, report)
        shown = [[docs[i]["text"] for i in r.meta.get("citations", [])] for r in report.results]
        record(name, report, shown)
    retriever.close()

    print(f"\nfictional QA, {len(problems)} questions, SmolLM2-135M-Instruct ({args.backend}), greedy, <= 32 tokens")
    print(
        f"system {task.system!r}, assistant prefix {task.assistant_prefix!r}, replies stop at the end of their "
        f"first sentence or line; passages cut to their question-matching sentences (sentences={SENTENCES})"
    )
    print(f"hybrid recall@{K} on these questions: {recall:.2f}")
    print(f"{'condition':<16} {'exact [95% CI]':<22} {'contains [95% CI]':<22} {'copy first':>10} {'copy random':>11}")
    for name, exact, cont, shown in rows:
        e, elo, ehi = bootstrap_ci(exact)
        c, clo, chi = bootstrap_ci(cont)
        first = [float(bool(s) and fact(q["kind"], s[0]) == q["answer"]) for q, s in zip(qs, shown, strict=True)]
        rand = [
            sum(fact(q["kind"], t) == q["answer"] for t in s) / len(s) if s else 0.0
            for q, s in zip(qs, shown, strict=True)
        ]
        copy_first = f"{sum(first) / len(first):.2f}" if any(shown) else "-"
        copy_rand = f"{sum(rand) / len(rand):.2f}" if any(shown) else "-"
        exact_ci, cont_ci = f"{e:.2f} [{elo:.2f}, {ehi:.2f}]", f"{c:.2f} [{clo:.2f}, {chi:.2f}]"
        print(f"{name:<16} {exact_ci:<22} {cont_ci:<22} {copy_first:>10} {copy_rand:>11}")
    for base, acc in baseline_accuracies(problems, task):
        print(f"baseline {base}: {acc:.2f}")
    by = {name: (exact, cont) for name, exact, cont, _ in rows}
    for rank in RANKS:
        diff, lo, hi = paired_bootstrap(by[f"gold@{rank}/rank"][1], by[f"gold@{rank}/ends"][1])
        print(f"ends minus rank order, gold at rank {rank} (contains): {diff:+.2f} [{lo:+.2f}, {hi:+.2f}]")
    diff, lo, hi = paired_bootstrap(by["none"][1], by["gold"][1])
    print(f"elapsed {time.perf_counter() - start:.0f}s")
    print(f"gold_minus_none={diff:.3f}")


if __name__ == "__main__":
    main()
