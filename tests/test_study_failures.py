"""How studies count what went wrong: failed and timed-out problems are wrong (accuracy over
answered named apart), stored with their kind and retried on resume, verifier work counted apart,
token-limit cut-offs flagged, latency and throughput from tts.metrics, secrets masked."""

from __future__ import annotations

import random
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tts.backends.fake import FakeBackend
from tts.errors import BackendError
from tts.metrics import percentile
from tts.study import StudyRunner, load_study
from tts.study.analysis import compare_configs, compute_metrics, metric_warnings
from tts.study.curves import curves
from tts.study.report import build_report_data, render_html, write_report
from tts.study.runner import result_rows
from tts.study.store import RESULT_COLUMNS, Store
from tts.types import Problem, Request, Result, Usage


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


# ------------------------------------------------------------------ 10.1 failed problems are wrong


def test_a_capped_configuration_that_fails_most_problems_does_not_beat_uncapped(tmp_path: Path) -> None:
    # adaptive self-consistency with max_calls: 1 fails every problem its first window cannot settle
    path = write(
        tmp_path,
        f"""
        name: capped
        dataset: {{name: add2, limit: 40, seed: 0}}
        backend: {{name: fake, oracle: {{p_correct: [0.3, 0.5, 0.7, 0.9], length: [20, 60]}}}}
        strategy: {{name: self_consistency, n: 16, stop: beta, window: 4, threshold: 0.95}}
        pipelines:
          - label: uncapped
          - label: capped
            budget: {{max_calls: 1}}
        comparisons: [{{a: uncapped, b: capped}}]
        out: {tmp_path / "out"}
        report: false
        """,
    )
    study = load_study(path)
    outcome = StudyRunner(study).run()
    with Store(study.store_path, readonly=True) as store:
        m = {x.label: x for x in compute_metrics(store)}
        rows = store.results(m["capped"].config_id)
        comp = compare_configs(store, "uncapped", "capped")
        last = {c.label: c.accuracy[-1] for c in curves(store, subsets=20, methods=("majority",))}
    capped, uncapped = m["capped"], m["uncapped"]
    failed = [r for r in rows if r["status"] == "failed"]
    answered = [r for r in rows if r["status"] != "failed"]
    assert len(failed) > 20, "the cap should fail most problems"
    assert capped.failure_rate == len(failed) / 40 and uncapped.failure_rate == 0
    assert capped.accuracy == pytest.approx(sum(r["correct"] for r in answered) / 40)
    assert capped.accuracy is not None and uncapped.accuracy is not None
    assert capped.accuracy < uncapped.accuracy
    # accuracy over answered is reported apart, named so, and it is the flattering one
    assert capped.accuracy_answered == pytest.approx(sum(r["correct"] for r in answered) / len(answered))
    assert capped.accuracy_answered is not None and capped.accuracy_answered > capped.accuracy
    assert comp.pairs == 40 and comp.accuracy_b == pytest.approx(capped.accuracy)
    assert last["capped"] < last["uncapped"]
    # the outcome says how many failed, for the CLI's exit code
    assert (outcome.problems, outcome.failed, outcome.timeouts) == (80, len(failed), 0)
    assert outcome.failure_rate == pytest.approx(len(failed) / 80)
    assert any(w.startswith("capped: ") and "failed" in w for w in outcome.warnings)


