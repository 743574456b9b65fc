"""Self-consistency: a vote over n sampled chains of an inner proposer (Wang et al., 2023).

By default, a plain majority over canonical answer keys (ties go to the answer sampled first) from
one n-sampling request of the ``few_shot`` proposer (zero shots: the task's prompt). The proposer
is a component: ``proposer: {name: few_shot, shots: 3}``, ``{name: program_of_thought}`` (outputs
of executed programs vote) or ``{name: thinking, max_think: 512}``; every option below applies to
any of them. Options add:

- weighted votes (``weight``): by verifier score, by softmax of the sequence log-probability, by
  the geometric-mean token probability (``exp`` of the mean token logprob) or by ``exp`` of a
  DeepConf confidence;
- confidence filtering (``keep``, DeepConf, Fu et al., 2025): only the top fraction of chains by
  confidence (mean token logprob or lowest group mean) vote. Offline: after all chains are drawn.
  Online (``online=True``): the first ``warmup`` chains set the confidence bar and later chains
  below it are dropped as they arrive. With ``cut=True`` (DeepConf's early termination; needs
  ``confidence: lowest_group`` and a streaming backend: vLLM ``mode: async``, OpenAI
  ``stream: true``, the fake) a later chain is cut mid-generation as soon as its running group
  confidence falls below the bar (:class:`~tts.strategies._watch.GroupConfidenceCut`): the same
  chains are dropped as without ``cut`` (the same vote), but a dropped chain is charged only the
  tokens generated until its cut. Cut chains do not vote; ``meta["cut"]`` counts them;
- early stopping (``stop``; rules in :mod:`tts.strategies._stop`): chains are drawn in draws
  of ``window`` samples and drawing stops when the rule says the vote is settled (or, for a count
  vote, when the leader is further ahead than the samples left); requests still
  queued or in flight are cancelled, and only generated tokens are counted. Stop rules count votes
  of the kept chains (``consensus`` weighs them by ``weight`` when it is per chain:
  ``mean_logprob`` or ``confidence``). ``stop: auto`` is the documented adaptive setting: the
  ``outcome`` rule (stop when more samples will not change the answer, settled or hopeless) with
  the parameters ``bench/adaptive.py`` validates and look-ahead sized from the engine
  (:data:`~tts.strategies._stop.AUTO`); options given beside it win. The default stays fixed n;
- online allocation across the run's problems (``budget``, :mod:`tts.strategies._allocation`):
  ``pilot`` samples per problem, then the run's remaining budget goes, window by window, where
  the vote's posterior says an extra sample changes the most answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from tts.context import Context
from tts.errors import parse_options
from tts.sampling import Count, CountOrZero, TokenCount
from tts.strategies import _select
from tts.strategies._allocation import allocator_for
from tts.strategies._proposer import SampledOptions, build_proposer, check_sampled
from tts.strategies._scoring import VerifierSpec, build_verifiers, resolve_verifiers, score_candidates
from tts.strategies._select import Tally, decided
from tts.strategies._stop import AUTO, StopRule, auto_lookahead, sample_windows, should_stop
from tts.strategies._watch import GroupConfidenceCut
from tts.types import Candidate, Problem, Result

__all__ = ["SelfConsistency", "SelfConsistencyOptions"]

Weight = Literal["none", "score", "seq_logprob", "mean_logprob", "confidence"]
_NEEDS_LOGPROBS = ("seq_logprob", "mean_logprob", "confidence")


class SelfConsistencyOptions(SampledOptions):
    n: Count = 8
    """Number of sampled chains (the most drawn when a stop rule ends sampling early)."""
    weight: Weight = "none"
    """What a chain's vote weighs: 1, its verifier score, softmax of its sequence logprob, exp of its
    mean token logprob, or exp of its confidence. Logprob weights turn on ``sampling.logprobs``."""
    weight_temperature: float = Field(default=1.0, gt=0)
    """Softmax temperature of ``seq_logprob`` weights."""
    verifiers: tuple[VerifierSpec, ...] = ()
    """For ``weight="score"``: verifier components ``{name, weight, ...options}`` (else the
    constructor's ``scorers``, else the context's verifier); several are summed with their weights."""
    confidence: _select.ConfidenceKind = "mean"
    """Chain confidence: ``mean`` token logprob or ``lowest_group`` (lowest mean over ``group`` tokens)."""
    group: TokenCount = 2048
    keep: float = Field(default=1.0, gt=0, le=1)
    """Only the top fraction of chains by confidence vote (1 keeps all; DeepConf uses 0.1 or 0.9)."""
    online: bool = False
    """DeepConf online: the first ``warmup`` chains set the confidence bar for the later ones."""
    warmup: Count = 16
    cut: bool = False
    """DeepConf online early termination: cut a later chain mid-generation once the mean logprob of
    its last ``group`` tokens falls below the bar (needs ``online``, ``confidence: lowest_group``
    and a streaming backend; the vote is the one without ``cut``, for fewer tokens)."""
    stop: StopRule = "none"
    """Early stopping: ``auto`` (the documented adaptive setting), ``outcome``, ``esc``, ``beta``,
    ``dirichlet``, ``consensus`` or ``none`` (draw all n)."""
    window: Count = 4
    """Samples per request when stopping early (ESC's window; 1 checks after every sample)."""
    threshold: float = Field(default=0.95, gt=0, le=1)
    """Posterior probability (``beta``, ``dirichlet``; for ``outcome``, that the full vote keeps the
    leader) or leader share (``consensus``) that stops."""
    epsilon: float = Field(default=0.002, ge=0, le=1)
    """``outcome``: also stop when the rest of the budget raises the expected probability of the
    answer the vote returns by at most this much (hopeless problems: no answer likely to win)."""
    lookahead: CountOrZero | Literal["auto"] = 0
    """Extra requests kept in flight while one is judged (lower latency; cancelled on stop);
    ``auto``: as many as fill the engine's free sequence slots."""
    budget: float | None = Field(default=None, gt=0)
    """Online allocation: the run's average samples per problem (``pilot`` each, the rest where
    the vote's posterior says they change the most answers; at most ``n`` per problem)."""
    pilot: Count | None = None
    """Samples of the first request, before a stop rule or the allocator judges (``None``: one
    ``window``; 4 with ``budget``)."""

    @model_validator(mode="before")
    @classmethod
    def _auto(cls, data: Any) -> Any:
        """``stop: auto`` brings :data:`~tts.strategies._stop.AUTO`'s parameters; options given win."""
        if isinstance(data, dict) and data.get("stop") == "auto":
            return {**AUTO, "lookahead": "auto", **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> SelfConsistencyOptions:
        if self.budget is not None:
            if self.weight != "none" or self.keep < 1:
                raise ValueError("budget needs a plain count vote: drop weight and keep, or drop budget.")
            if self.budget < min(self.pilot or 4, self.n):
                raise ValueError(f"budget must be >= pilot={self.pilot or 4} samples per problem, got {self.budget}.")
        if self.online and self.keep >= 1:
            raise ValueError(f"keep must be < 1 with online=True (the fraction kept), got {self.keep}.")
        if self.online and self.warmup > self.n:
            raise ValueError(f"warmup must be <= n={self.n}, got {self.warmup}.")
        if self.cut and not self.online:
            raise ValueError("cut needs online=True (the warmup chains set the bar chains are cut at).")
        if self.cut and self.confidence != "lowest_group":
            raise ValueError(
                f"cut needs confidence='lowest_group' (chains are cut on their running group confidence), "
                f"got {self.confidence!r}."
            )
        return self


class SelfConsistency:
    """Vote over canonical answer keys of n chains; ties go to the answer sampled first."""

    name: ClassVar[str] = "self_consistency"
    Options: ClassVar[type[SelfConsistencyOptions]] = SelfConsistencyOptions

    def __init__(
        self, options: SelfConsistencyOptions | None = None, *, scorers: Sequence[Any] | None = None, **kw: object
    ) -> None:
        where = f"strategy {self.name}"
        self.options = o = options or parse_options(self.Options, kw, where=where)
        self.scorers = list(scorers or [])
        self.verifiers = build_verifiers(o.verifiers)
        self.proposer = build_proposer(o.proposer, where)
        check_sampled(self.proposer, o.n, where)
        if o.weight in _NEEDS_LOGPROBS or o.keep < 1:
            self.proposer.with_logprobs()

    async def solve(self, problem: Problem, ctx: Context) -> Result:
        o = self.options
        if o.budget is not None:
            candidates, stopped = await self._allocated(problem, ctx)
            groups = _select.group(candidates)
            winner = _select.plurality(groups)
            first = groups[winner][0] if winner is not None else None
            votes = {k: len(v) for k, v in groups.items()}
            return Result.choose(
                problem, candidates, winner=first, votes=votes, samples=len(candidates), stopped=stopped
            )
        if o.stop == "none" and not o.online:
            candidates = await self.proposer.propose(problem, ctx, n=o.n)
            if o.weight == "none" and o.keep == 1:  # the hot path: plain majority, nothing else
                groups = _select.group(candidates)
                winner = _select.plurality(groups)
                first = groups[winner][0] if winner is not None else None
                return Result.choose(problem, candidates, winner=first, votes={k: len(v) for k, v in groups.items()})
            kept, stopped = self._offline_keep(candidates), False
        else:
            candidates, kept, stopped = await self._sample(problem, ctx)
        weights = await self._weights(candidates, ctx)
        voters = [candidates[i] for i in kept]
        pick = _select.weighted_vote(voters, [weights[i] for i in kept])
        meta: dict[str, Any] = {"votes": {k: len(v) for k, v in _select.group(voters).items()}}
        if o.weight != "none":
            meta["weights"] = _select.vote_counts(_select.group(voters), [weights[i] for i in kept])
        if o.keep < 1:
            meta["kept"] = len(kept)
        if o.cut:
            meta["cut"] = sum(1 for c in candidates if c.completion is not None and c.completion.finish_reason == "cut")
        if o.stop != "none" or o.online:
            meta["samples"], meta["stopped"] = len(candidates), stopped
        return Result.choose(problem, candidates, winner=kept[pick] if pick is not None else None, **meta)

    def _confidence(self, c: Candidate) -> float | None:
        return _select.confidence(c.completion, self.options.confidence, self.options.group)

    def _chain_weight(self, c: Candidate) -> float:
        """A weight that depends on the chain alone (1 for weights relative to other chains)."""
        w = self.options.weight
        if w == "mean_logprob":
            lp = c.completion.mean_logprob if c.completion is not None else None
        elif w == "confidence":
            lp = self._confidence(c)
        else:
            return 1.0
        return math.exp(lp) if lp is not None else 0.0

    async def _weights(self, candidates: list[Candidate], ctx: Context) -> list[float]:
        w = self.options.weight
        if w == "seq_logprob":
            return _select.softmax_weights(
                [c.completion.cumulative_logprob if c.completion else None for c in candidates],
                self.options.weight_temperature,
            )
        if w == "score":
            who = "self_consistency weight='score'"
            found = resolve_verifiers(self.verifiers, self.scorers, ctx, who)
            await score_candidates(candidates, ctx, found)
            return [c.score if c.score is not None else 0.0 for c in candidates]
        return [self._chain_weight(c) for c in candidates]

    def _offline_keep(self, candidates: list[Candidate]) -> list[int]:
        if self.options.keep >= 1:
            return list(range(len(candidates)))
        return _select.top_fraction([self._confidence(c) for c in candidates], self.options.keep)

    async def _sample(self, problem: Problem, ctx: Context) -> tuple[list[Candidate], list[int], bool]:
        """Draw chains in windows; keep (online) and tally them as they arrive; stop when the rule says."""
        o = self.options
        seen: list[Candidate] = []
        kept: list[int] = []
        tally = Tally()
        bar: list[float] = []  # the online confidence bar, once the warmup has set it
        exact_counts = o.weight == "none" and (o.keep == 1 or o.online)  # the tally is the final vote

        def judge(new: list[Candidate]) -> bool:
            start = len(seen)
            seen.extend(new)
            if o.online and not bar:
                confs = [self._confidence(c) for c in new]
                mine = _select.top_fraction(confs, o.keep)
                bar.append(min(v for i in mine if (v := confs[i]) is not None) if mine else math.inf)
            elif o.online:  # a chain cut mid-generation fell below the bar: it does not vote
                mine = [
                    i
                    for i, c in enumerate(new)
                    if (conf := self._confidence(c)) is not None
                    and conf >= bar[0]
                    and (c.completion is None or c.completion.finish_reason != "cut")
                ]
            else:
                mine = range(len(new))
            for i in mine:
                kept.append(start + i)
                tally.add(new[i].key, self._chain_weight(new[i]))
            if exact_counts and decided(tally, o.n - len(seen)):
                return True
            return should_stop(o.stop, tally, new, o.threshold, remaining=o.n - len(seen), epsilon=o.epsilon)

        first = o.warmup if o.online else o.pilot or o.window
        if o.cut:
            ctx = ctx.watching(lambda _request: GroupConfidenceCut(o.group, lambda: bar[0] if bar else None), self.name)
        draw = await self.proposer.drawer(problem, ctx)
        lookahead: int | Callable[[], int] = (
            (lambda: auto_lookahead(ctx, o.window, o.n - len(seen))) if o.lookahead == "auto" else o.lookahead
        )
        sizes = lambda i: first if i == 0 else o.window  # noqa: E731
        candidates, stopped = await sample_windows(
            draw, o.n, sizes, lookahead, judge, priorities=ctx.capabilities.priorities
        )
        if not o.online and o.keep < 1:
            kept = self._offline_keep(candidates)
        return candidates, kept, stopped

    async def _allocated(self, problem: Problem, ctx: Context) -> tuple[list[Candidate], bool]:
        """A pilot, then the windows the run's allocator grants (module docstring); a stop rule,
        when set, can end the problem sooner."""
        o = self.options
        assert o.budget is not None
        draw = await self.proposer.drawer(problem, ctx)
        allocator = allocator_for(ctx.scheduler, self, o.budget, o.window)
        allocator.join()
        candidates: list[Candidate] = []
        tally = Tally()
        try:
            size = min(o.pilot or 4, o.n)
            allocator.spend(size)
            while size:
                new = await draw(size, 0).result()
                candidates.extend(new)
                for c in new:
                    tally.add(c.key)
                left = o.n - len(candidates)
                if left <= 0 or decided(tally, left):
                    break
                if should_stop(o.stop, tally, new, o.threshold, remaining=left, epsilon=o.epsilon):
                    break
                size = await allocator.ask(list(tally.counts.values()), left)
        finally:
            allocator.leave()
        return candidates, len(candidates) < o.n
