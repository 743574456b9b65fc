"""Prompt templates users can edit, few-shot examples, and how examples are chosen for a question.

**Template files.** A template is a YAML file (or a ``.txt`` file holding just the user message)::

    name: few_shot
    description: Worked examples as earlier chat turns, then the question.
    system: You are a careful problem solver.           # optional system message
    user: "{question}\\nLet's think step by step. {instruction}"
    examples_as: turns         # few-shot examples as user/assistant turns ("inline": in the user text)
    example: "Question: {question}\\nAnswer: {solution}"  # one example, inline mode
    example_reply: "{solution}"                        # the assistant turn of one example, turns mode
    separator: "\\n\\n"
    instruction: null          # the answer format instruction; null: the task's (Task.instruction)
    assistant_prefix: ""       # text the reply must start with
    examples:                  # optional fixed examples shipped with the template
      - {question: "What is 2 + 3?", solution: "2 + 3 = 5. The answer is 5.", answer: "5"}

Placeholders are ``{name}``; only the names a caller supplies are replaced (``{question}``,
``{instruction}``, ``{examples}`` and the strategy's own, such as ``{responses}``), so LaTeX braces
such as ``\\boxed{}`` stay as written. ``{examples}`` is where inline examples go (followed by the
separator); a template without it gets them before its user text.

Shipped templates live in ``tts/prompts/`` and load by name (:func:`available_templates` lists
them); any other template loads by path. :func:`resolve_prompt` also accepts ``cot`` and
``direct`` (the task's own templates) and a literal template string holding ``{question}``.

**Examples** (:class:`Example`) come from a JSONL/CSV file with ``question`` and ``answer`` or
``solution`` fields, or from any dataset spec :func:`tts.datasets.load_dataset` reads
(:func:`load_examples`). A selector (:class:`ExampleSelector`, one method) picks ``k`` of them for
a question: the first k, k at random, or the k nearest by embedding (:class:`NearestSelector` over
any :class:`Embedder`; :class:`SentenceTransformerEmbedder` is the default one, from the
``retrieval`` extra).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from tts.errors import ConfigError
from tts.sampling import SamplingParams, format_validation_error
from tts.types import Message, Prompt, Request

if TYPE_CHECKING:  # a plugin package: loaded only when nearest-example selection is used
    from tts.retrieval.embedders import Embedder

__all__ = [
    "TEMPLATE_DIR",
    "Example",
    "ExampleSelector",
    "FirstSelector",
    "NearestSelector",
    "PromptTemplate",
    "RandomSelector",
    "available_templates",
    "clean_solution",
    "fill",
    "load_examples",
    "load_template",
    "make_selector",
    "resolve_prompt",
]

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "prompts"
"""Where the shipped templates live (package data)."""

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill(template: str, **values: object) -> str:
    """Replace ``{name}`` for the names given; every other brace stays as written (one pass, so
    inserted values are never re-scanned)."""
    parts = _parts(template)
    if len(parts) == 1:  # no placeholder
        return template
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a placeholder's name
            value = values.get(part)
            out.append("{" + part + "}" if value is None else str(value))
        else:
            out.append(part)
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _parts(template: str) -> tuple[str, ...]:
    """``template`` split at its placeholders: text, name, text, name, ..., text (read once per
    template: prompts are filled for every request)."""
    return tuple(_PLACEHOLDER.split(template))


class Example(BaseModel):
    """One in-context example: a question and its worked solution and/or final answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str
    answer: str | None = None
    solution: str | None = None

    @property
    def worked(self) -> str:
        """What the example shows as its reply: the solution, else the answer."""
        return self.solution or self.answer or ""