def _row(pid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    base.update(config_id="c1", seed=0, problem_id=pid, position=int(pid[1:]), reference="4", timed_out=0)
    base.update(prompt_tokens=10, completion_tokens=20, calls=1, n_samples=1)
    base.update(kw)
    return base


def test_a_failed_row_without_a_verdict_still_counts_as_wrong(tmp_path: Path) -> None:
    # rows written before failures were scored carry correct = NULL: leaving them out gave 1.0
    with Store(tmp_path / "results.sqlite") as store:
        store.add_config("c1", "sc", "sc", 0, None, {}, {})
        store.add_result(_row("p0", answer="4", correct=1, status="ok", latency=2.0))
        store.add_result(_row("p1", correct=None, status="failed", error="BackendError: 500", latency=9.0))
        store.add_result(_row("p2", correct=None, status="timeout", error="RequestTimeout", timed_out=1))
        store.add_result(_row("p3", answer="5", correct=0, status="cut", latency=4.0))
        (m,) = compute_metrics(store)
        # a resume runs the failed and timed-out problems again (a cut one was answered)
        assert store.done("c1", 0) == {"p0", "p3"} and store.done("c1", 0, failures=True) == {"p0", "p1", "p2", "p3"}
        assert store.statuses() == {"ok": 1, "failed": 1, "timeout": 1, "cut": 1}
    assert m.accuracy == pytest.approx(0.25) and m.accuracy_answered == pytest.approx(0.5)
    assert (m.failure_rate, m.timeout_rate, m.cut_rate) == (0.25, 0.25, 0.25)
    # latency over the answered problems only, percentiles from tts.metrics
    assert m.latency_p50 == percentile([2.0, 4.0], 50) == 3.0 and m.latency_p95 == pytest.approx(3.9)


# ------------------------------------------------------------------ 10.2 failures stored, retried


class Flaky:
    """A reply model behind a server that answers 401 (echoing the key) until it is fixed."""

    def __init__(self) -> None:
        self.down = True

    def reply(self, request: Request, prompt: str, index: int, rng: random.Random) -> tuple[str, int, float | None]:
        if self.down:
            raise BackendError("HTTP 401: invalid key; request had Authorization: Bearer sk-plantedSECRET0123456789")
        return "The answer is 7.", 5, -0.5


def flaky_study(tmp_path: Path, limit: int, extra: str = "") -> tuple[Any, Flaky, Any]:
    """(study, reply model, runner factory) of a greedy study on a server that is down."""
    path = write(
        tmp_path,
        f"""
        name: flaky
        dataset: {{name: add2, limit: {limit}}}
        backend: {{name: fake}}
        pipelines: [{{label: greedy, strategy: {{name: greedy}}}}]
        out: {tmp_path / "out"}
        allocation: null
        {extra}
        """,
    )
    study, model = load_study(path), Flaky()

    def runner(**kw: Any) -> StudyRunner:
        return StudyRunner(study, backends={"fake": FakeBackend(model)}, **kw)

    return study, model, runner


def test_failed_problems_are_stored_with_their_kind_and_retried_on_resume(tmp_path: Path) -> None:
    study, model, runner = flaky_study(tmp_path, 10)
    first = runner().run()
    write_report(study.out)
    assert (first.ran, first.failed, first.problems) == (10, 10, 10)
    with Store(study.store_path, readonly=True) as store:
        rows = store.results()
        assert {r["status"] for r in rows} == {"failed"} and all(r["correct"] == 0 for r in rows)
        assert store.statuses() == {"failed": 10}
    # the planted key never reaches the store, the CSV exports or the report
    for name in ("results.sqlite", "results.csv", "summary.csv", "report.html"):
        data = (study.out / name).read_bytes()
        assert b"plantedSECRET" not in data, name
    assert b"Bearer ***" in (study.out / "results.csv").read_bytes()
    # a resume that keeps failures runs nothing
    kept = runner(keep_failures=True).run()
    assert (kept.ran, kept.skipped, kept.failed) == (0, 10, 10)
    # the server is fixed: resume retries every failed problem, and nothing is left failed
    model.down = False
    second = runner().run()
    assert (second.ran, second.skipped, second.failed, second.problems) == (10, 0, 0, 10)
    with Store(study.store_path, readonly=True) as store:
        assert store.statuses() == {"ok": 10} and store.count() == 10
        assert all(r["error"] is None and r["answer"] == "7" for r in store.results())
        assert len(store.runs()) == 2  # the keep-failures resume ran no session


def test_the_study_option_keeps_failures(tmp_path: Path) -> None:
    _, model, runner = flaky_study(tmp_path, 3, "keep_failures: true")
    runner().run()
    model.down = False
    again = runner().run()
    assert (again.ran, again.failed) == (0, 3)
    assert runner(keep_failures=False).run().failed == 0


# ------------------------------------------------------------------ 10.7 verifier work apart


def test_verifier_calls_and_tokens_are_stored_shown_and_priced(tmp_path: Path) -> None:
    from tts.backends.base import Pricing

    problem = Problem(id="p0", question="What is 2 + 2?", reference="4")
    usage = Usage(prompt_tokens=100, completion_tokens=50, calls=2, verifier_calls=4)
    usage.verifier_prompt_tokens, usage.verifier_completion_tokens = 400, 20
    result = Result(problem=problem, answer="4", usage=usage)
    result.correct = True

    class Task:
        def equivalent(self, a: str, b: str) -> bool:
            return a == b

    row, _ = result_rows("c1", 0, 0, result, Task())
    assert (row["verifier_calls"], row["verifier_prompt_tokens"], row["verifier_completion_tokens"]) == (4, 400, 20)
    with Store(tmp_path / "results.sqlite") as store:
        store.add_config("c1", "judged", "judged", 0, None, {}, {})
        store.add_result(row)
        (m,) = compute_metrics(store, Pricing(prompt=1.0, completion=10.0))
        data = build_report_data(store)
    assert (m.total_tokens, m.verifier_tokens, m.all_tokens, m.verifier_calls) == (150, 420, 570, 4)
    assert m.cost_usd == pytest.approx(((100 + 400) * 1.0 + (50 + 20) * 10.0) / 1e6)  # verifier tokens priced
    page = render_html(data, {})
    for metric in ("verifier_tokens", "verifier_calls", "all_tokens", "accuracy_answered", "truncated_rate"):
        assert f'data-metric="{metric}"' in page
    assert 'data-metric="verifier_tokens">420.0<' in page


# ------------------------------------------------------------------ 11.4 token-limit cut-offs flagged


def test_a_configuration_cut_off_at_the_token_limit_is_flagged(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        name: truncated
        dataset: {{name: add2, limit: 30}}
        backend: {{name: fake, oracle: {{p_correct: 0.9, length: [20, 40]}}}}
        pipelines:
          - label: short
            strategy: {{name: greedy, proposer: {{sampling: {{temperature: 0, max_tokens: 8}}}}}}
          - label: enough
            strategy: {{name: greedy, proposer: {{sampling: {{temperature: 0, max_tokens: 64}}}}}}
        comparisons: [{{a: short, b: enough}}]
        out: {tmp_path / "out"}
        allocation: null
        """,
    )
    study = load_study(path)
    outcome = StudyRunner(study).run()
    write_report(study.out)
    with Store(study.store_path, readonly=True) as store:
        m = {x.label: x for x in compute_metrics(store)}
        assert all(r["truncated"] == 1 for r in store.results(m["short"].config_id))
    assert m["short"].truncated_rate == 1.0 and m["enough"].truncated_rate == 0.0
    assert [w.split(":")[0] for w in outcome.warnings] == ["short"]
    assert "token limit" in outcome.warnings[0] and "max_tokens" in outcome.warnings[0]
    assert m["short"].truncated_unanswered == 0.0 and "0% of those before any answer" in outcome.warnings[0]
    assert metric_warnings([m["enough"]]) == []
    page = (study.out / "report.html").read_text(encoding="utf-8")
    assert page.count("<li data-warning>") == 1 and "short: 100% of samples stopped at the token limit" in page
    assert "(see warnings: short)" in page  # the comparison names its caveat
    summary = (study.out / "summary.csv").read_text().splitlines()
    assert "truncated_rate" in summary[0].split(",") and "accuracy_answered" in summary[0].split(",")


# ------------------------------------------------------------------ 10.6 latency and throughput


def test_latency_and_throughput_on_a_known_virtual_clock(tmp_path: Path) -> None:
    # every engine batch costs 1.5 virtual seconds; one problem at a time: each latency is 1.5 exactly
    path = write(
        tmp_path,
        f"""
        name: clock
        dataset: {{name: add2, limit: 6}}
        backend: {{name: fake, cost: {{per_batch: 1.5}}, oracle: {{p_correct: 0.5}}}}
        run: {{concurrency: 1}}
        pipelines: [{{label: greedy, strategy: {{name: greedy}}}}]
        out: {tmp_path / "out"}
        report: false
        """,
    )
    study = load_study(path)
    StudyRunner(study).run()
    with Store(study.store_path, readonly=True) as store:
        (m,) = compute_metrics(store)
        (run,) = store.runs()
        latencies = [r["latency"] for r in store.results()]
    assert latencies == [1.5] * 6 and m.latency_p50 == m.latency_p95 == 1.5
    assert run["problems"] == 6 and m.throughput == pytest.approx(6 / run["wall"])


def test_a_session_row_is_written_at_start_and_updated_as_results_land(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    with Store(db) as store:
        store.add_config("c1", "sc", "sc", 0, None, {}, {})
        run = store.start_run("c1", 0, 123.0)
        con = sqlite3.connect(db)  # another reader sees the row before any result
        assert con.execute("SELECT problems, wall FROM runs").fetchall() == [(0, 0.0)]
        store.add_result(_row("p0", status="ok"), run={"id": run, "wall": 2.5, "problems": 1, "peak_rss_kb": 7})
        assert con.execute("SELECT problems, wall, peak_rss_kb FROM runs").fetchall() == [(1, 2.5, 7)]
        con.close()
