"""vLLM outputs as :class:`~tts.types.Completion` objects (sampling and beam search).

Usage per completion: ``prompt_tokens`` is the prompt length; ``cached_prompt_tokens`` is vLLM's
``RequestOutput.num_cached_tokens`` (prefix-cache hits); ``token_count`` the generated tokens.
Beam search reports the prompt as computed once, and applies stop strings to the finished beams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tts.backends._render import Rendered
from tts.backends.base import first_stop
from tts.sampling import SamplingParams
from tts.types import Completion, FinishReason

__all__ = ["OnlineBeamSearch", "Streamed", "beam_completions", "completions", "tokens_prompt"]

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


def completions(
    out: Any, pr: Rendered, p: SamplingParams, *, eos: int | None = None, beam: bool = False
) -> list[Completion]:
    """Completions of one ``RequestOutput`` (``beam``: of vLLM's online beam search, whose
    sequences keep the ``eos`` token)."""
    prompt_tokens = len(out.prompt_token_ids) if out.prompt_token_ids is not None else len(pr.ids)
    cached = 0 if beam else int(out.num_cached_tokens or 0)
    result = []
    outputs = sorted(out.outputs, key=lambda o: o.index)
    if beam:
        outputs = outputs[: p.n]
    for rank, o in enumerate(outputs):
        token_ids = list(o.token_ids)
        if beam and token_ids and token_ids[-1] == eos and not p.ignore_eos:
            token_ids.pop()  # vLLM's online beam search keeps the EOS token in token_ids
        lps, tops = _logprobs(o.logprobs, token_ids, p.logprobs)
        text, finish = o.text, _FINISH.get(o.finish_reason or "length", "stop")
        if beam:
            text, finish = _apply_stop(text, finish, p.stop)
        result.append(
            Completion(
                text=text,
                token_count=len(token_ids),
                finish_reason=finish,
                cumulative_logprob=o.cumulative_logprob,
                logprobs=lps,
                top_logprobs=tops,
                prompt_tokens=prompt_tokens,
                cached_prompt_tokens=cached,
                prompt_text=pr.text,
                index=rank if beam else o.index,
            )
        )
    return result


class Streamed:
    """One sample of a watched request (:mod:`tts.watch`) as its delta outputs arrive (a one-sample
    engine request, ``RequestOutputKind.DELTA``): every token the engine reports is kept, those
    after a cut too (generated before the abort reached the engine), so the sample is charged
    what the engine generated."""

    __slots__ = ("cached", "cumulative", "finish", "ids", "prompt_tokens", "rows", "text")

    def __init__(self, prompt_tokens: int) -> None:
        self.ids: list[int] = []
        self.text: list[str] = []
        self.rows: list[Any] = []
        self.finish: str | None = None
        self.cumulative: float | None = None
        self.cached = 0
        self.prompt_tokens = prompt_tokens

    def add(self, out: Any) -> list[float]:
        """Fold one delta ``RequestOutput`` in; the chosen-token logprobs of the tokens it brought."""
        o = out.outputs[0]
        ids = list(o.token_ids)
        self.ids += ids
        self.text.append(o.text)
        if o.finish_reason:
            self.finish = o.finish_reason
        if o.cumulative_logprob is not None:
            self.cumulative = o.cumulative_logprob
        if out.num_cached_tokens:
            self.cached = int(out.num_cached_tokens)
        if not o.logprobs:
            return []
        self.rows += o.logprobs
        return _logprobs(o.logprobs, ids, 0)[0] or []

    def completion(self, pr: Rendered, p: SamplingParams, index: int, cut: bool) -> Completion:
        lps, tops = _logprobs(self.rows, self.ids, p.logprobs)
        return Completion(
            text="".join(self.text),
            token_count=len(self.ids),
            finish_reason="cut" if cut else _FINISH.get(self.finish or "length", "stop"),
            cumulative_logprob=self.cumulative,
            logprobs=lps,
            top_logprobs=tops,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached,
            prompt_text=pr.text,
            index=index,
        )


def beam_completions(sequences: Sequence[Any], pr: Rendered, p: SamplingParams, tokenizer: Any) -> list[Completion]:
    """Completions of ``LLM.beam_search`` sequences (prompt and output tokens together)."""
    eos = tokenizer.eos_token_id
    out = []
    for rank, seq in enumerate(sequences[: p.n]):
        gen = list(seq.tokens[len(pr.ids) :])
        finish: FinishReason = "length"
        if gen and gen[-1] == eos and not p.ignore_eos:
            gen, finish = gen[:-1], "stop"
        text = tokenizer.decode(gen, skip_special_tokens=True)
        text, finish = _apply_stop(text, finish, p.stop)
        logprob_rows = list(seq.logprobs[: len(gen)]) if seq.logprobs else None
        lps, tops = _logprobs(logprob_rows, gen, p.logprobs)
        out.append(
            Completion(
                text=text,
                token_count=len(gen),
                finish_reason=finish,
                cumulative_logprob=seq.cum_logprob,
                logprobs=lps,
                top_logprobs=tops,
                prompt_tokens=len(pr.ids),
                cached_prompt_tokens=0,
                prompt_text=pr.text,
                index=rank,
            )
        )
    return out


class OnlineBeamSearch:
    """vLLM's own online beam search (the OpenAI server's), driven on an ``AsyncLLM``."""

    def __init__(self, engine: Any) -> None:
        from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin

        self._mixin = type("_Beam", (BeamSearchOnlineMixin,), {})()
        self._mixin.engine_client = engine
        self._mixin.renderer = engine.renderer

    def beam_search(self, prompt: Any, request_id: str, params: Any) -> Any:
        return self._mixin.beam_search(prompt, request_id, params)


def tokens_prompt(cls: Any, pr: Rendered) -> Any:
    return cls(prompt_token_ids=list(pr.ids), prompt=pr.text)


def _logprobs(
    rows: Any, token_ids: Sequence[int], k: int | None
) -> tuple[list[float] | None, list[dict[str, float]] | None]:
    if k is None or not rows:
        return None, None
    values: list[float] = []
    tops: list[dict[str, float]] | None = [] if k else None
    for row, tid in zip(rows, token_ids, strict=False):
        if row is None:
            continue
        chosen = row.get(tid)
        values.append(float(chosen.logprob) if chosen is not None else float("nan"))
        if tops is not None:
            ranked = sorted(row.items(), key=lambda kv: -kv[1].logprob)[: max(k, 1)]
            tops.append(
                {(lp.decoded_token if lp.decoded_token is not None else str(t)): float(lp.logprob) for t, lp in ranked}
            )
    return values, tops


def _apply_stop(text: str, finish: FinishReason, stop: Sequence[str]) -> tuple[str, FinishReason]:
    cut = first_stop(text, tuple(stop))
    if cut is not None:
        return text[:cut], "stop"
    return text, finish
