"""Logits processors of the transformers backend, applied in a fixed order before generate's own
temperature / top-k / top-p / min-p warpers: raw-logprob recorder, penalties (vLLM's definitions),
(banned words and minimum length come from transformers), grammar (xgrammar matchers).

torch and xgrammar are passed in or imported inside, never at module import time.
"""

from __future__ import annotations

import re
from typing import Any

from tts.sampling import Constraint, SamplingParams

__all__ = ["GrammarProcessor", "LogprobRecorder", "PenaltyProcessor", "compile_constraint"]


def compile_constraint(compiler: Any, constraint: Constraint) -> Any:
    """The xgrammar grammar of ``constraint``."""
    if constraint.kind == "regex":
        return compiler.compile_regex(constraint.pattern)
    if constraint.kind == "choice":
        return compiler.compile_regex("(?:" + "|".join(re.escape(c) for c in constraint.choices) + ")")
    if constraint.kind == "json":
        if constraint.schema_ is None:
            return compiler.compile_builtin_json_grammar()
        return compiler.compile_json_schema(constraint.schema_)
    return compiler.compile_grammar(constraint.grammar)


class LogprobRecorder:
    """Records each chosen token's log-probability under the raw model logits.

    Placed first among the logits processors, it sees the unprocessed logits of step t and,
    at step t + 1, reads the token chosen at step t from ``input_ids``; only one step of
    log-probabilities is held at a time (``output_logits`` would keep every step).
    """

    def __init__(self, torch: Any, top_k: int) -> None:
        self._torch = torch
        self._top_k = top_k
        self._previous: Any = None
        self._chosen: list[Any] = []
        self._top: list[tuple[Any, Any]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        logprobs = self._torch.log_softmax(scores.float(), dim=-1)
        self._take(input_ids[:, -1])
        self._previous = logprobs
        if self._top_k:
            values, ids = logprobs.topk(self._top_k, dim=-1)
            self._top.append((values.cpu(), ids.cpu()))
        return scores

    def _take(self, tokens: Any) -> None:
        if self._previous is not None:
            self._chosen.append(self._previous.gather(1, tokens.view(-1, 1)).squeeze(1).cpu())
            self._previous = None

    def result(self, last_tokens: Any, tokenizer: Any) -> tuple[list[list[float]], list[list[dict[str, float]]] | None]:
        """Per-row logprob lists (and top-k dicts), given the tokens chosen at the last step."""
        self._take(last_tokens)
        torch = self._torch
        chosen = torch.stack(self._chosen, dim=1).tolist() if self._chosen else []
        if not self._top_k:
            return chosen, None
        values = torch.stack([v for v, _ in self._top], dim=1).tolist()
        ids = torch.stack([i for _, i in self._top], dim=1).tolist()
        vocab: dict[int, str] = {}
        top: list[list[dict[str, float]]] = []
        for row_values, row_ids in zip(values, ids, strict=True):
            steps = []
            for step_values, step_ids in zip(row_values, row_ids, strict=True):
                alternatives: dict[str, float] = {}
                for value, token in zip(step_values, step_ids, strict=True):
                    text = vocab.setdefault(token, tokenizer.decode([token]))
                    alternatives.setdefault(text, value)
                steps.append(alternatives)
            top.append(steps)
        return chosen, top


class PenaltyProcessor:
    """Repetition (multiplicative, on prompt and output tokens), presence and frequency
    (additive, on output tokens) penalties, vLLM's definitions; padding is ignored."""

    def __init__(self, torch: Any, input_ids: Any, mask: Any, params: SamplingParams) -> None:
        self._torch = torch
        self._start = input_ids.shape[1]
        self._prompt = (input_ids, mask)
        self._prompt_seen: Any = None
        self._repetition = params.repetition_penalty
        self._presence = params.presence_penalty
        self._frequency = params.frequency_penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self._torch
        generated = input_ids[:, self._start :]
        counts = torch.zeros_like(scores)
        if generated.shape[1]:
            counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        if self._repetition != 1.0:
            seen = (counts > 0) | self._seen_in_prompt(scores)
            penalised = torch.where(scores > 0, scores / self._repetition, scores * self._repetition)
            scores = torch.where(seen, penalised, scores)
        if self._presence:
            scores = scores - self._presence * (counts > 0).to(scores.dtype)
        if self._frequency:
            scores = scores - self._frequency * counts
        return scores

    def _seen_in_prompt(self, scores: Any) -> Any:
        if self._prompt_seen is None:
            ids, mask = self._prompt
            hits = self._torch.zeros_like(scores).scatter_add_(1, ids, mask.to(scores.dtype))
            self._prompt_seen = hits > 0
        return self._prompt_seen


class GrammarProcessor:
    """Masks tokens an xgrammar matcher rejects, one matcher per row.

    Unlike xgrammar's contrib processor it tolerates rows that ended for another reason (a stop
    string): their padding tokens are not grammar tokens, so such a row's matcher is retired.
    """

    def __init__(self, compiled: Any, rows: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self._matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self._live = [True] * rows
        self._bitmask = xgr.allocate_token_bitmask(rows, compiled.tokenizer_info.vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._started:
            last = input_ids[:, -1].tolist()
            for i, matcher in enumerate(self._matchers):
                if self._live[i] and not matcher.is_terminated() and not matcher.accept_token(last[i]):
                    self._live[i] = False
        self._started = True
        for i, matcher in enumerate(self._matchers):
            if self._live[i] and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._bitmask, i)
        device = scores.device
        if device.type == "cuda":
            self._xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(device))
            return scores
        scores = scores.cpu()
        self._xgr.apply_token_bitmask_inplace(scores, self._bitmask)
        return scores.to(device)
