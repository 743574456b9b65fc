"""RAG QA in Python (the same objects as rag_qa.yaml): questions about a fictional corpus that no
model can know, answered closed-book (self-consistency, 5 samples) and with retrieved evidence (``rag``: a BM25 index,
strongest passages at both ends, numbered citations), with a paired bootstrap of the difference.

    python recipes/rag_qa.py --limit 20             # --backend fake for a quick check
"""

from __future__ import annotations

from pathlib import Path

import tts
from tts.baselines import baseline_accuracies
from tts.progress import execute
from tts.recipe import arguments, backend_of, print_table
from tts.retrieval import BM25Retriever
from tts.strategies.rag import RAG
from tts.task import Task

DATA = Path(__file__).resolve().parent / "data"
TEMPLATE = "Read the passages and answer the question.\n\n{evidence}\n\nQuestion: {question}"
INNER = {
    "name": "self_consistency",
    "n": 5,
    "proposer": {"name": "few_shot", "prompt": "direct", "sampling": {"temperature": 0.7, "max_tokens": 32}},
}
"""Any strategy reads the evidence; here a vote over 5 samples (closed book: the same vote, no evidence)."""


def build(limit: int | None = None, data_dir: str | None = None) -> tuple[tts.Dataset, Task, RAG]:
    fields = {"question": "question", "reference": "answer", "id": "id"}
    data = tts.load_dataset(str(DATA / "fictional_qa.jsonl"), limit=limit or 100, fields=fields)
    task = Task(
        name="fictional_qa",
        instruction="Answer with a name, a year or a trade only.",
        direct_template="{question}\n{instruction}",
        assistant_prefix="The answer is",
        answer_format="text",
    )
    return data, task, RAG(inner=INNER, k=5, order="ends", template=TEMPLATE)


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv, limit=20, concurrency=50)
    data, task, rag = build(args.limit, args.data_dir)
    retriever = BM25Retriever(docs=str(DATA / "fictional_docs.jsonl"), k=5)  # built once, then cached
    backend = tts.Scheduler(backend_of(args))
    closed = execute(
        backend, data, tts.build_strategy(INNER), task=task, label="closed book", concurrency=args.concurrency
    )
    with_rag = execute(
        backend, data, rag, task=task, label="rag (bm25, k=5)", concurrency=args.concurrency, retriever=retriever
    )
    retriever.close()
    print_table([closed, with_rag])
    c = tts.compare(closed, with_rag)
    print(f"closed-book accuracy: {c.accuracy_a:.3f}")
    print(f"rag accuracy: {c.accuracy_b:.3f}")
    for name, accuracy in baseline_accuracies(data.problems, task):
        print(f"baseline {name}: {accuracy:.3f}")
    print(f"difference: {c.difference:+.3f} (95% CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], {c.problems} problems)")


if __name__ == "__main__":
    main()
