"""DeepConf online early termination (``self_consistency`` with ``cut: true``) on the fake backend's
virtual clock: a token watcher (:mod:`tts.watch`) cuts the later chains whose running group
confidence falls below the warmup's bar, mid-generation; the vote is exactly the filter-after one,
for fewer tokens and less engine time, pinned exactly. Also: the watcher agrees with the
after-the-fact filter on every chain, only the watched sample stops, watched requests are never
merged or cached, and backends that cannot stream refuse a watcher in one line."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from tts import FakeBackend, Problem, Request, SamplingParams, SelfConsistency, solve
from tts.backends import known_capabilities
from tts.backends.fake import CostModel
from tts.backends.openai import OpenAIBackend
from tts.backends.vllm import VLLMBackend
from tts.cache import RequestCache
from tts.errors import ConfigError, UnsupportedControl
from tts.scheduler import Scheduler
from tts.strategies import _select
from tts.strategies._watch import GroupConfidenceCut
from tts.types import Completion, Result
from tts.watch import CutAfter

PROBLEM = Problem("q1", "What is 6 times 7?", "42")
TOKENS, GROUP, STEP = 64, 16, 0.01


class Confident:
    """Scripted answers with a mean token logprob each, ``TOKENS`` tokens long, consumed in order."""

    def __init__(self, items: Sequence[tuple[str, float]]) -> None:
        self.items = list(items)

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        answer, lp = self.items.pop(0)
        return f"Thinking it over step by step. The answer is {answer}.", TOKENS, lp


ITEMS = [
    # warmup: keep 0.5 -> the bar is the -0.3 chain's confidence
    ("42", -0.2),
    ("7", -0.3),
    ("7", -1.5),
    ("42", -1.2),
    # second draw: two below the bar
    ("42", -0.25),
    ("9", -2.0),
    ("9", -1.0),
    ("42", -0.1),
    # third draw: all below the bar
    ("9", -0.9),
    ("9", -2.0),
    ("3", -1.1),
    ("9", -1.3),
]
CUT = [5, 6, 8, 9, 10, 11]


def run_sc(cut: bool) -> tuple[Result, FakeBackend]:
    backend = FakeBackend(Confident(ITEMS), cost=CostModel(decode_step=STEP))
    sc = SelfConsistency(
        n=12, keep=0.5, online=True, warmup=4, window=4, confidence="lowest_group", group=GROUP, cut=cut
    )
    return asyncio.run(solve(sc, PROBLEM, backend)), backend


def test_cut_keeps_the_filter_after_vote_for_fewer_tokens_and_less_engine_time() -> None:
    after, slow = run_sc(cut=False)
    online, fast = run_sc(cut=True)
    assert after.answer == online.answer == "42"
    assert online.meta["votes"] == after.meta["votes"] == {"42": 3, "7": 1}
    assert online.meta["kept"] == after.meta["kept"] == 4 and online.meta["cut"] == 6
    chains = [c.completion for c in online.candidates if c.completion is not None]
    assert [i for i, c in enumerate(chains) if c.finish_reason == "cut"] == CUT
    assert [c.token_count for c in chains] == [GROUP if i in CUT else TOKENS for i in range(12)]
    # every chain generated until it ended, no more: 6 whole chains and 6 cut at the first full window
    assert after.usage.completion_tokens == slow.completion_tokens == 12 * TOKENS
    assert online.usage.completion_tokens == fast.completion_tokens == 6 * TOKENS + 6 * GROUP
    assert online.usage.completions == 12 and online.usage.calls == 3
    # the engine's virtual time: three draws of 64 steps, or the last one cut after 16
    assert slow.clock() == pytest.approx(3 * TOKENS * STEP)
    assert fast.clock() == pytest.approx(2 * TOKENS * STEP + GROUP * STEP)
    assert fast.calls == slow.calls == 3
    # the cut chain's text is the part generated before the cut
    words = len(online.candidates[0].text.split())
    assert len(online.candidates[5].text.split()) == words * GROUP // TOKENS


def test_the_watcher_cuts_exactly_the_chains_the_filter_drops() -> None:
    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        group = rng.choice([1, 2, 4, 8, 16])
        lps = [min(0.0, rng.gauss(-0.6, 0.5)) for _ in range(rng.randint(group, 80))]
        bar = rng.uniform(-1.2, -0.2)
        watcher = GroupConfidenceCut(group, lambda bar=bar: bar)
        cut_at, start = None, 0
        while start < len(lps) and cut_at is None:  # chunks of 1 to 5 tokens, as a server sends them
            chunk = lps[start : start + rng.randint(1, 5)]
            start += len(chunk)
            if watcher.watch(3, chunk):
                cut_at = start
        conf = _select.confidence(Completion("x", len(lps), logprobs=lps), "lowest_group", group)
        assert conf is not None
        assert (cut_at is not None) == (conf < bar)
        assert watcher.cut == ([3] if cut_at is not None else [])
        if cut_at is not None:  # cut after the chunk whose window first fell below the bar
            prefix = lps[:cut_at]
            first = next(k for k in range(group, len(prefix) + 1) if sum(prefix[k - group : k]) / group < bar)
            assert cut_at - first < 5
            checked += 1
    assert checked > 50
    assert not GroupConfidenceCut(2, lambda: None).watch(0, [-9.0] * 10), "no bar yet: nothing is cut"


def test_only_the_watched_sample_stops_and_it_is_charged_what_it_generated() -> None:
    backend = FakeBackend.scripted(default=" ".join(f"w{i}" for i in range(30)))
    sched = Scheduler(backend)
    watcher = CutAfter(sample=1, after=7)
    params = SamplingParams(n=3, temperature=0.7, max_tokens=64, logprobs=0)

    async def go() -> list[Completion]:
        return await sched.submit(Request("Count.", params, watch=watcher))

    out = asyncio.run(go())
    assert [c.finish_reason for c in out] == ["stop", "cut", "stop"]
    assert [c.token_count for c in out] == [30, 7, 30]
    assert out[1].text == " ".join(f"w{i}" for i in range(7)) and len(out[1].logprobs or []) == 7
    assert watcher.read == {0: 30, 1: 7, 2: 30}
    assert sched.usage.completion_tokens == backend.completion_tokens == 67 and sched.usage.completions == 3


def test_watched_requests_are_not_merged_and_cut_samples_not_cached(tmp_path: Path) -> None:
    backend = FakeBackend.scripted(default="one two three four five six")
    sched = Scheduler(backend, cache=RequestCache(tmp_path / "cache.sqlite"))
    params = SamplingParams(n=2, temperature=0.7, max_tokens=16, logprobs=0)

    async def go(params: SamplingParams, cut_after: int) -> list[list[Completion]]:
        handles = [sched.submit(Request("Say it.", params, watch=CutAfter(0, cut_after))) for _ in range(2)]
        return [await h for h in handles]

    first = asyncio.run(go(params, 2))  # unseeded twins: merged unless watched
    assert sched.stats.merged_requests == 0 and backend.requests == 2
    assert [[c.token_count for c in out] for out in first] == [[2, 6], [2, 6]]
    seeded = params.replace(seed=5)
    asyncio.run(go(seeded, 2))
    asyncio.run(go(seeded, 2))  # cut samples were not cached: the engine runs again
    assert backend.requests == 6 and sched.usage.cache_hits == 0
    asyncio.run(go(seeded, 99))  # nothing cut: whole samples, cached as any others
    asyncio.run(go(seeded, 99))
    assert backend.requests == 8 and sched.usage.cache_hits == 2


def test_backends_that_cannot_stream_refuse_a_watcher_in_one_line() -> None:
    watched = Request("Hi.", SamplingParams(logprobs=0), watch=CutAfter(0, 1))
    plain = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(UnsupportedControl, match=r"backend 'openai' cannot stream.*openai with stream: true"):
        plain.capabilities.check(watched, plain.name)
    assert OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", stream=True).capabilities.streaming
    offline, online = VLLMBackend(llm=object()), VLLMBackend(engine=object())  # engines passed in: none built
    try:
        assert not offline.capabilities.streaming and online.capabilities.streaming
        with pytest.raises(UnsupportedControl, match=r"backend 'vllm' cannot stream.*vllm with mode: async"):
            offline.submit(watched)
    finally:
        offline.shutdown()
        online.shutdown()
    assert not known_capabilities()["hf"].streaming and known_capabilities()["fake"].streaming
    sc = SelfConsistency(n=8, keep=0.5, online=True, warmup=4, confidence="lowest_group", group=4, cut=True)
    result = asyncio.run(solve(sc, PROBLEM, plain))
    assert result.status == "failed" and result.error is not None
    assert "self_consistency: backend 'openai' cannot stream" in result.error and "\n" not in result.error
    assert plain.stats.http_calls == 0, "refused before anything was sent"


def test_cut_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="cut needs online=True"):
        SelfConsistency(n=8, keep=0.5, cut=True, confidence="lowest_group")
    with pytest.raises(ConfigError, match="cut needs confidence='lowest_group'"):
        SelfConsistency(n=8, keep=0.5, online=True, warmup=4, cut=True)