class PromptTemplate(BaseModel):
    """A prompt: system message, user message, few-shot layout and answer instruction (see the
    module docstring for the file format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str = ""
    system: str | None = None
    """System message (``None``: none)."""
    user: str
    """The user message; ``{question}`` and ``{instruction}`` are filled in."""
    examples_as: Literal["inline", "turns"] = "inline"
    """Few-shot layout: ``inline`` inside the user text, ``turns`` as earlier user/assistant turns
    (raw-text prompts always use ``inline``)."""
    example: str = "Question: {question}\nAnswer: {solution}"
    """One inline example (``{question}``, ``{solution}``, ``{answer}``)."""
    example_reply: str = "{solution}"
    """The assistant turn of one example in ``turns`` layout."""
    separator: str = "\n\n"
    """Between inline examples, and between the examples and the user text."""
    instruction: str | None = None
    """Answer format instruction; ``None`` uses the task's (``Task.instruction``)."""
    assistant_prefix: str = ""
    """Text the reply starts with (generation continues from it)."""
    examples: tuple[Example, ...] = ()
    """Fixed examples shipped with the template (used when no example source is given)."""

    def placeholders(self) -> set[str]:
        """The ``{name}`` placeholders of the user message."""
        return set(_parts(self.user)[1::2])

    def require(self, *names: str) -> PromptTemplate:
        """This template, or a ConfigError naming the placeholder its user message lacks."""
        missing = [n for n in names if n not in self.placeholders()]
        if missing:
            label = self.name or "template"
            raise ConfigError(
                f"prompt template {label!r}: user must contain {{{missing[0]}}}; add it "
                f"(needs {', '.join('{' + n + '}' for n in names)})."
            )
        return self

    def _values(self, values: Mapping[str, object]) -> dict[str, object]:
        out = dict(values)
        if self.instruction is not None:
            out["instruction"] = self.instruction
        out.setdefault("instruction", "")
        return out

    def _example_block(self, examples: Sequence[Example], instruction: object) -> str:
        return self.separator.join(
            fill(self.example, question=e.question, answer=e.answer or "", solution=e.worked, instruction=instruction)
            for e in examples
        )

    def _user(self, values: dict[str, object], inline: Sequence[Example]) -> str:
        block = self._example_block(inline, values["instruction"]) if inline else ""
        if "examples" in self.placeholders():
            return fill(self.user, **values, examples=block + self.separator if block else "").strip()
        text = fill(self.user, **values).strip()
        return block + self.separator + text if block else text

    def messages(self, examples: Sequence[Example] = (), **values: object) -> tuple[Message, ...]:
        """Chat messages: system, the examples (as turns or inline), then the user message."""
        vals = self._values(values)
        out: list[Message] = []
        if self.system:
            out.append(Message("system", fill(self.system, **vals)))
        inline: Sequence[Example] = examples
        if self.examples_as == "turns" and examples:
            inline = ()
            for e in examples:
                ex_vals = {**vals, "question": e.question, "examples": ""}
                out.append(Message("user", fill(self.user, **ex_vals).strip()))
                reply = fill(self.example_reply, question=e.question, answer=e.answer or "", solution=e.worked)
                out.append(Message("assistant", reply))
        out.append(Message("user", self._user(vals, inline)))
        return tuple(out)

    def text(self, examples: Sequence[Example] = (), **values: object) -> str:
        """The prompt as raw text: the system message, then the inline examples and user message."""
        vals = self._values(values)
        body = self._user(vals, examples)
        return fill(self.system, **vals) + "\n\n" + body if self.system else body

    def prompt(self, examples: Sequence[Example] = (), *, chat: bool = True, **values: object) -> Prompt:
        return self.messages(examples, **values) if chat else self.text(examples, **values)

    def request(
        self,
        params: SamplingParams,
        examples: Sequence[Example] = (),
        *,
        chat: bool = True,
        priority: int = 0,
        prefix: str = "",
        **values: object,
    ) -> Request:
        """A request for this template filled with ``values`` (``question``, ``instruction``, ...),
        sent with ``prefix`` (the task's assistant prefix) followed by the template's own."""
        return Request(
            self.prompt(examples, chat=chat, **values),
            params,
            priority,
            prefix + fill(self.assistant_prefix, **self._values(values)),
        )


# ------------------------------------------------------------------ loading templates


def available_templates() -> list[str]:
    """Names of the shipped templates (files in :data:`TEMPLATE_DIR`)."""
    if not TEMPLATE_DIR.is_dir():
        return []
    return sorted(p.stem for p in TEMPLATE_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".txt"))


def parse_template(text: str, *, fmt: Literal["yaml", "txt"] = "yaml", source: str = "template") -> PromptTemplate:
    """A template from file contents: YAML fields, or a ``.txt`` file's text as the user message."""
    if fmt == "txt":
        return PromptTemplate(name=Path(source).stem, user=text.rstrip("\n"))
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{source}{where}: invalid YAML ({problem}); fix the file.") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a prompt template must be a YAML mapping with at least 'user', got {type(data).__name__}."
        )
    data.setdefault("name", Path(source).stem)
    try:
        return PromptTemplate(**data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc, model=PromptTemplate)}") from None


def load_template(spec: str | Path) -> PromptTemplate:
    """A shipped template by name (``few_shot``), or any template file by path (``.yaml``/``.txt``)."""
    path = Path(spec)
    looks_like_path = isinstance(spec, Path) or "/" in str(spec) or path.suffix in (".yaml", ".yml", ".txt")
    if not looks_like_path:
        for suffix in (".yaml", ".yml", ".txt"):
            candidate = TEMPLATE_DIR / f"{spec}{suffix}"
            if candidate.is_file():
                path = candidate
                break
        else:
            names = ", ".join(available_templates())
            raise ConfigError(
                f"prompt must be cot, direct, a shipped template ({names}), "
                f"a .yaml/.txt path or a template with {{question}}, got {str(spec)!r}."
            )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"prompt template {str(spec)!r} cannot be read ({exc.strerror}); check the path.") from None
    return parse_template(text, fmt="txt" if path.suffix == ".txt" else "yaml", source=str(path))


