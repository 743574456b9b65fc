"""The search tree as data and as a picture: a tree-of-thoughts run written by ``tts-scale run
--out`` carries its tree, and ``tts-scale report RESULTS.jsonl`` draws one PNG per problem."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tts.cli import app
from tts.tree_plot import layout, render_tree, tree_of

runner = CliRunner()


def test_layout_puts_parents_over_their_children() -> None:
    import networkx as nx

    g = nx.DiGraph([(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)])
    pos = layout(g)
    assert [pos[n][1] for n in range(6)] == [0, -1, -1, -2, -2, -2]
    assert [pos[n][0] for n in (3, 4, 5)] == [0, 1, 2] and pos[1][0] == 0.5 and pos[0][0] == (0.5 + 2) / 2


def test_run_then_report_draws_each_tree(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    args = [
        "run",
        "--backend",
        "fake",
        "--dataset",
        "add1:2",
        "--strategy",
        "tree_of_thoughts",
        "--set",
        "strategy.breadth=2",
        "--set",
        "strategy.samples=2",
        "--set",
        "strategy.max_depth=2",
        "--set",
        "strategy.evaluator=vote",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tree = tree_of(rows[0])
    assert tree.number_of_nodes() >= 2 and all("pruned" in tree.nodes[n] for n in tree.nodes)
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    pngs = sorted((tmp_path / "results_trees").glob("*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert report.output.count("tree: ") == 2


def test_a_results_file_without_trees_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "plain.jsonl"
    out.write_text(json.dumps({"id": "a", "trace": {"events": []}}) + "\n")
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 2 and "holds no search trees" in report.output


def test_render_tree_writes_a_png(tmp_path: Path) -> None:
    data = {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [{"id": 0, "score": None}, {"id": 1, "score": 0.5, "pruned": True}, {"id": 2, "terminal": True}],
        "edges": [{"source": 0, "target": 1}, {"source": 0, "target": 2}],
    }
    path = render_tree(data, tmp_path / "t.png", title="x")
    assert path.stat().st_size > 1000
