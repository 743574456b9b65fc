"""Scheduling: the fake engine's per-sequence step cost, run priorities end to end, weighted fair
share between tenants (release order, cancellation while waiting), on the virtual clock."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tts import FakeBackend, Greedy, Problem, Request, SamplingParams, arun
from tts.backends.fake import CostModel
from tts.errors import Cancelled, ConfigError
from tts.fair import FairShare
from tts.scheduler import Scheduler
from tts.types import Usage

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_decode_step_costs_decode_step_plus_decode_per_seq_times_the_batch() -> None:
    cost = CostModel(decode_step=0.01, decode_per_seq=0.001, max_concurrency=4)
    fake = FakeBackend.scripted(default="one two three four five", cost=cost)  # 5 tokens a sample

    async def go() -> None:
        await fake.submit(Request("q", SamplingParams(n=6)))

    asyncio.run(go())
    # waves of 4 and 2 sequences, 5 steps each: 5 x (0.01 + 0.004) + 5 x (0.01 + 0.002)
    assert fake.clock() == pytest.approx(0.07 + 0.06)
    plain = FakeBackend.scripted(default="one two three four five", cost=CostModel(decode_step=0.01, max_concurrency=4))
    asyncio.run(_submit(plain, Request("q", SamplingParams(n=6))))
    assert plain.clock() == pytest.approx(0.1)  # the default adds nothing


async def _submit(fake: FakeBackend, request: Request) -> None:
    await fake.submit(request)


def _problems(prefix: str, k: int) -> list[Problem]:
    return [Problem(f"{prefix}{i}", f"{prefix} question {i}?", "1") for i in range(k)]


def test_run_priority_is_added_to_every_request_and_served_first() -> None:
    served: list[str] = []

    def reply(prompt: str) -> str:
        served.append(prompt.split(" question ")[0].split()[-1] + prompt.split(" question ")[1][0])
        return "The answer is 1."

    fake = FakeBackend.scripted(default=reply, cost=CostModel(decode_step=1.0), max_batch=1)  # type: ignore[arg-type]
    scheduler = Scheduler(fake)

    async def go(priority: int) -> tuple[Any, Any]:
        batch = asyncio.ensure_future(arun(Greedy(), _problems("b", 4), scheduler, priority=priority))
        await asyncio.sleep(0)  # the batch run submits first
        inter = await arun(Greedy(), _problems("i", 1), scheduler, priority=0)
        return await batch, inter

    batch, inter = asyncio.run(go(5))
    (event,) = inter.results[0].trace.events
    assert event.request is not None and event.request.priority == 0
    assert {e.request.priority for r in batch.results for e in r.trace.events if e.request} == {5}
    # one request an engine batch; all five queued in one turn: the interactive one goes first
    assert served == ["i0", "b0", "b1", "b2", "b3"] and fake.batch_sizes == [1] * 5
    served.clear()
    asyncio.run(go(0))  # without priorities: arrival order
    assert served == ["b0", "b1", "b2", "b3", "i0"]


def test_the_tenant_reaches_the_scheduler_from_a_run() -> None:
    seen: list[str] = []

    class Recording(Scheduler):
        def submit(
            self, request: Request, usage: Any = (), *, verifier: bool = False, tenant: str | None = None
        ) -> Any:
            seen.append(tenant or "")
            return super().submit(request, usage, verifier=verifier, tenant=tenant)

    scheduler = Recording(FakeBackend.scripted(default="The answer is 1."))
    asyncio.run(arun(Greedy(), _problems("x", 2), scheduler, tenant="alice"))
    asyncio.run(arun(Greedy(), _problems("y", 1), scheduler))
    assert seen == ["alice", "alice", ""]


def test_fair_share_releases_by_decode_tokens_over_weight() -> None:
    fair: FairShare[str] = FairShare({"a": 1.0, "b": 3.0}, capacity=2)
    for i in range(6):
        fair.push("a", f"a{i}", 1, 10)
        fair.push("b", f"b{i}", 1, 10)
    order: list[str] = []
    while fair.queued():
        released = fair.pop()
        assert sum(s for _, _, s, _ in released) <= 2
        for tenant, item, sequences, estimate in released:
            order.append(item)
            fair.done(tenant, sequences, estimate, 10, 1)
    # levels (tokens / weight): a request raises a's by 10, b's by 10/3; ties go to the first tenant
    assert order[:8] == ["a0", "b0", "b1", "b2", "a1", "b3", "b4", "b5"]
    assert fair.tokens == {"a": 60, "b": 60} and fair.inflight == 0


def test_a_tenant_back_from_idle_gets_no_burst() -> None:
    fair: FairShare[str] = FairShare({"a": 1.0, "b": 1.0}, capacity=1)
    for i in range(4):
        fair.push("a", f"a{i}", 1, 10)
    for _ in range(4):
        ((tenant, _item, s, est),) = fair.pop()
        fair.done(tenant, s, est, 10, 1)
    fair.push("a", "a4", 1, 10)
    fair.push("b", "b0", 1, 10)  # b was idle while a used 40 tokens: it starts at a's level
    assert fair.served["b"] == pytest.approx(40.0)
    with pytest.raises(ConfigError, match="weight of 'a' must be > 0"):
        FairShare({"a": 0.0}, capacity=1)


def test_the_scheduler_keeps_capacity_sequences_in_the_engine_and_drops_cancelled_waiters() -> None:
    fake = FakeBackend.scripted(default="The answer is 1.", cost=CostModel(decode_step=1.0))
    scheduler = Scheduler(fake, fair=FairShare({"a": 1.0, "b": 1.0}, capacity=2), merge=False)

    async def go() -> tuple[list[Any], Usage]:
        usage = Usage()
        hs = [scheduler.submit(Request(f"{t}{i}"), usage, tenant=t) for i in range(3) for t in ("a", "b")]
        await asyncio.sleep(0)
        hs[5].cancel()  # b2 waits for its turn: dropped, charged as cancelled, never sent
        out = await asyncio.gather(*hs, return_exceptions=True)
        return out, usage

    out, usage = asyncio.run(go())
    assert isinstance(out[5], Cancelled) and all(isinstance(o, list) for o in out[:5])
    assert fake.batch_sizes == [2, 2, 1] and fake.requests == 5
    assert usage.cancelled == 1 and usage.calls == 5


@pytest.mark.parametrize(("name", "key", "limit"), [("priority", "p95_ratio", 0.5), ("fairness", "share_error", 0.1)])
def test_benchmark_claims(name: str, key: str, limit: float, capsys: pytest.CaptureFixture[str]) -> None:
    bench(name).main()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    label, value = last.split("=")
    assert label == key and float(value) <= limit


def test_the_study_command_refuses_an_unknown_executor_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tts.cli import app

    study = tmp_path / "study.yaml"
    study.write_text(
        "name: s\ndataset: {name: add2, limit: 2}\nbackend: {name: fake}\n"
        f"pipelines: [{{label: g, strategy: {{name: greedy}}}}]\nout: {tmp_path / 'out'}\nreport: false\n",
        encoding="utf-8",
    )
    res = CliRunner().invoke(app, ["study", str(study), "--executor", "dask"])
    assert res.exit_code == 2
    assert "--executor must be local or ray, got 'dask'." in res.output
    assert not (tmp_path / "out" / "results.sqlite").exists()
