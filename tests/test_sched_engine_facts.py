"""Engine-side facts stored per run: the peak KV-cache use read during a study session and the
prefix-cache hit rate over it; (marked vllm) read from vLLM's own metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, OracleModel, OracleSpec
from tts.engine_facts import EngineFacts, RunFacts, read
from tts.study import StudyRunner, load_study
from tts.study.store import Store


class Gauged(FakeBackend):
    """A fake engine whose KV-cache use rises then falls as it is read."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.reads = 0
        self.readings = [0.1, 0.5, 0.9, 0.4, 0.2, 0.3, 0.1, 0.0]

    def kv_cache_usage(self) -> float:
        value = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        return value


def test_a_study_session_stores_the_peak_kv_cache_use(tmp_path: Path) -> None:
    model = OracleModel()
    backend = Gauged(model)
    study = load_study(
        data={
            "name": "facts",
            "dataset": {"name": "add2", "limit": 5},
            "pipelines": [{"label": "greedy", "strategy": {"name": "greedy"}, "backend": {"name": "fake"}}],
            "report": False,
        },
        out=tmp_path / "out",
    )
    for p in StudyRunner(study)._dataset(study.configs[0]).problems:
        model.add(p.id, OracleSpec(0.5))

    class Marked(StudyRunner):
        def _backend(self, cfg: Any) -> Any:
            backend_, scheduler, problems = super()._backend(cfg)
            return backend_, scheduler, [OracleModel.problem(p.id, model.specs[p.id]) for p in problems]

    Marked(study, backends={"fake": backend}).run()
    with Store(study.store_path, readonly=True) as store:
        (run,) = store.runs()
    assert backend.reads == 7  # one at the start, one after each of 5 results, one as the session closes
    assert run["kv_cache"] == 0.9 and run["prefix_cache_hit_rate"] is None and run["problems"] == 5


def test_the_prefix_cache_hit_rate_is_over_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import tts.engine_facts as ef

    readings = iter([EngineFacts(0.2, 100, 10), EngineFacts(0.7, 300, 110), EngineFacts(0.1, 500, 210)])
    monkeypatch.setattr(ef, "read", lambda backend: next(readings))
    facts = RunFacts(object())
    facts.update()
    facts.update()
    monkeypatch.undo()
    assert facts.peak == 0.7 and facts.prefix_cache_hit_rate == pytest.approx(200 / 400)
    assert read(FakeBackend()) == EngineFacts()  # a backend that reports nothing


@pytest.mark.vllm
def test_vllm_reports_kv_cache_use_and_prefix_cache_hits() -> None:
    from tts.backends.vllm import VLLMBackend
    from tts.sampling import SamplingParams
    from tts.types import Request

    backend = VLLMBackend(
        mode="async",
        enforce_eager=True,
        dtype="bfloat16",
        block_size=32,
        kv_cache_memory_bytes=1 << 30,
        max_model_len=1024,
        seed=0,
    )
    long = ("The following note is long on purpose, so that its first blocks can be cached. " * 5).strip()
    try:
        facts = RunFacts(backend)

        async def go() -> None:
            for round_ in range(2):  # the second round finds the shared prefix cached
                handles = [
                    backend.submit(
                        Request(f"{long}\nQuestion {i}: what is {i} + {round_}?", SamplingParams(max_tokens=8))
                    )
                    for i in range(4)
                ]
                await asyncio.gather(*handles)
                facts.update()

        asyncio.run(go())
        assert facts.last.prefix_cache_queries is not None and facts.last.kv_cache_usage is not None
        assert 0.0 <= facts.last.kv_cache_usage <= 1.0
        rate = facts.prefix_cache_hit_rate
        assert rate is not None and 0.3 < rate < 1.0  # 7 of 8 prompts reuse the note's blocks
    finally:
        backend.shutdown()
