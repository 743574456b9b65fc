"""The step-level search core: one tree of partial paths that every search strategy grows.

A partial path is a node of a ``networkx.DiGraph`` (node 0 is the empty root; an edge leads from a
path to the path one step longer). :meth:`Search.expand` asks the scheduler for the next step of
many nodes at once (every node's request is submitted before any is awaited, and every problem in
flight does the same, so the scheduler sees all branches of all problems together):

- generator ``sample``: k i.i.d. continuations of one step, from the task's prompt with the path so
  far as the assistant prefix, stopped at the step ``delimiter`` (siblings share one request, the
  same rendered prefix token for token, so the engine's prefix cache serves them);
- generator ``propose``: one call that lists several next steps (one per line), from the prompt
  set's ``propose`` template (:mod:`tts.strategies._tree_prompts`).

:meth:`Search.evaluate` scores nodes: ``value`` (the prompt set's sure / likely / impossible verdict,
averaged over ``value_samples`` samples, one request per distinct state), ``vote`` (the states
compared in one call, ``value_samples`` votes) or ``verifier`` (any verifier, through
``ctx.verify``; a process reward model gets ``Candidate.steps``). Finished paths (an answer step)
are scored by the verifiers when there are any, whatever the evaluator. A node's ``value`` is its
path's step scores aggregated (``last``, ``min``, ``product``, ``mean``).

Deeper nodes' requests get lower ``Request.priority`` values (served first), so finishing paths is
never starved by new ones. Requests are tracked per node: :meth:`Search.prune` marks a subtree
pruned and cancels its queued and in-flight requests; :meth:`Search.run` cancels whatever is left
when the search ends, and turns a spent budget (:class:`~tts.errors.BudgetExceeded`) into the best
path so far with ``status="cut"``. The tree is the trace's ``graph`` (exported as JSON with the
trace; ``tts-scale report`` draws it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import networkx as nx
from pydantic import BaseModel, ConfigDict, field_validator

from tts.backends.base import Handle
from tts.context import Context
from tts.errors import BudgetExceeded, Cancelled, parse_options
from tts.prompts import fill
from tts.sampling import Count, SamplingParams
from tts.strategies import _select
from tts.strategies._scoring import VerifierSpec, Weighted, build_verifiers, resolve_verifiers, score_candidates
from tts.strategies._tree_prompts import PROMPT_SETS, prompt_set
from tts.types import Candidate, Completion, Problem, Request, Result, Score

__all__ = ["Aggregate", "Search", "SearchOptions", "SearchStrategy", "aggregate"]

Aggregate = Literal["last", "min", "product", "mean"]
_VOTE = re.compile(r"best choice is\D{0,8}(\d+)", re.IGNORECASE)


class SearchOptions(BaseModel):
    """Options every search strategy shares: how steps are generated, judged and delimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: Literal["sample", "propose"] = "sample"
    """``sample``: i.i.d. continuations of one step; ``propose``: one call listing several steps."""
    evaluator: Literal["value", "vote", "verifier"] = "verifier"
    """How partial paths are scored: the ``value`` prompt, a ``vote`` among states, or the verifiers."""
    value_samples: Count = 3
    """Samples per ``value`` evaluation (verdicts averaged) or ``vote`` call (votes counted)."""
    prompts: str = "generic"
    """Prompt set of ``propose``, ``value`` and ``vote``: ``generic`` or ``game24``."""
    prompt: str = "cot"
    """The task template the ``sample`` generator prompts with (``cot``, ``direct`` or a literal)."""
    delimiter: str = "\n\n"
    """Where a step ends (the ``sample`` generator's stop string; steps are joined with it)."""
    max_depth: Count = 8
    """Most steps in a path; a node at this depth is finished."""
    sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=128)
    """Sampling of one step (``max_tokens`` per step; a ``propose`` call gets k times as many)."""
    value_sampling: SamplingParams = SamplingParams(temperature=0.7, max_tokens=32)
    """Sampling of ``value`` and ``vote`` replies."""
    verifiers: tuple[VerifierSpec, ...] = ()
    """Verifier components (``evaluator: verifier``, and finished paths under any evaluator);
    empty: the constructor's ``scorers``, else the context's verifier."""
    aggregate: Aggregate = "last"
    """A path's value from its step scores: the ``last``, the ``min``, the ``product`` or the ``mean``."""
    answer_marker: str = r"(?i)answer is|answer:|\\boxed"
    """A step that matches this regular expression finishes its path."""

    @field_validator("prompts")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PROMPT_SETS:
            raise ValueError(f"prompts must be one of {', '.join(sorted(PROMPT_SETS))}, got {v!r}.")
        return v

    @field_validator("answer_marker")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"answer_marker must be a regular expression ({exc}), got {v!r}.") from None
        return v


