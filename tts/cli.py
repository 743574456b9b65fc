"""The ``tts-scale`` command line: a thin layer over the Python API.

- ``run``: one pipeline (a YAML file and/or flags) over a dataset, with a summary table;
- ``demo``: the CPU demo, greedy against self-consistency with a paired bootstrap;
- ``study``: pipelines x budgets x seeds into SQLite, resumable, ``--dry-run`` to cost it first
  (:mod:`tts.study`);
- ``report``: PNG plots and one HTML page from a study's results (:mod:`tts.report`).

Flags override the file. Configuration and usage errors exit with code 2 and one line naming the
field and the fix; runtime failures exit with code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, Any

import typer

from tts.errors import ConfigError, TTSError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Test-time scaling and reasoning orchestration for LLMs.")
log = logging.getLogger("tts")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _fail(exc: BaseException) -> None:
    code = 2 if isinstance(exc, ConfigError) else 1
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def _set_sampling(options: dict[str, Any], cls: Any, **changes: Any) -> None:
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return
    if "sampling" not in cls.Options.model_fields:
        raise ConfigError(f"--{next(iter(changes)).replace('_', '-')} does not apply to this strategy; drop it.")
    base = options.get("sampling") or cls.Options.model_fields["sampling"].default
    base = base.model_dump(by_alias=True) if hasattr(base, "model_dump") else dict(base)
    options["sampling"] = {**base, **changes}


def build_from_spec(spec: Any) -> tuple[Any, Any, Any]:
    """(backend, dataset, strategy) from a :class:`~tts.pipeline.PipelineSpec` (the dataset carries
    the pipeline's task overrides; the strategy its budgets)."""
    from tts.pipeline import build_pipeline

    pipeline = build_pipeline(spec)
    return pipeline.backend, pipeline.dataset, pipeline.strategy


def _progress_runner(label: str, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=False, disable=not sys.stderr.isatty())
    return progress


def _execute(backend: Any, dataset: Any, strategy: Any, *, concurrency: int, seed: int, out: IO[str] | None,
             label: str) -> Any:
    from tts.runner import arun, run_sync
    from tts.scheduler import Scheduler

    scheduler = backend if isinstance(backend, Scheduler) else Scheduler(backend)
    progress = _progress_runner(label, len(dataset))

    def on_result(result: Any) -> None:
        if out is not None:
            out.write(json.dumps(result.to_dict(), default=str) + "\n")
            out.flush()

    with progress:
        task_id = progress.add_task(label, total=len(dataset))
        report = run_sync(lambda: arun(strategy, dataset.problems, scheduler, task=dataset.task,
                                       concurrency=concurrency, seed=seed, on_result=on_result,
                                       progress=lambda done, total: progress.update(task_id, completed=done)))
    return report


def _summary_table(reports: list[Any]) -> Any:
    """Metrics as rows, one column per run (fits a narrow terminal)."""
    from rich.table import Table

    table = Table(title="tts-scale run")
    table.add_column("metric")
    summaries = [r.summary() for r in reports]
    for s in summaries:
        table.add_column(s.strategy, justify="right")

    def acc(s: Any) -> str:
        if s.accuracy is None:
            return "n/a"
        return f"{s.accuracy:.3f} [{s.accuracy_ci[0]:.3f}, {s.accuracy_ci[1]:.3f}]"

    rows: list[tuple[str, Any]] = [
        ("accuracy [95% CI]", acc),
        ("problems", lambda s: str(s.problems)),
        ("prompt tokens / problem", lambda s: f"{s.prompt_tokens_per_problem:.1f}"),
        ("cached prompt tokens / problem", lambda s: f"{s.cached_prompt_tokens_per_problem:.1f}"),
        ("completion tokens / problem", lambda s: f"{s.completion_tokens_per_problem:.1f}"),
        ("calls / problem", lambda s: f"{s.calls_per_problem:.2f}"),
        ("latency P50 / P95 (s)", lambda s: f"{s.latency_p50:.3f} / {s.latency_p95:.3f}"),
        ("wall time (s)", lambda s: f"{s.wall_time:.2f}"),
        ("failures", lambda s: str(s.failures)),
    ]
    for label, fmt in rows:
        table.add_row(label, *(fmt(s) for s in summaries))
    return table


def _print(obj: Any) -> None:
    from rich.console import Console

    Console().print(obj)


@app.command()
def run(
    pipeline: Path | None = typer.Argument(None, help="Pipeline YAML file; flags override it."),
    dataset: str | None = typer.Option(None, help="NAME[:N[:SEED]], a .jsonl/.csv path or hf:OWNER/NAME."),
    strategy: str | None = typer.Option(None, help="Strategy name (greedy, cot, self_consistency, ...)."),
    n: int | None = typer.Option(None, help="Samples per problem (strategies with n)."),
    backend: str | None = typer.Option(None, help="hf (default), fake, vllm or openai."),
    model: str | None = typer.Option(None, help="Model id or local folder (default: SmolLM2-135M-Instruct)."),
    limit: int | None = typer.Option(None, help="Number of problems."),
    seed: int | None = typer.Option(None, help="Run seed (problem subsets, sampling)."),
    temperature: float | None = typer.Option(None, help="Sampling temperature."),
    max_tokens: int | None = typer.Option(None, help="Maximum generated tokens per completion."),
    concurrency: int | None = typer.Option(None, help="Problems in flight at once."),
    data_dir: str | None = typer.Option(None, help="Folder with local benchmark files (gsm8k_test.jsonl, ...)."),
    out: Path | None = typer.Option(None, help="Write every result as a JSON line as it finishes."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a strategy over a dataset and print a summary table."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    try:
        from tts.pipeline import PipelineSpec, load_pipeline
        from tts.registry import REGISTRY

        spec = load_pipeline(pipeline) if pipeline is not None else PipelineSpec()
        if dataset is not None:
            from tts.datasets import parse_spec

            name, lim, dseed = parse_spec(dataset)
            spec.dataset.name, spec.dataset.limit, spec.dataset.seed = name, lim, dseed
        if limit is not None:
            spec.dataset.limit = limit
        if data_dir is not None:
            spec.dataset.data_dir = data_dir
        if strategy is not None:
            spec.strategy = type(spec.strategy)(name=strategy)
        if backend is not None:
            spec.backend.name = backend
        if model is not None:
            spec.backend.options["model"] = model
        if seed is not None:
            spec.run.seed = seed
        if concurrency is not None:
            spec.run.concurrency = concurrency
        if out is not None:
            spec.run.out = str(out)
        cls = REGISTRY.get("strategy", spec.strategy.name)
        options = spec.strategy.options()
        if n is not None:
            if "n" not in cls.Options.model_fields:
                raise ConfigError(f"--n does not apply to strategy {spec.strategy.name!r}; drop it.")
            options["n"] = n
        _set_sampling(options, cls, temperature=temperature, max_tokens=max_tokens)
        spec.strategy = type(spec.strategy)(name=spec.strategy.name, limits=spec.strategy.limits, **options)
        be, ds, strat = build_from_spec(spec)
        fh = open(spec.run.out, "a", encoding="utf-8") if spec.run.out else None  # noqa: SIM115
        try:
            report = _execute(be, ds, strat, concurrency=spec.run.concurrency, seed=spec.run.seed, out=fh,
                              label=spec.strategy.name)
        finally:
            if fh is not None:
                fh.close()
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    _print(_summary_table([report]))
    failed = [r for r in report.results if not r.ok]
    if failed:  # runtime failures: the summary is printed, the exit code says the run was not clean
        typer.echo(f"error: {len(failed)} of {len(report.results)} problems failed; first: {failed[0].error}",
                   err=True)
        raise typer.Exit(1)


@app.command()
def demo(
    task: str = typer.Option("larger", help="Built-in task: larger, capitals, add1, add2."),
    limit: int = typer.Option(100, help="Number of problems."),
    n: int = typer.Option(8, help="Self-consistency samples."),
    backend: str = typer.Option("hf", help="Backend (default: the embedded transformers CPU backend)."),
    model: str | None = typer.Option(None, help="Model id or local folder (default: SmolLM2-135M-Instruct)."),
    seed: int = typer.Option(0, help="Seed of the problem set and the samples."),
    max_tokens: int = typer.Option(24, help="Maximum generated tokens per answer (both strategies)."),
    temperature: float = typer.Option(0.7, help="Self-consistency sampling temperature."),
    out: Path | None = typer.Option(None, help="Write every result as a JSON line."),
) -> None:
    """The CPU demo: greedy against self-consistency on a built-in task, with a paired bootstrap.

    Both strategies get the same direct prompt, answer extraction and token limit; they differ only
    in decoding (argmax versus n samples at ``temperature`` and a majority vote).
    """
    logging.basicConfig(level=logging.WARNING)
    try:
        from tts.backends import make_backend
        from tts.datasets import load_dataset
        from tts.runner import compare
        from tts.scheduler import Scheduler
        from tts.strategies.greedy import Greedy
        from tts.strategies.self_consistency import SelfConsistency

        ds = load_dataset(task, limit=limit, seed=seed)
        be = make_backend(backend, **({"model": model} if model else {}))
        scheduler = Scheduler(be)
        fh = open(out, "a", encoding="utf-8") if out else None  # noqa: SIM115
        try:
            greedy_strategy = Greedy(prompt="direct", sampling={"temperature": 0, "max_tokens": max_tokens})
            sc_strategy = SelfConsistency(n=n, prompt="direct",
                                          sampling={"temperature": temperature, "max_tokens": max_tokens})
            greedy = _execute(scheduler, ds, greedy_strategy, concurrency=limit, seed=seed, out=fh, label="greedy")
            sc = _execute(scheduler, ds, sc_strategy, concurrency=limit, seed=seed, out=fh,
                          label=f"self_consistency@{n}")
        finally:
            if fh is not None:
                fh.close()
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    _print(_summary_table([greedy, sc]))
    c = compare(greedy, sc)
    typer.echo(f"greedy accuracy: {c.accuracy_a:.3f}")
    typer.echo(f"self_consistency@{n} accuracy: {c.accuracy_b:.3f}")
    typer.echo(f"difference: {c.difference:+.3f} (paired bootstrap 95% CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], "
               f"{c.problems} problems)")


def _print_wide(obj: Any) -> None:
    """Print a table at full width even when the output is not a terminal (logs, CI)."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 160).print(obj)


def _parse_sets(values: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set must be KEY=VALUE with a dotted key (strategy.n=4), got {item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers (0,1,2), got {text!r}.") from None


def _plan_table(rows: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title="tts-scale study --dry-run")
    for col in ("configuration", "problems", "seeds", "to run", "generations", "prompt tokens (est.)",
                "completion tokens (at most)", "estimate"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        table.add_row(r.label, str(r.problems), str(r.seeds), str(r.remaining), f"{r.generations:,}",
                      f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", r.method)
    return table


def _study_table(metrics: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title="tts-scale study")
    for col in ("configuration", "accuracy [95% CI]", "tokens/problem", "samples", "calls", "P50 latency",
                "failures"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for m in metrics:
        acc = "n/a" if m.accuracy is None else f"{m.accuracy:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        p50 = "n/a" if m.latency_p50 is None else f"{m.latency_p50:.3f}"
        table.add_row(m.label, acc, f"{m.total_tokens:.1f}", f"{m.samples:.1f}", f"{m.calls:.2f}", p50,
                      f"{m.failure_rate + m.timeout_rate:.3f}")
    return table


@app.command()
def study(
    study_file: Path = typer.Argument(..., help="Study YAML (pipelines x budgets x seeds), or one pipeline YAML."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the generations and tokens needed; run nothing."),
    limit: int | None = typer.Option(None, help="Problems per configuration (overrides every dataset.limit)."),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2."),
    backend: str | None = typer.Option(None, help="Backend of every pipeline (hf, vllm, openai, fake)."),
    model: str | None = typer.Option(None, help="Model of every pipeline's backend."),
    data_dir: str | None = typer.Option(None, help="Folder with local benchmark files."),
    concurrency: int | None = typer.Option(None, help="Problems in flight at once."),
    out: Path | None = typer.Option(None, help="Output folder (results.sqlite, manifest, CSV, report)."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE for every pipeline (dotted key, YAML value); "
                                   "repeatable, e.g. --set strategy.n=4."),
    report: bool | None = typer.Option(None, "--report/--no-report", help="Write the report at the end."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a study; results land in SQLite as each problem finishes, and a rerun resumes."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    try:
        from tts.study import StudyRunner, load_study

        sections: dict[str, Any] = {}
        if limit is not None:
            sections.setdefault("dataset", {})["limit"] = limit
        if data_dir is not None:
            sections.setdefault("dataset", {})["data_dir"] = data_dir
        if backend is not None:
            sections["backend"] = {"name": backend}
        if model is not None:
            sections.setdefault("backend", {})["model"] = model
        if concurrency is not None:
            sections["run"] = {"concurrency": concurrency}
        spec = load_study(study_file, sections=sections, overrides=_parse_sets(set_),
                          seeds=_parse_seeds(seeds) if seeds else None, out=out)
        if dry_run:
            rows = StudyRunner(spec).plan()
            _print_wide(_plan_table(rows))
            typer.echo(f"configurations={len(rows)}")
            typer.echo(f"generations={sum(r.generations for r in rows)}")
            typer.echo(f"prompt_tokens_estimate={sum(r.prompt_tokens for r in rows)}")
            typer.echo(f"completion_tokens_at_most={sum(r.completion_tokens for r in rows)}")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            disable=not sys.stderr.isatty())
        tasks: dict[str, Any] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        with progress:
            outcome = StudyRunner(spec, progress=on_progress).run()
        from tts.analysis import Price, compute_metrics
        from tts.store import Store

        with Store(outcome.store, readonly=True) as store:
            price = Price(**spec.spec.price.model_dump()) if spec.spec.price else None
            metrics = compute_metrics(store, price)
        _print_wide(_study_table(metrics))
        typer.echo(f"ran {outcome.ran} problems, {outcome.skipped} already stored; results in {outcome.store}")
        if report if report is not None else spec.spec.report:
            try:
                from tts.report import write_report

                files = write_report(outcome.out)
                typer.echo(f"report: {files.html}")
            except ConfigError as exc:
                typer.echo(f"no report: {exc}", err=True)
    except (TTSError, OSError) as exc:
        _fail(exc)


@app.command("report")
def report_cmd(
    out: Path = typer.Argument(..., help="A study's output folder (or its results.sqlite)."),
    html: Path | None = typer.Option(None, help="Where to write the HTML page (default: OUT/report.html)."),
    price_prompt: float | None = typer.Option(None, help="USD per million prompt tokens (cost column)."),
    price_completion: float | None = typer.Option(None, help="USD per million completion tokens."),
) -> None:
    """PNG plots and one self-contained HTML page from a study's results."""
    logging.basicConfig(level=logging.WARNING)
    try:
        from tts.analysis import Price
        from tts.report import write_report

        price = None
        if price_prompt is not None or price_completion is not None:
            price = Price(prompt=price_prompt or 0.0, completion=price_completion or 0.0)
        if not out.exists():
            raise ConfigError(f"study output {str(out)!r} not found; pass the folder a study wrote (its --out).")
        files = write_report(out, html_path=html, price=price)
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    typer.echo(f"report: {files.html}")
    for name, path in files.images.items():
        typer.echo(f"{name}: {path}")


# `tts-scale index` (retrieval indexes) and `tts-scale serve` (an OpenAI-compatible endpoint) are
# added beside these commands.


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
