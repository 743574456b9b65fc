"""Search trees as pictures: where a tree search went, one PNG per problem.

Search strategies keep their tree in the trace (``result.trace.graph``, a networkx DiGraph exported
as node-link JSON under ``trace.tree``). :func:`render_tree` draws one: the root on top, one row per
depth, leaves spread left to right and each parent above its children; open states blue, pruned
ones grey, finished paths green (passed or unjudged) or red (failed by a verifier); each node is
labelled with its score. :func:`render_results` draws every tree of a results file written by
``tts-scale run --out`` (what ``tts-scale report RESULTS.jsonl`` calls). matplotlib is imported
only here, on use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tts.errors import ConfigError

__all__ = ["layout", "render_results", "render_tree", "tree_of"]

PLOT_HINT = "pip install 'tts-scale[plot]'"


def tree_of(data: Any) -> Any:
    """A DiGraph from a graph, its node-link JSON, or a result row (``row["trace"]["tree"]``)."""
    import networkx as nx

    if isinstance(data, nx.DiGraph):
        return data
    if isinstance(data, dict) and "trace" in data:
        data = (data.get("trace") or {}).get("tree")
    if not isinstance(data, dict) or "nodes" not in data:
        raise ConfigError("no search tree here: run a search strategy (tree_of_thoughts, mcts, ...) to get one.")
    return nx.node_link_graph(data, edges="edges" if "edges" in data else "links")


def layout(graph: Any) -> dict[Any, tuple[float, float]]:
    """(x, y) per node: leaves at consecutive x in depth-first order, parents centred over their
    children, y = -depth."""
    pos: dict[Any, tuple[float, float]] = {}
    roots = [n for n in graph.nodes if graph.in_degree(n) == 0]
    next_x = 0.0

    def place(n: Any, depth: int) -> float:
        nonlocal next_x
        kids = sorted(graph.successors(n))
        if kids:
            xs = [place(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x, next_x = next_x, next_x + 1.0
        pos[n] = (x, -float(depth))
        return x

    for r in sorted(roots):
        place(r, 0)
    return pos


def _color(attrs: dict[str, Any]) -> str:
    if attrs.get("terminal"):
        return "#d62728" if attrs.get("passed") is False else "#2ca02c"
    return "#b0b0b0" if attrs.get("pruned") else "#1f77b4"


def render_tree(tree: Any, path: str | Path, title: str = "") -> Path:
    """Draw ``tree`` (see :func:`tree_of`) into the PNG ``path``."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ConfigError(f"drawing search trees needs matplotlib, which is not installed: {PLOT_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    graph = tree_of(tree)
    pos = layout(graph)
    width = max((x for x, _ in pos.values()), default=0.0) + 1
    depth = -min((y for _, y in pos.values()), default=0.0) + 1
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * width, 40), 1.2 + 1.1 * depth))
    for a, b in graph.edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        ax.plot([x1, x2], [y1, y2], "-", color="#cccccc" if graph.nodes[b].get("pruned") else "#555555", lw=0.8)
    for n, (x, y) in pos.items():
        attrs = graph.nodes[n]
        ax.scatter([x], [y], s=110, color=_color(attrs), zorder=3, edgecolors="black", linewidths=0.4)
        score = attrs.get("score")
        if score is not None:
            ax.annotate(f"{score:.3g}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=6)
    ax.set_axis_off()
    nodes = graph.number_of_nodes()
    pruned = sum(1 for n in graph.nodes if graph.nodes[n].get("pruned"))
    ax.set_title(f"{title} ({nodes} nodes, {pruned} pruned)".strip(), fontsize=9)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return target


def render_results(results: str | Path, folder: str | Path | None = None, limit: int = 100) -> list[Path]:
    """One PNG per result with a search tree in a ``tts-scale run --out`` file, into ``folder``
    (default: ``RESULTS_trees/`` beside it), at most ``limit``; a file without trees is refused."""
    source = Path(results)
    out = Path(folder) if folder is not None else source.with_name(source.stem + "_trees")
    written: list[Path] = []
    with source.open(encoding="utf-8") as fh:
        for line in fh:
            if len(written) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            tree = (row.get("trace") or {}).get("tree") if isinstance(row, dict) else None
            if tree is None:
                continue
            name = re.sub(r"[^\w.-]+", "_", str(row.get("id", len(written))))[:80]
            written.append(
                render_tree(tree, out / f"{name}.png", title=f"{row.get('strategy', '')} {row.get('id', '')}")
            )
    if not written:
        raise ConfigError(
            f"{str(source)!r} holds no search trees, and it is not a study's output: pass the --out file of "
            "`tts-scale run` with a search strategy (tree_of_thoughts, mcts, ...) or a study's folder."
        )
    return written