def resolve_prompt(spec: str, task: Any = None) -> PromptTemplate:
    """The template ``spec`` names: ``cot``/``direct`` (the task's own templates and its
    examples), a literal template holding ``{question}``, a shipped name, or a file path."""
    if spec in ("cot", "direct"):
        if task is None:
            from tts.task import Task

            task = Task()
        examples = tuple(Example(question=q, solution=a) for q, a in getattr(task, "examples", ()))
        return PromptTemplate(name=spec, system=task.system, user=task.template(spec), examples=examples)
    if "{question}" in spec and Path(spec).suffix not in (".yaml", ".yml", ".txt"):
        return PromptTemplate(name="literal", user=spec)
    return load_template(spec)


# ------------------------------------------------------------------ examples

_CALC = re.compile(r"<<[^>]*>>")
_HASHES = re.compile(r"\n?#### *(.+?)\s*$", re.DOTALL)


def clean_solution(text: str) -> str:
    """A benchmark solution as a model should write it: GSM8K's calculator marks ``<<2*3=6>>``
    dropped and its ``#### 18`` line turned into "The answer is 18."."""
    text = _CALC.sub("", text)
    return _HASHES.sub(lambda m: f"\nThe answer is {m.group(1).strip()}.", text).strip()


def load_examples(
    source: str, *, split: str = "train", data_dir: str | Path | None = None, limit: int | None = None
) -> list[Example]:
    """Examples from a JSONL/CSV file (``question`` plus ``answer`` and/or ``solution``) or any
    dataset spec of :func:`tts.datasets.load_dataset` (``gsm8k``, ``math500``, a hub dataset, ...);
    ``split`` is the hub split to read (local benchmark files have one split)."""
    from tts.datasets import load_dataset

    data = load_dataset(source, limit=limit, data_dir=data_dir, split=split)
    out = []
    for p in data.problems:
        solution = p.metadata.get("solution")
        out.append(
            Example(
                question=p.question, answer=p.reference, solution=clean_solution(str(solution)) if solution else None
            )
        )
    if not out:
        raise ConfigError(f"examples source {source!r} holds no examples; point examples at a non-empty file.")
    return out


# ------------------------------------------------------------------ selection


@runtime_checkable
class ExampleSelector(Protocol):
    """Picks ``k`` examples for a question from a pool (the question itself is never picked)."""

    def select(self, question: str, pool: Sequence[Example], k: int, rng: random.Random) -> list[Example]: ...


def _others(question: str, pool: Sequence[Example]) -> list[Example]:
    q = question.strip()
    return [e for e in pool if e.question.strip() != q]


class FirstSelector:
    """The first ``k`` examples of the pool: one fixed prompt prefix for every question."""

    def select(self, question: str, pool: Sequence[Example], k: int, rng: random.Random) -> list[Example]:
        return _others(question, pool)[:k]


class RandomSelector:
    """``k`` examples drawn at random (without replacement) with the given generator."""

    def select(self, question: str, pool: Sequence[Example], k: int, rng: random.Random) -> list[Example]:
        others = _others(question, pool)
        return rng.sample(others, min(k, len(others)))


class NearestSelector:
    """The ``k`` examples whose questions are nearest the question by cosine similarity of their
    embeddings, ordered from the least to the most similar (the closest sits next to the question).
    The pool's embeddings are computed once per pool."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        if embedder is None:
            from tts.retrieval.embedders import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder()
        self.embedder: Embedder = embedder
        self._lock = threading.Lock()
        self._cache: tuple[tuple[Example, ...], Any] | None = None

    def _matrix(self, pool: tuple[Example, ...]) -> Any:
        import numpy as np

        with self._lock:
            if self._cache is None or self._cache[0] != pool:
                m = np.asarray(self.embedder.embed([e.question for e in pool]), dtype=np.float32)
                m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
                self._cache = (pool, m)
            return self._cache[1]

    def select(self, question: str, pool: Sequence[Example], k: int, rng: random.Random) -> list[Example]:
        import numpy as np

        pool = tuple(pool)
        if not pool or k <= 0:
            return []
        matrix = self._matrix(pool)
        q = np.asarray(self.embedder.embed([question]), dtype=np.float32)[0]
        q /= max(float(np.linalg.norm(q)), 1e-12)
        sims = matrix @ q
        same = question.strip()
        ranked = [int(i) for i in np.argsort(-sims, kind="stable")]
        order = [i for i in ranked if pool[i].question.strip() != same][:k]
        return [pool[i] for i in reversed(order)]


SelectKind = Literal["first", "random", "nearest"]


def make_selector(kind: SelectKind, embedder: Embedder | None = None) -> ExampleSelector:
    """The selector for ``first``, ``random`` or ``nearest`` (with ``embedder`` or the default)."""
    if kind == "first":
        return FirstSelector()
    if kind == "random":
        return RandomSelector()
    if kind == "nearest":
        return NearestSelector(embedder)
    raise ConfigError(f"select must be one of first, random, nearest, got {kind!r}.")