def aggregate(values: Sequence[float], how: Aggregate) -> float:
    """A path's value from its step scores (an empty path is worth 0)."""
    if not values:
        return 0.0
    if how == "last":
        return values[-1]
    if how == "min":
        return min(values)
    if how == "product":
        return math.prod(values)
    return sum(values) / len(values)


class Search:
    """The tree of one problem's search and the operations strategies compose (module docstring)."""

    def __init__(
        self,
        problem: Problem,
        ctx: Context,
        options: SearchOptions,
        verifiers: Sequence[Weighted] = (),
        scorers: Sequence[Any] | None = None,
        who: str = "search",
    ) -> None:
        self.problem, self.ctx, self.o = problem, ctx, options
        self.prompts = prompt_set(options.prompts)
        self.graph: nx.DiGraph = nx.DiGraph()
        self.graph.add_node(0, **self._attrs("", 0, 0, terminal=False))
        self.status: Literal["ok", "cut"] = "ok"
        self._pending: dict[int, set[Handle]] = {}
        self._marker = re.compile(options.answer_marker)
        if options.evaluator == "verifier":
            self.verifiers = resolve_verifiers(verifiers, scorers, ctx, who)
        else:
            given = [v if isinstance(v, tuple) else (v, 1.0) for v in scorers or []]
            self.verifiers = list(verifiers) or given or ([(ctx.verifier, 1.0)] if ctx.verifier is not None else [])
        ctx.trace.graph = self.graph

    @staticmethod
    def verifiers_of(options: SearchOptions) -> list[Weighted]:
        return build_verifiers(options.verifiers)

    # ------------------------------------------------------------------------------ the tree

    @staticmethod
    def _attrs(text: str, depth: int, tokens: int, terminal: bool, answer: str | None = None) -> dict[str, Any]:
        return {
            "text": text,
            "depth": depth,
            "tokens": tokens,
            "terminal": terminal,
            "answer": answer,
            "score": None,
            "value": None,
            "pruned": False,
        }

    def node(self, n: int) -> dict[str, Any]:
        return self.graph.nodes[n]

    def parent(self, n: int) -> int | None:
        return next(iter(self.graph.predecessors(n)), None)

    def children(self, n: int) -> list[int]:
        return sorted(self.graph.successors(n))

    def path(self, n: int) -> list[int]:
        """Node ids from the first step to ``n`` (the root excluded)."""
        out = []
        while n != 0:
            out.append(n)
            n = self.parent(n)  # type: ignore[assignment]
        return out[::-1]

    def steps(self, n: int) -> list[str]:
        return [self.node(i)["text"] for i in self.path(n)]

    def add(self, parent: int, text: str, tokens: int, terminal: bool = False, **attrs: Any) -> int:
        """A new child of ``parent``; finished when ``terminal``, when it states an answer or at ``max_depth``."""
        n = self.graph.number_of_nodes()
        depth = self.node(parent)["depth"] + 1
        terminal = terminal or depth >= self.o.max_depth or bool(self._marker.search(text))
        answer = self.ctx.task.extract(text) if terminal and text else None
        self.graph.add_node(n, **self._attrs(text, depth, tokens, terminal, answer), **attrs)
        self.graph.add_edge(parent, n)
        return n

    def open(self, nodes: Sequence[int]) -> list[int]:
        return [n for n in nodes if not self.node(n)["terminal"] and not self.node(n)["pruned"]]

    def finished(self) -> list[int]:
        """Finished paths still in the running (not pruned)."""
        return [n for n in self.graph.nodes if self.node(n)["terminal"] and not self.node(n)["pruned"]]

    def deepest(self) -> int:
        """The best of the deepest unfinished, unpruned nodes (the root when there is none)."""
        live = [n for n in self.graph.nodes if not self.node(n)["terminal"] and not self.node(n)["pruned"]]
        return min(live, key=lambda n: (-self.node(n)["depth"], -self.value(n), n))

    def value(self, n: int) -> float:
        v = self.node(n)["value"]
        return -math.inf if v is None else float(v)

    def top(self, nodes: Sequence[int], width: int) -> list[int]:
        """The ``width`` best nodes by value (ties: the earliest); the rest are pruned."""
        ranked = sorted(nodes, key=lambda n: (-self.value(n), n))
        self.prune(ranked[width:])
        return sorted(ranked[:width])

    def prune(self, nodes: Sequence[int], finished: bool = True) -> None:
        """Mark ``nodes`` and their subtrees pruned (``finished=False``: leave finished paths in the
        running); cancel their queued and in-flight requests."""
        for n in nodes:
            for m in (n, *nx.descendants(self.graph, n)):
                if finished or not self.node(m)["terminal"]:
                    self.node(m)["pruned"] = True
                for handle in self._pending.pop(m, ()):
                    handle.cancel()

    def cancel_all(self) -> None:
        for handles in self._pending.values():
            for handle in handles:
                handle.cancel()
        self._pending.clear()

    # ------------------------------------------------------------------------------ engine

    def _submit(self, n: int, request: Request) -> Handle:
        handle = self.ctx.submit(request)
        mine = self._pending.setdefault(n, set())
        mine.add(handle)
        handle.future.add_done_callback(lambda _: mine.discard(handle))
        return handle

    async def _gather(self, handles: Sequence[Handle]) -> list[list[Completion]]:
        """Every handle's finished completions (a cancelled one gives none)."""
        outs = await asyncio.gather(*(h.future for h in handles), return_exceptions=True)
        result: list[list[Completion]] = []
        for out in outs:
            if isinstance(out, Cancelled):
                result.append([])
            elif isinstance(out, BaseException):
                raise out
            else:
                result.append([c for c in out if c.finish_reason != "abort"])
        return result

    def _fill(self, template: str, n: int, **extra: Any) -> str:
        steps = self.steps(n)
        return fill(
            template,
            question=self.problem.question,
            steps="\n".join(steps),
            state=self.prompts.state(self.problem, steps),
            numbers=self.prompts.state(self.problem, []),
            **extra,
        )

    def _chat(self, user: str, params: SamplingParams, priority: int, prefix: str = "") -> Request:
        return Request.chat(user, params, system=self.ctx.task.system, priority=priority, assistant_prefix=prefix)

    def step_request(self, n: int, k: int, params: SamplingParams | None = None, extra: str = "") -> Request:
        """The request for ``k`` sampled next steps of node ``n`` (``extra``: text after its path)."""
        task, o, depth = self.ctx.task, self.o, self.node(n)["depth"]
        prefix = task.assistant_prefix + "".join(s + o.delimiter for s in self.steps(n)) + extra
        p = params or o.sampling
        stop = p.stop if o.delimiter in p.stop else (*p.stop, o.delimiter)
        return self._chat(task.render(self.problem.question, o.prompt), p.replace(n=k, stop=stop), -depth, prefix)

    async def expand(self, nodes: Sequence[int], k: int | Sequence[int], answer: bool = False) -> list[list[int]]:
        """Children of each node (``k`` samples or proposals each), all requests in flight at once;
        identical sibling steps are kept once. ``answer``: the prompt set's answer step, now."""
        counts = [k] * len(nodes) if isinstance(k, int) else list(k)
        o, pr = self.o, self.prompts
        requests: list[tuple[int, str, Request]] = []
        for n, kn in zip(nodes, counts, strict=True):
            depth = self.node(n)["depth"]
            if pr.answer and (answer or pr.answer_next(self.problem, self.steps(n), o.max_depth)):
                req = self._chat(self._fill(pr.answer, n), o.sampling.replace(n=1), -depth)
                requests.append((n, "answer", req))
            elif o.generator == "propose":
                p = o.sampling.replace(n=1, max_tokens=min(o.sampling.max_tokens * kn, 1 << 20))
                requests.append((n, "propose", self._chat(self._fill(pr.propose, n, k=kn), p, -depth)))
            else:
                requests.append((n, "sample", self.step_request(n, kn)))
        handles = [self._submit(n, req) for n, _, req in requests]
        out: list[list[int]] = []
        for (n, kind, _), kn, comps in zip(requests, counts, await self._gather(handles), strict=True):
            steps: list[tuple[str, int]] = []
            if kind == "propose" and comps:
                lines = pr.proposals(comps[0].text, kn)
                share = comps[0].token_count // max(len(lines), 1)
                steps = [(line, share) for line in lines]
            else:
                steps = [(c.text.strip(), c.token_count) for c in comps]
            seen: set[str] = set()
            kids = []
            for text, tokens in steps:
                if text and text not in seen and not self.node(n)["pruned"]:
                    seen.add(text)
                    kids.append(self.add(n, text, tokens, terminal=kind == "answer"))
            out.append(kids)
        return out

    async def complete(self, nodes: Sequence[int]) -> list[int | None]:
        """A rollout from each node: the rest of the solution in one request (no step stop), added as
        a finished child marked ``rollout``."""
        o, reqs = self.o, []
        for n in nodes:
            left = max(o.max_depth - self.node(n)["depth"], 1)
            p = o.sampling.replace(n=1, stop=tuple(x for x in o.sampling.stop if x != o.delimiter))
            req = self.step_request(n, 1, p.replace(max_tokens=min(p.max_tokens * left, 1 << 20)))
            reqs.append(dataclasses.replace(req, params=req.params.replace(stop=p.stop)))
        handles = [self._submit(n, r) for n, r in zip(nodes, reqs, strict=True)]
        out: list[int | None] = []
        for n, comps in zip(nodes, await self._gather(handles), strict=True):
            text = comps[0].text.strip() if comps else ""
            out.append(self.add(n, text, comps[0].token_count, terminal=True, rollout=True) if text else None)
        return out

    # ------------------------------------------------------------------------------ scores

    def candidate(self, n: int, extra: Sequence[str] = ()) -> Candidate:
        steps = [*self.steps(n), *extra]
        node = self.node(n)
        return Candidate(
            text=self.o.delimiter.join(steps), answer=node["answer"], steps=steps, meta={"node": n, "depth": len(steps)}
        )

    def _set(self, n: int, score: float, passed: bool | None = None) -> None:
        node = self.node(n)
        node["score"] = score
        if passed is not None:
            node["passed"] = passed
        path = [self.node(i)["score"] for i in self.path(n)]
        node["value"] = aggregate([s for s in path if s is not None], self.o.aggregate)

    async def evaluate(self, nodes: Sequence[int], lookahead: dict[int, list[str]] | None = None) -> None:
        """Score ``nodes`` (see the module docstring); ``lookahead`` adds steps seen only by the verifier."""
        nodes = [n for n in nodes if not self.node(n)["pruned"]]
        by_verifier = [
            n for n in nodes if self.verifiers and (self.o.evaluator == "verifier" or self.node(n)["terminal"])
        ]
        rest = [n for n in nodes if n not in set(by_verifier)]
        jobs: list[Awaitable[None]] = []
        if by_verifier:
            jobs.append(self._verify(by_verifier, lookahead or {}))
        if rest and self.o.evaluator == "vote":
            jobs.append(self._vote(rest))
        elif rest:
            jobs.append(self._value(rest))
        await asyncio.gather(*jobs)

    async def _verify(self, nodes: Sequence[int], lookahead: dict[int, list[str]]) -> None:
        cands = [self.candidate(n, lookahead.get(n, ())) for n in nodes]
        await score_candidates(cands, self.ctx, self.verifiers)
        for n, c in zip(nodes, cands, strict=True):
            last = c.scores[-1] if c.scores else None
            steps = last.steps if last is not None and last.steps and not lookahead.get(n) else None
            self._set(n, steps[-1] if steps else (c.score or 0.0), last.passed if last is not None else None)

    async def _value(self, nodes: Sequence[int]) -> None:
        o = self.o
        prompts: dict[str, list[int]] = {}
        for n in nodes:
            prompts.setdefault(self._fill(self.prompts.value, n), []).append(n)
        params = o.value_sampling.replace(n=o.value_samples)
        items = list(prompts.items())
        handles = [self._submit(ns[0], self._chat(text, params, -self.node(ns[0])["depth"])) for text, ns in items]
        for (_, ns), comps in zip(items, await self._gather(handles), strict=True):
            verdicts = [self.prompts.verdict(c.text) for c in comps]
            for n in ns:
                self._set(n, sum(verdicts) / len(verdicts) if verdicts else 0.0)

    async def _vote(self, nodes: Sequence[int]) -> None:
        o = self.o
        choices = "\n".join(f"Choice {i}:\n" + "\n".join(self.steps(n)) for i, n in enumerate(nodes, 1))
        text = fill(self.prompts.vote, question=self.problem.question, choices=choices)
        depth = max(self.node(n)["depth"] for n in nodes)
        params = o.value_sampling.replace(n=o.value_samples)
        (comps,) = await self._gather([self._submit(nodes[0], self._chat(text, params, -depth))])
        votes = [0] * len(nodes)
        for c in comps:
            m = _VOTE.search(c.text)
            if m and 1 <= int(m.group(1)) <= len(nodes):
                votes[int(m.group(1)) - 1] += 1
        for n, v in zip(nodes, votes, strict=True):
            self._set(n, v / max(len(comps), 1))

    async def lookahead(self, nodes: Sequence[int], steps: int) -> dict[int, list[str]]:
        """``steps`` more greedy steps after each unfinished node, kept out of the tree (scored only)."""
        extra: dict[int, list[str]] = {n: [] for n in self.open(nodes)}
        greedy = self.o.sampling.replace(temperature=0.0)
        for _ in range(steps):
            live = [n for n in extra if not (extra[n] and self._marker.search(extra[n][-1]))]
            if not live:
                break
            reqs = [self.step_request(n, 1, greedy, "".join(s + self.o.delimiter for s in extra[n])) for n in live]
            handles = [self._submit(n, r) for n, r in zip(live, reqs, strict=True)]
            for n, comps in zip(live, await self._gather(handles), strict=True):
                if comps and comps[0].text.strip():
                    extra[n].append(comps[0].text.strip())
        return extra

    # ------------------------------------------------------------------------------ the end

    async def run(self, body: Callable[[], Awaitable[None]], select: Literal["best", "vote"] = "best") -> Result:
        """Run the strategy's ``body``; a spent budget ends it with the best path so far (``cut``).
        Requests still queued or in flight are cancelled either way."""
        try:
            await body()
        except BudgetExceeded:
            self.status = "cut"
        finally:
            self.cancel_all()
        return self.result(select)

    def result(self, select: Literal["best", "vote"] = "best") -> Result:
        """Finished paths are the candidates (when none finished: the best open leaf); the winner is
        the best value among those not failed by a verifier (``vote``: the answer with the most value)."""
        g = self.graph
        pool = self.finished()
        if not pool:
            leaves = [n for n in g.nodes if n != 0 and g.out_degree(n) == 0]
            pool = sorted(leaves, key=lambda n: (-self.value(n), n))[:1]
        cands = [self.candidate(n) for n in pool]
        for n, c in zip(pool, cands, strict=True):
            node = self.node(n)
            if node["value"] is not None:
                c.scores.append(Score(node["value"], node.get("passed"), verifier="search"))
            c.key = self.ctx.canonical(c.answer) if c.answer is not None else None
        ok = [i for i, n in enumerate(pool) if self.node(n).get("passed") is not False and cands[i].answer is not None]
        winner: int | None
        if select == "vote" and ok:
            winner = ok[_select.weighted_vote([cands[i] for i in ok], [max(self.value(pool[i]), 0.0) for i in ok]) or 0]
        else:
            order = ok or list(range(len(pool)))
            winner = min(order, key=lambda i: (-self.value(pool[i]), pool[i])) if order else None
        result = Result.choose(
            self.problem,
            cands,
            winner=winner,
            nodes=g.number_of_nodes() - 1,
            finished=len(self.finished()),
            pruned=sum(1 for n in g.nodes if g.nodes[n]["pruned"]),
        )
        result.status = self.status
        return result


OptionsT = TypeVar("OptionsT", bound=SearchOptions)


class SearchStrategy(Generic[OptionsT]):
    """What every search strategy shares: its options, scorers and verifiers, and the core for one
    problem (:meth:`search`). A strategy adds its ``name``, ``Options`` and ``solve``."""

    name: ClassVar[str]
    Options: ClassVar[type[SearchOptions]]

    def __init__(self, options: OptionsT | None = None, *, scorers: Sequence[Any] | None = None, **kw: object) -> None:
        self.options: OptionsT = cast(
            OptionsT, options or parse_options(self.Options, kw, where=f"strategy {self.name}")
        )
        self.scorers = list(scorers or [])
        self.verifiers = Search.verifiers_of(self.options)

    def search(self, problem: Problem, ctx: Context) -> Search:
        """The search core for ``problem``, with this strategy's options, verifiers and scorers."""
        return Search(problem, ctx, self.options, self.verifiers, self.scorers, who=self.name)
