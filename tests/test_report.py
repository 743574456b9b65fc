"""The report: its numbers equal aggregates computed straight from SQLite, its plots are PNGs
embedded in one self-contained HTML page, and it says how to install matplotlib when missing."""

from __future__ import annotations

import base64
import re
import sqlite3
import sys
import textwrap
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tts.backends.base import Pricing
from tts.cli import app
from tts.errors import ConfigError
from tts.study import StudyRunner, load_study
from tts.study.report import write_report

DIGITS = {
    "accuracy": 4,
    "prompt_tokens": 1,
    "completion_tokens": 1,
    "total_tokens": 1,
    "calls": 2,
    "samples": 2,
    "failure_rate": 4,
    "consistency": 4,
    "readability": 2,
    "cost_usd": 6,
}


class Cells(HTMLParser):
    """Collects table cells that carry data-config / data-metric attributes, and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.images: list[str] = []
        self._key: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-metric"):
            self._key = (a.get("data-config") or "", a["data-metric"] or "")
        if tag == "img":
            self.images.append(a.get("src") or "")

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.cells[self._key] = data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None


@pytest.fixture(scope="module")
def study_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "study.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: report-test
        dataset: {{name: add2, limit: 40}}
        backend:
          name: fake
          oracle: {{p_correct: [0.3, 0.6, 0.9], length: [10, 50]}}
          pricing: {{prompt: 0.5, completion: 2.0}}
        pipelines:
          - {{label: greedy, strategy: {{name: greedy}}, sweep: {{}}}}
          - {{label: sc, strategy: {{name: self_consistency}}}}
        n_values: [8]
        sweep: {{strategy.proposer.sampling.temperature: [0.5, 1.0]}}
        seeds: [0, 1]
        comparisons: [{{a: greedy, b: sc n=8 T=1.0}}]
        out: {tmp / "out"}
        """).lstrip()
    )
    StudyRunner(load_study(path)).run()
    return tmp / "out"


def _sql_aggregates(db: Path) -> dict[tuple[str, str], float]:
    con = sqlite3.connect(db)
    out: dict[tuple[str, str], float] = {}
    for (cid,) in con.execute("SELECT config_id FROM configs"):
        per = [
            r[0]
            for r in con.execute(
                "SELECT AVG(correct) FROM results WHERE config_id = ? AND correct IS NOT NULL GROUP BY problem_id",
                (cid,),
            )
        ]
        out[(cid, "accuracy")] = sum(per) / len(per)
        p, c, t, calls, n, fails, agree, read = con.execute(
            "SELECT AVG(prompt_tokens), AVG(completion_tokens), AVG(prompt_tokens + completion_tokens), AVG(calls), "
            "AVG(n_samples), AVG(error IS NOT NULL), AVG(agreement), AVG(readability) FROM results "
            "WHERE config_id = ?",
            (cid,),
        ).fetchone()
        cost = con.execute("SELECT AVG(cost) FROM results WHERE config_id = ?", (cid,)).fetchone()[0]
        verifier, answered = con.execute(
            "SELECT AVG(verifier_prompt_tokens + verifier_completion_tokens), "
            "AVG(CASE WHEN status IN ('failed', 'timeout') THEN NULL ELSE correct END) FROM results "
            "WHERE config_id = ?",
            (cid,),
        ).fetchone()
        (truncated,) = con.execute(
            "SELECT AVG(finish_reason = 'length') FROM samples WHERE config_id = ?", (cid,)
        ).fetchone()
        assert cost == pytest.approx((p * 0.5 + c * 2.0) / 1e6)  # charged from the backend's pricing
        out.update(
            {
                (cid, "prompt_tokens"): p,
                (cid, "completion_tokens"): c,
                (cid, "total_tokens"): t,
                (cid, "calls"): calls,
                (cid, "samples"): n,
                (cid, "failure_rate"): fails,
                (cid, "readability"): read,
                (cid, "cost_usd"): cost,
                (cid, "verifier_tokens"): verifier,
                (cid, "accuracy_answered"): answered,  # no failures here: one row per problem and seed
                (cid, "truncated_rate"): truncated,
            }
        )
        if agree is not None:
            out[(cid, "consistency")] = agree
        # the curves' last point: a plurality vote over every sample (ties: the first sampled)
        groups: dict[tuple[int, str], list[tuple[int, str | None, int]]] = defaultdict(list)
        for seed, pid, idx, key, ok in con.execute(
            "SELECT seed, problem_id, idx, key, correct FROM samples WHERE config_id = ?", (cid,)
        ):
            groups[(seed, pid)].append((idx, key, ok))
        size = min(len(g) for g in groups.values())
        if size > 1:
            votes: dict[str, list[float]] = defaultdict(list)
            passed: dict[str, list[float]] = defaultdict(list)
            for (_, pid), g in groups.items():
                g.sort()
                counts = Counter(k for _, k, _ in g if k)
                best = max(counts.values())
                winner = next(k for _, k, _ in g if k and counts[k] == best)
                votes[pid].append(float(next(ok for _, k, ok in g if k == winner)))
                passed[pid].append(sum(ok for _, _, ok in g) / len(g))
            out[(cid, f"curve:majority:{size}")] = sum(sum(v) / len(v) for v in votes.values()) / len(votes)
            out[(cid, "curve:pass@k:1")] = sum(sum(v) / len(v) for v in passed.values()) / len(passed)
    con.close()
    return out


