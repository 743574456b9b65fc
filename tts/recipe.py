"""The shape every Python recipe shares: the same flags, a progress display and the CLI's table.

A recipe defines ``build(limit, data_dir) -> (dataset, task, strategy)`` and calls
:func:`main`::

    def main(argv=None):
        tts.recipe.main(build, argv, doc=__doc__, concurrency=16, limits=BUDGET)

which parses ``--limit --data-dir --backend --model --concurrency``, runs the strategy with the
progress display of ``tts-scale run`` (:mod:`tts.progress`) and prints its summary table. A
configuration error prints one line and exits 2; a runtime error exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tts.errors import ConfigError, TTSError

__all__ = ["arguments", "backend_of", "main", "print_table"]


def arguments(
    doc: str | None, argv: Sequence[str] | None = None, *, limit: int | None = 50, concurrency: int = 16
) -> argparse.Namespace:
    """The flags every recipe takes (``limit``, ``concurrency``: the recipe's defaults)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--limit", type=int, default=limit, help=f"number of problems (default: {limit or 'the recipe'})"
    )
    parser.add_argument("--data-dir", default=None, help="folder with local benchmark files (default: $TTS_DATA_DIR)")
    parser.add_argument("--backend", default="hf", help="hf (default), fake, vllm or openai")
    parser.add_argument("--model", default=None, help="model id or local folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--concurrency", type=int, default=concurrency, help=f"problems in flight (default: {concurrency})"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}.")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {args.concurrency}.")
    return args


def print_table(reports: list[Any], title: str = "tts-scale run") -> None:
    """Print the summary table of ``tts-scale run`` for ``reports`` (one column each)."""
    from rich.console import Console

    from tts.progress import summary_table

    Console().print(summary_table(reports, title=title))


def backend_of(args: argparse.Namespace) -> Any:
    """The backend the flags name (``--backend``, ``--model``)."""
    from tts.config import make_backend

    return make_backend(args.backend, **({"model": args.model} if args.model else {}))


def main(
    build: Callable[[int | None, str | None], tuple[Any, Any, Any]],
    argv: Sequence[str] | None = None,
    *,
    doc: str | None = None,
    limit: int | None = 50,
    concurrency: int = 16,
    limits: Any = None,
) -> Any:
    """Parse the common flags, ``build(limit, data_dir)``, run with a progress display and print
    the table; return the :class:`~tts.runner.Report`. Errors print one line and exit (2: the
    configuration, 1: the run)."""
    args = arguments(doc, argv, limit=limit, concurrency=concurrency)
    try:
        data, task, strategy = build(args.limit, args.data_dir)
        from tts.progress import execute

        report = execute(
            backend_of(args),
            data,
            strategy,
            task=task,
            label=getattr(strategy, "name", type(strategy).__name__),
            concurrency=args.concurrency,
            limits=limits,
        )
    except TTSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None
    print_table([report])
    return report
