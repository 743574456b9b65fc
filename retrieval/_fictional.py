"""A fictional corpus no model can know: invented people, towns, years and trades, with distractors.

:func:`fictional_corpus` (deterministic by seed) makes, for each of ``people`` invented people, a
biography (the gold document: their birth town, birth year and trade), a namesake document (a
different person sharing the first or last name, with other facts, which mentions the gold person
by full name: it shares the question's words but not its answer) and one note per town listing
people who passed through. Each person gets one question, about one of the three facts, whose
answer is only in their biography. Tests measure recall on it; ``bench/rag_qa.py`` reads it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["FictionalCorpus", "fictional_corpus"]

_SYLLABLES = (  # noqa: SIM905
    "vor quen dar tes mal brin kor zeph ith ul ran sel thal mor vek lis ox pra gul fen dros wyn har bel cal nim oth "
    "rask tav yl"
).split()
_TRADES = (  # noqa: SIM905
    "glassblower cartographer beekeeper clockmaker ropemaker bookbinder lamplighter shipwright tanner weaver "
    "astronomer apothecary bellfounder mapmaker stonemason"
).split()
_FILLER = (
    "The archive keeps a short note about this life.",
    "Little else survives in the parish records.",
    "Letters from that period mention long winters.",
    "A portrait of uncertain date hangs in the town hall.",
    "Neighbours remembered a quiet and careful manner.",
)


@dataclass(frozen=True)
class FictionalCorpus:
    """Documents (``{"id", "text"}``), questions (``{"id", "question", "answer", "gold", "kind", "name"}``)."""

    documents: list[dict[str, str]]
    questions: list[dict[str, str]]


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def fictional_corpus(people: int = 300, towns: int = 60, seed: int = 0) -> FictionalCorpus:
    """The corpus (see the module docstring): ``people`` biographies and namesakes, ``towns`` notes."""
    rng = random.Random(seed)
    town_names: list[str] = []
    while len(town_names) < towns:
        name = _word(rng, 2) + rng.choice(("mere", "wick", "holt", "ford", "stead"))
        if name not in town_names:
            town_names.append(name)
    firsts = list(dict.fromkeys(_word(rng, 2) for _ in range(people * 3)))[: max(20, people // 3)]
    names: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(names) < people * 2:  # gold people, then their namesakes
        first, last = rng.choice(firsts), _word(rng, 3)
        if f"{first} {last}" not in seen:
            seen.add(f"{first} {last}")
            names.append((first, last))
    docs: list[dict[str, str]] = []
    questions: list[dict[str, str]] = []
    visitors: dict[str, list[str]] = {t: [] for t in town_names}
    for i in range(people):
        first, last = names[i]
        full = f"{first} {last}"
        town, year, trade = rng.choice(town_names), str(rng.randint(1650, 1950)), rng.choice(_TRADES)
        filler = " ".join(rng.sample(_FILLER, 2))
        docs.append(
            {
                "id": f"bio-{i}",
                "text": f"{full} was born in {year} in the town of {town}. {full} worked as {_a(trade)} "
                f"for most of a long life. {filler}",
            }
        )
        # the namesake shares the first name (or the last) and the question's words, not the answer
        other_first, other_last = names[people + i]
        other = f"{first} {other_last}" if i % 2 else f"{other_first} {last}"
        o_town, o_year, o_trade = rng.choice(town_names), str(rng.randint(1650, 1950)), rng.choice(_TRADES)
        docs.append(
            {
                "id": f"namesake-{i}",
                "text": f"{other}, often confused with {full}, was born in {o_year} in the town of {o_town} "
                f"and worked as {_a(o_trade)}. The two were not related.",
            }
        )
        visitors[rng.choice(town_names)].append(full)
        kind = ("town", "year", "trade")[i % 3]
        question = {
            "town": f"In which town was {full} born?",
            "year": f"In what year was {full} born?",
            "trade": f"What trade did {full} work in?",
        }[kind]
        answer = {"town": town, "year": year, "trade": trade}[kind]
        questions.append(
            {"id": f"q-{i}", "question": question, "answer": answer, "gold": f"bio-{i}", "kind": kind, "name": full}
        )
    for t, names_here in visitors.items():
        listed = ", ".join(names_here[:6]) or "no one of note"
        docs.append(
            {
                "id": f"town-{t}",
                "text": f"{t} is a small market town. Travellers recorded there include {listed}. "
                "Its fair is held every autumn.",
            }
        )
    rng.shuffle(docs)
    return FictionalCorpus(docs, questions)