def test_html_numbers_equal_the_sqlite_aggregates(study_out: Path) -> None:
    files = write_report(study_out)
    parser = Cells()
    parser.feed(files.html.read_text(encoding="utf-8"))
    expected = _sql_aggregates(study_out / "results.sqlite")
    checked = 0
    for (cid, metric), value in expected.items():
        shown = parser.cells[(cid, metric)]
        digits = DIGITS.get(metric, 4)
        assert float(shown) == pytest.approx(value, abs=0.51 * 10**-digits), (cid, metric, shown, value)
        checked += 1
    assert checked == 3 * 12 + 2 + 2 * 2  # 12 metrics x 3 configurations, consistency and 2 curve points x 2 sc
    comp = {m: float(v) for (k, m), v in parser.cells.items() if k == "greedy|sc n=8 T=1.0"}
    assert comp["difference"] == pytest.approx(comp["accuracy_b"] - comp["accuracy_a"], abs=2e-4)
    assert comp["ci_low"] <= comp["difference"] <= comp["ci_high"]


def test_a_report_can_price_a_study_afterwards(study_out: Path, tmp_path: Path) -> None:
    files = write_report(study_out, html_path=tmp_path / "priced.html", pricing=Pricing(prompt=1.0, completion=3.0))
    parser = Cells()
    parser.feed(files.html.read_text(encoding="utf-8"))
    con = sqlite3.connect(study_out / "results.sqlite")
    rows = con.execute("SELECT config_id, AVG(prompt_tokens), AVG(completion_tokens) FROM results GROUP BY config_id")
    for cid, p, c in rows.fetchall():
        assert float(parser.cells[(cid, "cost_usd")]) == pytest.approx((p * 1.0 + c * 3.0) / 1e6, abs=6e-7)
    con.close()


def test_report_embeds_its_png_plots(study_out: Path) -> None:
    files = write_report(study_out, html_path=study_out / "custom.html")
    assert set(files.images) == {"accuracy_tokens", "accuracy_n", "temperature", "latency"}
    parser = Cells()
    parser.feed(files.html.read_text(encoding="utf-8"))
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in parser.images]
    assert len(embedded) == 4 and all(b.startswith(b"\x89PNG\r\n\x1a\n") for b in embedded)
    assert {files.images[k].read_bytes() for k in files.images} == set(embedded)
    assert not re.search(r'src="(?!data:)', files.html.read_text())  # self-contained: nothing linked


def test_report_cli_and_missing_matplotlib(study_out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["report", str(study_out)])
    assert result.exit_code == 0 and "report:" in result.output and "accuracy_n:" in result.output
    missing = CliRunner().invoke(app, ["report", str(study_out / "nope")])
    assert missing.exit_code == 2 and "not found" in missing.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'tts-scale[plot]'")):
        write_report(study_out)
    result = CliRunner().invoke(app, ["report", str(study_out)])
    assert result.exit_code == 2 and "tts-scale[plot]" in result.output


@pytest.mark.hf
def test_hf_study_produces_a_report(tmp_path: Path, data_dir: Path, hf_study_backend: Any) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: hf-smoke
        backend: {{name: hf}}
        pipelines:
          - label: demo-greedy
            dataset: {{name: larger, limit: 3}}
            task: {{answer_format: first_number}}
            strategy: {{name: greedy, proposer: {{prompt: direct, sampling: {{temperature: 0, max_tokens: 8}}}}}}
          - label: demo-sc
            dataset: {{name: larger, limit: 3}}
            strategy:
              name: self_consistency
              n: 3
              proposer: {{prompt: direct, sampling: {{temperature: 0.8, max_tokens: 8}}}}
          - label: gsm8k-sc
            dataset: {{name: gsm8k, limit: 2, data_dir: {data_dir}}}
            strategy: {{name: self_consistency, n: 2, proposer: {{sampling: {{temperature: 0.8, max_tokens: 24}}}}}}
        seeds: [0]
        out: {tmp_path / "out"}
        """).lstrip()
    )
    outcome = StudyRunner(load_study(path), backends={"hf": hf_study_backend}).run()
    assert outcome.ran == 8
    files = write_report(outcome.out)
    text = files.html.read_text()
    assert "demo-sc" in text and "gsm8k-sc" in text and len(files.images) >= 3
    import json

    manifest = json.loads((outcome.out / "manifest.json").read_text())
    assert manifest["models"][0]["backend"] == "hf" and len(manifest["models"][0]["sha256"]) == 64


@pytest.fixture(scope="module")
def hf_study_backend() -> Any:
    from tts.backends.hf import HFBackend

    return HFBackend(threads=1)
