"""The SQLite request cache: the key covers every sampling field, hits cost no tokens and are
counted, seeded requests are served by key, unseeded ones only to a later run and once per run,
bounded with LRU eviction, shared across connections, per-run opt-out and the semantic layer
(refused in studies)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, Request, SamplingParams
from tts.cache import CacheOptions, RequestCache, SemanticOptions, identity, request_key
from tts.errors import ConfigError
from tts.sampling import Constraint
from tts.scheduler import Scheduler
from tts.study import StudyRunner, load_study
from tts.study.store import Store
from tts.types import Completion, Usage

CHANGED: dict[str, Any] = {
    "n": 2,
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 5,
    "min_p": 0.1,
    "max_tokens": 100,
    "min_tokens": 3,
    "stop": ("x",),
    "seed": 7,
    "logprobs": 0,
    "repetition_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "banned_words": ("bad",),
    "constraint": Constraint(kind="choice", choices=("a", "b")),
    "beam_width": 2,
    "length_penalty": 0.5,
    "ignore_eos": True,
}


def test_the_key_changes_with_every_sampling_field_the_prompt_and_the_model() -> None:
    assert set(CHANGED) == set(SamplingParams.model_fields)  # a new field must be added here
    base = Request("What is 2+2?", SamplingParams())
    key = request_key("m", base)
    seen = {key}
    for name, value in CHANGED.items():
        changed = Request(base.prompt, base.params.model_copy(update={name: value}))
        assert getattr(changed.params, name) == value
        k = request_key("m", changed)
        assert k not in seen, name
        seen.add(k)
    assert request_key("other-model", base) != key
    assert request_key("m", Request("What is 2+3?")) != key
    assert request_key("m", Request("What is 2+2?", assistant_prefix="Let")) != key
    assert request_key("m", Request.chat("What is 2+2?")) != key
    assert request_key("m", Request("What is 2+2?", priority=3)) == key  # when, not what


def test_the_model_identity_covers_the_backend_options_and_the_oracle() -> None:
    a, b = FakeBackend(seed=0), FakeBackend(seed=1)
    assert identity(a) != identity(b)
    from tts.backends.fake import OracleModel, OracleSpec

    o1, o2 = OracleModel({"p": OracleSpec(0.5)}), OracleModel({"p": OracleSpec(0.6)})
    assert identity(FakeBackend(o1)) == identity(FakeBackend(OracleModel({"p": OracleSpec(0.5)})))
    assert identity(FakeBackend(o1)) != identity(FakeBackend(o2))
    assert identity(FakeBackend(o1, pricing={"prompt": 1.0, "completion": 2.0})) == identity(FakeBackend(o1))


async def _ask(scheduler: Scheduler, *requests: Request) -> tuple[list[list[Completion]], Usage]:
    usage = Usage()
    handles = [scheduler.submit(r, usage) for r in requests]
    return list(await asyncio.gather(*handles)), usage


def _backend() -> FakeBackend:
    return FakeBackend.scripted(default="The answer is 4, said at length.")


def test_seeded_requests_are_served_by_key_and_hits_cost_no_tokens(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    backend = _backend()
    scheduler = Scheduler(backend, cache=cache)
    seeded = Request("What is 2+2?", SamplingParams(n=3, seed=5))
    first, u1 = asyncio.run(_ask(scheduler, seeded))
    assert backend.calls == 1 and u1.completion_tokens == 3 * 7 and u1.cache_hits == 0
    assert u1.prompt_tokens == 3 and cache.stats.stores == 1
    again, u2 = asyncio.run(_ask(scheduler, seeded))  # the same run: seeded is served by key
    assert backend.calls == 1 and cache.stats.hits == 1
    assert [c.text for c in again[0]] == [c.text for c in first[0]]
    assert (u2.calls, u2.prompt_tokens, u2.completion_tokens, u2.cache_hits) == (0, 0, 0, 1)
    assert u2.cache_hit_tokens == 3 + 21 and u2.completions == 3
    assert (u2.spent_tokens, u2.original_tokens) == (0, 24) and u1.original_tokens == u1.spent_tokens == 24
    assert scheduler.usage.cache_hits == 1 and scheduler.usage.completion_tokens == 21
    other_seed = Request("What is 2+2?", SamplingParams(n=3, seed=6))
    asyncio.run(_ask(scheduler, other_seed))
    assert backend.calls == 2 and cache.stats.lookups == 3


def test_unseeded_requests_are_served_only_in_a_later_run_and_once_per_run(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    backend = _backend()
    scheduler = Scheduler(backend, cache=cache, merge=False)
    req = Request("What is 2+2?", SamplingParams(n=1))
    asyncio.run(_ask(scheduler, req))
    asyncio.run(_ask(scheduler, req))  # the same run: never its own samples back
    assert backend.requests == 2 and cache.stats.hits == 0 and len(cache) == 2
    cache.new_run()
    _, usage = asyncio.run(_ask(scheduler, req, req, req))  # a later run: each stored sample once
    assert usage.cache_hits == 2 and backend.requests == 3 and len(cache) == 3
    cache.new_run()
    _, usage = asyncio.run(_ask(scheduler, req, req, req, req))
    assert usage.cache_hits == 3 and backend.requests == 4


def test_merged_unseeded_requests_each_take_their_own_entry(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    backend = _backend()
    scheduler = Scheduler(backend, cache=cache)
    req = Request("What is 2+2?", SamplingParams(n=1))
    asyncio.run(_ask(scheduler, req, req, req))  # merged into one n=3 engine request
    assert backend.requests == 1 and scheduler.stats.merged_requests == 2 and len(cache) == 3
    cache.new_run()
    _, usage = asyncio.run(_ask(scheduler, req, req, req))
    assert usage.cache_hits == 3 and backend.requests == 1


def test_bounded_with_least_recently_used_eviction(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", max_entries=3)
    done = [Completion("x", 2, prompt_tokens=1)]
    reqs = [Request(f"q{i}", SamplingParams(seed=1)) for i in range(4)]
    for r in reqs[:3]:
        cache.put("m", r, done)
    assert cache.get("m", reqs[0]) is not None  # q0 used last: q1 is the least recently used
    cache.put("m", reqs[3], done)
    assert len(cache) == 3 and cache.stats.evictions == 1
    assert cache.get("m", reqs[1]) is None
    assert all(cache.get("m", r) is not None for r in (reqs[0], reqs[2], reqs[3]))


def test_aborted_or_short_answers_are_not_stored(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    r = Request("q", SamplingParams(n=2, seed=1))
    cache.put("m", r, [Completion("x", 2)])
    cache.put("m", r, [Completion("x", 2), Completion("y", 1, finish_reason="abort")])
    assert len(cache) == 0 and cache.get("m", r) is None


def test_two_connections_share_one_file(tmp_path: Path) -> None:
    a, b = RequestCache(tmp_path / "c.sqlite"), RequestCache(tmp_path / "c.sqlite")
    r = Request("q", SamplingParams(seed=1))
    a.put("m", r, [Completion("x y", 2, prompt_tokens=1)])
    got = b.get("m", r)
    assert got is not None and got[0].text == "x y" and got[0].token_count == 2


def test_semantic_layer_answers_a_near_duplicate_and_counts_it_apart(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite", semantic=SemanticOptions(threshold=0.8, embedder="hash-256"))
    done = [Completion("4", 1, prompt_tokens=5)]
    params = SamplingParams(seed=1)
    cache.put("m", Request.chat("What is two plus two ?", params), done)
    assert cache.get("m", Request.chat("what is two plus two?", params)) is not None
    assert cache.get("m", Request.chat("Name the capital of France.", params)) is None
    assert (cache.stats.hits, cache.stats.semantic_hits, cache.stats.lookups) == (0, 1, 2)
    plain = RequestCache(tmp_path / "c.sqlite")  # off by default
    assert plain.get("m", Request.chat("what is two plus two?", params)) is None


def _study(tmp_path: Path, cache: dict[str, Any], greedy_run: dict[str, Any] | None = None) -> StudyRunner:
    greedy: dict[str, Any] = {"label": "greedy", "strategy": {"name": "greedy"}}
    if greedy_run is not None:
        greedy["run"] = greedy_run
    study = load_study(
        data={
            "name": "c",
            "dataset": {"name": "add2", "limit": 6},
            "backend": {"name": "fake", "oracle": {"p_correct": [0.5], "length": [10, 30]}},
            "run": {"cache": cache},
            "pipelines": [greedy, {"label": "sc", "strategy": {"name": "self_consistency", "n": 4}}],
            "report": False,
        },
        out=tmp_path / "out",
    )
    return StudyRunner(study)


def test_a_study_rerun_into_a_fresh_out_is_served_from_the_cache(tmp_path: Path) -> None:
    cache = {"path": str(tmp_path / "c.sqlite")}
    first = _study(tmp_path / "a", cache)
    first.run()
    second = _study(tmp_path / "b", cache)
    second.run()
    assert sum(b.completion_tokens for b in second.backends) == 0
    (c,) = second._caches.values()
    assert c.stats.hits == c.stats.lookups == 12
    with Store(tmp_path / "a" / "out" / "results.sqlite", readonly=True) as s1:
        r1 = s1.results()
    with Store(tmp_path / "b" / "out" / "results.sqlite", readonly=True) as s2:
        r2 = s2.results()
    assert [r["answer"] for r in r1] == [r["answer"] for r in r2]
    assert all(r["cache_hits"] == 0 and r["original_tokens"] > 0 for r in r1)
    assert all(r["cache_hits"] == 1 and r["completion_tokens"] == 0 for r in r2)
    assert [r["original_tokens"] for r in r1] == [r["original_tokens"] for r in r2]


def test_a_pipeline_opts_out_of_the_study_cache(tmp_path: Path) -> None:
    cache = {"path": str(tmp_path / "c.sqlite")}
    _study(tmp_path / "a", cache, {"cache": {"enabled": False}}).run()
    second = _study(tmp_path / "b", cache, {"cache": {"enabled": False}})
    second.run()
    (c,) = second._caches.values()
    assert c.stats.lookups == c.stats.hits == 6  # only sc's 6 problems looked up
    with Store(tmp_path / "b" / "out" / "results.sqlite", readonly=True) as s:
        hits = {r["cache_hits"] for r in s.results()}
    assert hits == {0, 1}  # greedy opted out and ran again; sc was served


def test_studies_refuse_the_semantic_layer_in_one_line(tmp_path: Path) -> None:
    runner = _study(tmp_path, {"path": str(tmp_path / "c.sqlite"), "semantic": {"threshold": 0.9}})
    with pytest.raises(ConfigError) as err:
        runner.run()
    assert "\n" not in str(err.value) and "run.cache.semantic is refused in studies" in str(err.value)
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_cache_options_refuse_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="max_entries"):
        RequestCache.from_options({"max_entries": 0})
    assert RequestCache.from_options(CacheOptions(enabled=False)) is None
