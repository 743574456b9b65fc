"""The ``tts-scale`` command line: a thin layer over the Python API.

- ``run``: one pipeline (a YAML file and/or flags) over a dataset, with a summary table;
- ``demo``: the CPU demo, greedy against self-consistency with a paired bootstrap;
- ``study``: pipelines x budgets x seeds into SQLite, resumable, ``--dry-run`` to cost it first
  (:mod:`tts.study`);
- ``report``: PNG plots and one HTML page from a study's results (:mod:`tts.study.report`).

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

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Test-time scaling and reasoning orchestration for LLMs."
)
log = logging.getLogger("tts")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


VERBOSE = typer.Option(False, "--verbose", "-v", help="Log what the library does (INFO).")


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)


def _fail(exc: BaseException) -> None:
    code = 2 if isinstance(exc, ConfigError) else 1
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def _default(cls: Any, field: str) -> Any:
    value = cls.Options.model_fields[field].get_default(call_default_factory=True)
    return value.model_dump(by_alias=True, exclude_unset=True) if hasattr(value, "model_dump") else value


def _nested_set(options: dict[str, Any], cls: Any, path: tuple[str, ...], value: Any) -> None:
    """Set ``options[path]``, filling each missing level from the option's default (a proposer
    spec, sampling parameters) so the rest of it is kept."""
    from tts.config.components import field_kind
    from tts.registry import REGISTRY

    node, owner = options, cls
    for key in path[:-1]:
        current = node.get(key)
        if current is None and owner is not None:
            current = _default(owner, key)
        current = {"name": current} if isinstance(current, str) else dict(current or {})
        kind = field_kind(owner.Options, key) if owner is not None else None
        node[key], node = current, current
        owner = REGISTRY.get(kind, current["name"]) if kind and isinstance(current.get("name"), str) else None
    node[path[-1]] = value


def _option_path(cls: Any, field: str) -> tuple[str, ...] | None:
    """Where ``field`` (sampling, prompt) lives in strategy ``cls``'s options: its own field, else
    the field of its proposer (a field typed ``ProposerSpec``); ``None`` when neither has it."""
    fields = cls.Options.model_fields
    if field in fields:
        return (field,)
    from tts.config.components import field_kind

    return next(((name, field) for name in fields if field_kind(cls.Options, name) == "proposer"), None)


def strategy_spec(
    name: str,
    base: dict[str, Any] | None = None,
    *,
    n: int | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    """The strategy mapping ``{name, options...}`` with the CLI's flags written where the strategy
    keeps them (``strategy.n``, ``strategy.proposer.sampling.temperature``, ...)."""
    from tts.registry import REGISTRY

    cls = REGISTRY.get("strategy", name)
    options = {k: v for k, v in (base or {}).items() if k != "name"}
    if n is not None:
        if "n" not in cls.Options.model_fields:
            raise ConfigError(f"--n does not apply to strategy {name!r}; drop it.")
        options["n"] = n
    for flag, field, key, value in (
        ("--temperature", "sampling", "temperature", temperature),
        ("--max-tokens", "sampling", "max_tokens", max_tokens),
        ("--prompt", "prompt", None, prompt),
    ):
        if value is None:
            continue
        path = _option_path(cls, field)
        if path is None:
            raise ConfigError(f"{flag} does not apply to strategy {name!r}; drop it.")
        _nested_set(options, cls, (*path, key) if key else path, value)
    return {"name": name, **options}


def build_from_spec(spec: Any) -> tuple[Any, Any, Any]:
    """(backend, dataset, strategy) from a :class:`~tts.config.PipelineSpec` (the dataset carries
    the pipeline's task overrides)."""
    from tts.config import build_pipeline

    pipeline = build_pipeline(spec)
    return pipeline.backend, pipeline.dataset, pipeline.strategy


def _progress_runner(label: str, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        disable=not sys.stderr.isatty(),
    )
    return progress


def _execute(backend: Any, dataset: Any, strategy: Any, *, out: IO[str] | None, label: str, **run: Any) -> Any:
    """One run through :func:`tts.runner.arun` (``run``: its options: concurrency, seed, limits,
    total_limits), with a progress bar and every result written to ``out`` as it finishes."""
    from tts.runner import arun, as_scheduler, run_sync

    scheduler = as_scheduler(backend)
    progress = _progress_runner(label, len(dataset))

    def on_result(result: Any) -> None:
        if out is not None:
            out.write(json.dumps(result.to_dict(), default=str) + "\n")
            out.flush()

    with progress:
        task_id = progress.add_task(label, total=len(dataset))
        report = run_sync(
            lambda: arun(
                strategy,
                dataset.problems,
                scheduler,
                task=dataset.task,
                on_result=on_result,
                progress=lambda now: progress.update(task_id, completed=now.done),
                **run,
            )
        )
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
    prompt: str | None = typer.Option(None, help="Prompt style of the strategy's proposer (direct, cot, ...)."),
    concurrency: int | None = typer.Option(None, help="Problems in flight at once."),
    data_dir: str | None = typer.Option(None, help="Folder with local benchmark files (gsm8k_test.jsonl, ...)."),
    out: Path | None = typer.Option(None, help="Write every result as a JSON line as it finishes."),
    set_: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE (dotted key, YAML value); repeatable, e.g. --set budget.total_tokens=50000."
    ),
    verbose: bool = VERBOSE,
) -> None:
    """Run a strategy over a dataset and print a summary table."""
    _logging(verbose)
    try:
        from tts.config import load_pipeline

        overrides: dict[str, Any] = {}
        if dataset is not None:
            from tts.datasets import parse_spec

            name, lim, dseed = parse_spec(dataset)
            overrides.update({"dataset.name": name, "dataset.limit": lim, "dataset.seed": dseed})
        flags = {
            "dataset.limit": limit,
            "dataset.data_dir": data_dir,
            "strategy.name": strategy,
            "backend.name": backend,
            "backend.model": model,
            "run.seed": seed,
            "run.concurrency": concurrency,
            "run.out": None if out is None else str(out),
        }
        overrides.update({k: v for k, v in flags.items() if v is not None})
        overrides.update(_parse_sets(set_))

        def edit(data: dict[str, Any]) -> dict[str, Any]:
            if n is None and temperature is None and max_tokens is None and prompt is None:
                return data
            block = data.get("strategy") or {}
            block = {"name": block} if isinstance(block, str) else dict(block)
            name = block.get("name", "self_consistency")
            return {
                **data,
                "strategy": strategy_spec(
                    name, block, n=n, temperature=temperature, max_tokens=max_tokens, prompt=prompt
                ),
            }

        spec = load_pipeline(pipeline, overrides, edit=edit)
        be, ds, strat = build_from_spec(spec)
        fh = open(spec.run.out, "a", encoding="utf-8") if spec.run.out else None  # noqa: SIM115
        try:
            report = _execute(
                be,
                ds,
                strat,
                out=fh,
                label=spec.strategy.name,
                concurrency=spec.run.concurrency,
                seed=spec.run.seed,
                limits=spec.budget.per_problem(),
                total_limits=spec.budget.total(),
            )
        finally:
            if fh is not None:
                fh.close()
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    _print(_summary_table([report]))
    failed = [r for r in report.results if not r.ok]
    if failed:  # runtime failures: the summary is printed, the exit code says the run was not clean
        typer.echo(f"error: {len(failed)} of {len(report.results)} problems failed; first: {failed[0].error}", err=True)
    if report.unstarted:
        typer.echo(
            f"error: budget.total_tokens={spec.budget.total_tokens} reached; {report.unstarted} of "
            f"{report.unstarted + len(report.results)} problems not started (raise it to run them).",
            err=True,
        )
    if failed or report.unstarted:
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
    _logging()
    try:
        from tts.config import build_strategy, make_backend
        from tts.datasets import load_dataset
        from tts.runner import compare
        from tts.scheduler import Scheduler

        ds = load_dataset(task, limit=limit, seed=seed)
        be = make_backend(backend, **({"model": model} if model else {}))
        scheduler = Scheduler(be)
        greedy_strategy = build_strategy(strategy_spec("greedy", temperature=0, max_tokens=max_tokens, prompt="direct"))
        sc_strategy = build_strategy(
            strategy_spec("self_consistency", n=n, temperature=temperature, max_tokens=max_tokens, prompt="direct")
        )
        fh = open(out, "a", encoding="utf-8") if out else None  # noqa: SIM115
        try:
            greedy = _execute(scheduler, ds, greedy_strategy, concurrency=limit, seed=seed, out=fh, label="greedy")
            sc = _execute(
                scheduler, ds, sc_strategy, concurrency=limit, seed=seed, out=fh, label=f"self_consistency@{n}"
            )
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
    typer.echo(
        f"difference: {c.difference:+.3f} (paired bootstrap 95% CI [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}], "
        f"{c.problems} problems)"
    )


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
    for col in (
        "configuration",
        "problems",
        "seeds",
        "to run",
        "generations",
        "prompt tokens (est.)",
        "completion tokens (at most)",
        "estimate",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        table.add_row(
            r.label,
            str(r.problems),
            str(r.seeds),
            str(r.remaining),
            f"{r.generations:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            r.method,
        )
    return table


def _study_table(metrics: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title="tts-scale study")
    for col in ("configuration", "accuracy [95% CI]", "tokens/problem", "samples", "calls", "P50 latency", "failures"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for m in metrics:
        acc = "n/a" if m.accuracy is None else f"{m.accuracy:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
        p50 = "n/a" if m.latency_p50 is None else f"{m.latency_p50:.3f}"
        table.add_row(
            m.label,
            acc,
            f"{m.total_tokens:.1f}",
            f"{m.samples:.1f}",
            f"{m.calls:.2f}",
            p50,
            f"{m.failure_rate + m.timeout_rate:.3f}",
        )
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
    set_: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE for every pipeline (dotted key, YAML value); repeatable, e.g. --set strategy.n=4."
    ),
    report: bool | None = typer.Option(None, "--report/--no-report", help="Write the report at the end."),
    verbose: bool = VERBOSE,
) -> None:
    """Run a study; results land in SQLite as each problem finishes, and a rerun resumes."""
    _logging(verbose)
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
        spec = load_study(
            study_file,
            sections=sections,
            overrides=_parse_sets(set_),
            seeds=_parse_seeds(seeds) if seeds else None,
            out=out,
        )
        if dry_run:
            rows = StudyRunner(spec).plan()
            _print_wide(_plan_table(rows))
            typer.echo(f"configurations={len(rows)}")
            typer.echo(f"generations={sum(r.generations for r in rows)}")
            typer.echo(f"prompt_tokens_estimate={sum(r.prompt_tokens for r in rows)}")
            typer.echo(f"completion_tokens_at_most={sum(r.completion_tokens for r in rows)}")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not sys.stderr.isatty(),
        )
        tasks: dict[str, Any] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        with progress:
            outcome = StudyRunner(spec, progress=on_progress).run()
        from tts.study.analysis import compute_metrics
        from tts.study.store import Store

        with Store(outcome.store, readonly=True) as store:
            metrics = compute_metrics(store)
        _print_wide(_study_table(metrics))
        typer.echo(f"ran {outcome.ran} problems, {outcome.skipped} already stored; results in {outcome.store}")
        if report if report is not None else spec.spec.report:
            try:
                from tts.study.report import write_report

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
    _logging()
    try:
        from tts.backends.base import Pricing
        from tts.study.report import write_report

        pricing = None
        if price_prompt is not None or price_completion is not None:
            pricing = Pricing(prompt=price_prompt or 0.0, completion=price_completion or 0.0)
        if not out.exists():
            raise ConfigError(f"study output {str(out)!r} not found; pass the folder a study wrote (its --out).")
        files = write_report(out, html_path=html, pricing=pricing)
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
