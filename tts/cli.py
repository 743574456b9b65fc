"""The ``tts-scale`` command line: a thin layer over the Python API.

- ``run``: one pipeline (a YAML file and/or flags) over a dataset, with a summary table;
- ``demo``: the CPU demo, what test-time compute buys on a small task (:mod:`tts.demo`);
- ``study``: pipelines x n values x seeds into SQLite, resumable, ``--dry-run`` to cost it first
  (:mod:`tts.study`);
- ``report``: PNG plots and one HTML page from a study's results (:mod:`tts.study.report`);
- ``list``: the registered strategies, proposers, verifiers, backends, retrievers and the tasks, with
  their options (:mod:`tts.config.catalog`).

Progress goes to stderr (:mod:`tts.progress`): a live bar in a terminal, else a line every few
seconds. ``run`` and ``study`` exit 1 when any problem failed unless ``--max-failure-rate`` accepts
the fraction that did.

Flags override the file. Configuration and usage errors exit with code 2 and one line naming the
field and the fix; runtime failures exit with code 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Any

import typer

from tts._cli_usage import OneLineGroup
from tts.errors import ConfigError, TTSError
from tts.progress import StudyDisplay, plan_table, study_table
from tts.progress import execute as _execute
from tts.progress import summary_table as _summary_table

# rich_markup_mode=None: click's plain help, where a flag shows no type tag (``--dry-run``, not
# ``--dry-run <bool>``) and docstring paragraphs are rewrapped (no line broken mid-sentence)
app = typer.Typer(
    cls=OneLineGroup,  # usage errors in one line (tts/_cli_usage.py)
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
    help="Test-time scaling and reasoning orchestration for LLMs.",
)
log = logging.getLogger("tts")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


VERBOSE = typer.Option(False, "--verbose", "-v", help="Log what the library does (INFO).")


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    # the one-time model conversion takes a minute or more: always say so
    logging.getLogger("tts.models").setLevel(logging.INFO)


def _version(value: bool) -> None:
    if value:
        from tts import __version__

        typer.echo(f"tts-scale {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Test-time scaling and reasoning orchestration for LLMs."""


MAX_FAILURE_RATE = typer.Option(
    None,
    "--max-failure-rate",
    help="Exit 0 when at most this fraction of problems failed (0 to 1; default: any failure exits 1).",
)


def _check_rate(rate: float | None) -> None:
    if rate is not None and not 0 <= rate <= 1:
        raise ConfigError(f"--max-failure-rate must be between 0 and 1, got {rate}.")


def _failures_exit(failed: int, total: int, rate: float | None, first: str | None = None) -> bool:
    """Print the failure summary line; True when the run must exit 1 (more failed than ``rate`` accepts)."""
    if not failed:
        return False
    share = failed / total if total else 1.0
    where = f"; first: {first}" if first else ""
    if rate is not None and share <= rate:
        typer.echo(
            f"{failed} of {total} problems failed ({share:.1%}), within --max-failure-rate {rate}{where}", err=True
        )
        return False
    typer.echo(
        f"error: {failed} of {total} problems failed ({share:.1%}){where}; pass --max-failure-rate to accept some.",
        err=True,
    )
    return True


def _check_out(path: str, force: bool) -> Path:
    """The results file, refused when it is a folder, or exists and ``force`` is off (appending would
    mix two runs' rows)."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--out {path!r} is a folder; pass a file name (results.jsonl).")
    if target.exists() and not force:
        raise ConfigError(f"--out {path!r} exists; pass --force to overwrite it, or choose another file.")
    return target


def _open_out(path: str, force: bool) -> IO[str]:
    """The results file, checked (:func:`_check_out`), its folders created, opened for writing."""
    target = _check_out(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("w", encoding="utf-8")


def _fail(exc: BaseException) -> None:
    code = 2 if isinstance(exc, ConfigError) else 1
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def strategy_spec(name: str, base: dict[str, Any] | None = None, **flags: Any) -> dict[str, Any]:
    """:func:`tts.config.flags.strategy_spec` (imported when used: pydantic stays out of ``--help``)."""
    from tts.config.flags import strategy_spec as spec

    return spec(name, base, **flags)


class Built(tuple[Any, Any, Any]):
    """(backend, dataset, strategy), with the pipeline's retriever as ``.retriever`` (built once)."""

    retriever: Any = None


def build_from_spec(spec: Any) -> tuple[Any, Any, Any]:
    """(backend, dataset, strategy) from a :class:`~tts.config.PipelineSpec` (the dataset carries
    the pipeline's task overrides); a :class:`Built` that also carries the pipeline's retriever."""
    from tts.config import build_pipeline

    pipeline = build_pipeline(spec)
    built = Built((pipeline.backend, pipeline.dataset, pipeline.strategy))
    built.retriever = pipeline.retriever
    return built


def build_retriever(spec: Any) -> Any:
    """:func:`tts.config.build.build_retriever` (imported when used)."""
    from tts.config.build import build_retriever as build

    return build(spec)


def engine_for(run: Any, backend: Any) -> Any:
    """:func:`tts.config.build.engine_for` (imported when used)."""
    from tts.config.build import engine_for as build

    return build(run, backend)


def policy(objective: str) -> Any:
    """:func:`tts.objectives.policy` (imported when used)."""
    from tts.objectives import policy as get

    return get(objective)


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
    out: Path | None = typer.Option(
        None, help="Write every result as a JSON line as it finishes (folders are created; see --force)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the --out file when it exists (else exit 2)."),
    set_: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE (dotted key, YAML value); repeatable, e.g. --set budget.total_tokens=50000."
    ),
    max_failure_rate: float | None = MAX_FAILURE_RATE,
    verbose: bool = VERBOSE,
) -> None:
    """Run a strategy over a dataset and print a summary table."""
    _logging(verbose)
    try:
        _check_rate(max_failure_rate)
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
        if spec.run.out:
            _check_out(spec.run.out, force)  # before the model loads
        built = build_from_spec(spec)
        be, ds, strat = built
        # the pipeline's retriever (an index loaded once); built here only when build_from_spec was replaced
        retriever = built.retriever if isinstance(built, Built) else build_retriever(spec.retriever)
        fh = _open_out(spec.run.out, force) if spec.run.out else None
        try:
            report = _execute(
                engine_for(spec.run, be),  # the request cache, when run.cache or run.objective asks for one
                ds,
                strat,
                out=fh,
                label=spec.strategy.name,
                concurrency=spec.run.concurrency,
                seed=spec.run.seed,
                limits=spec.budget.per_problem(),
                total_limits=spec.budget.total(),
                retriever=retriever,
                priority=policy(spec.run.objective).priority if spec.run.objective else 0,
            )
        finally:
            if fh is not None:
                fh.close()
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    _print(_summary_table([report]))
    failed = [r for r in report.results if not r.ok]
    # runtime failures: the summary is printed, the exit code says whether the run was clean enough
    too_many = _failures_exit(len(failed), len(report.results), max_failure_rate, failed[0].error if failed else None)
    if report.unstarted:
        typer.echo(
            f"error: budget.total_tokens={spec.budget.total_tokens} reached; {report.unstarted} of "
            f"{report.unstarted + len(report.results)} problems not started (raise it to run them).",
            err=True,
        )
    if too_many or report.unstarted:
        raise typer.Exit(1)


@app.command()
def demo(
    task: str = typer.Option("add2", help="Built-in task: add2, add1, larger, capitals."),
    limit: int = typer.Option(30, help="Number of problems (30 was fixed before any result was seen)."),
    n: int = typer.Option(8, help="Self-consistency samples."),
    program_n: int = typer.Option(4, help="Programs per problem in the voted program-of-thought rung."),
    backend: str = typer.Option("hf", help="Backend (default: the embedded transformers CPU backend)."),
    model: str | None = typer.Option(None, help="Model id or local folder (default: SmolLM2-135M-Instruct)."),
    seed: int = typer.Option(0, help="Seed of the problem set and the samples."),
    max_tokens: int = typer.Option(24, help="Maximum generated tokens per direct answer (greedy, self-consistency)."),
    temperature: float = typer.Option(0.7, help="Sampling temperature of the rungs that sample."),
    out: Path | None = typer.Option(None, help="Write every result as a JSON line (a new file)."),
) -> None:
    """The CPU demo: what test-time compute buys on a task the model cannot do directly.

    On 30 two-digit additions (add2; task and size fixed before any result was seen), it runs
    greedy, self-consistency (n=8), program of thought and program of thought with a vote (n=4)
    on the same problems, and prints each one's accuracy, tokens and time with paired-bootstrap
    intervals against greedy and against the task's best trivial baseline (chance, most frequent
    answer, always-first). About 18 minutes on a shared 2-core CPU (the voted programs take 13 of
    them; BENCHMARKS.md has the figures); --backend fake runs in seconds.
    """
    _logging()
    try:
        from tts.demo import DemoPlan, run_demo, table, verdicts

        plan = DemoPlan(
            task=task, limit=limit, n=n, program_n=program_n, seed=seed, max_tokens=max_tokens,
            temperature=temperature, backend=backend, model=model,
        )  # fmt: skip
        try:
            fh = open(out, "x", encoding="utf-8") if out else None  # noqa: SIM115
        except FileExistsError:
            raise ConfigError(f"--out {out} already exists; remove it or choose another path.") from None

        def execute(scheduler: Any, dataset: Any, strategy: Any, label: str) -> Any:
            return _execute(scheduler, dataset, strategy, out=fh, label=label, concurrency=len(dataset), seed=seed)

        try:
            result = run_demo(plan, execute=execute)
        finally:
            if fh is not None:
                fh.close()
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    _print_wide(table(result))
    for line in verdicts(result):
        typer.echo(line)


def _print_wide(obj: Any) -> None:
    """Print a table at full width even when the output is not a terminal (logs, CI)."""
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 160).print(obj)


def _parse_sets(values: list[str]) -> dict[str, Any]:
    from tts.config.yaml import parse_value

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set must be KEY=VALUE with a dotted key (strategy.n=4), got {item!r}.")
        out[key.strip()] = parse_value(raw, f"--set {key.strip()}")  # bounded, no tags (tts/config/yaml.py)
    return out


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers (0,1,2), got {text!r}.") from None


@app.command()
def study(
    study_file: Path = typer.Argument(..., help="Study YAML (pipelines x n values x seeds), or one pipeline YAML."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the generations and tokens needed; run nothing."),
    limit: int | None = typer.Option(None, help="Problems per configuration (overrides every dataset.limit)."),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2."),
    backend: str | None = typer.Option(None, help="Backend of every pipeline (hf, vllm, openai, fake)."),
    model: str | None = typer.Option(None, help="Model of every pipeline's backend."),
    data_dir: str | None = typer.Option(None, help="Folder with local benchmark files."),
    concurrency: int | None = typer.Option(None, help="Problems in flight at once."),
    out: Path | None = typer.Option(
        None, help="Output folder (results.sqlite, manifest, CSV, report); an existing one resumes."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="KEY=VALUE for every pipeline (dotted key, YAML value); repeatable, e.g. --set strategy.n=4."
    ),
    report: bool | None = typer.Option(None, "--report/--no-report", help="Write the report at the end."),
    max_failure_rate: float | None = MAX_FAILURE_RATE,
    keep_failures: bool = typer.Option(
        False, "--keep-failures", help="On resume, keep failed problems as stored instead of running them again."
    ),
    executor: str = typer.Option(
        "local", help="Where units run: local (this process) or ray (one Ray actor per worker, own engine each)."
    ),
    address: str | None = typer.Option(None, help="Ray cluster address with --executor ray (default: a local one)."),
    workers: int | None = typer.Option(None, help="Ray workers with --executor ray (default: one per free CPU)."),
    verbose: bool = VERBOSE,
) -> None:
    """Run a study (resumable).

    Results land in SQLite as each problem finishes, so a rerun resumes where the last one stopped.
    """
    _logging(verbose)
    too_many = False
    try:
        _check_rate(max_failure_rate)
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
            _print_wide(plan_table(rows))
            typer.echo(f"configurations={len(rows)}")
            typer.echo(f"generations={sum(r.generations for r in rows)}")
            typer.echo(f"prompt_tokens_estimate={sum(r.prompt_tokens for r in rows)}")
            typer.echo(f"completion_tokens_at_most={sum(r.completion_tokens for r in rows)}")
            return
        with StudyDisplay() as display:
            outcome = StudyRunner(
                spec,
                progress=display,
                keep_failures=keep_failures or None,
                executor=executor,
                address=address,
                workers=workers,
            ).run()
        from tts.study.analysis import compute_metrics
        from tts.study.store import Store

        with Store(outcome.store, readonly=True) as store:
            metrics = compute_metrics(store)
        _print_wide(study_table(metrics))
        typer.echo(f"ran {outcome.ran} problems, {outcome.skipped} already stored; results in {outcome.store}")
        for warning in outcome.warnings:
            typer.echo(f"warning: {warning}", err=True)
        too_many = _failures_exit(outcome.failed, outcome.problems, max_failure_rate)
        if report if report is not None else spec.spec.report:
            try:
                from tts.study.report import write_report

                files = write_report(outcome.out)
                typer.echo(f"report: {files.html}")
            except ConfigError as exc:
                typer.echo(f"no report: {exc}", err=True)
    except (TTSError, OSError) as exc:
        _fail(exc)
    if too_many:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    out: Path = typer.Argument(
        ..., help="A study's output folder (or its results.sqlite), or a run's results .jsonl (search trees)."
    ),
    html: Path | None = typer.Option(None, help="Where to write the HTML page (default: OUT/report.html)."),
    price_prompt: float | None = typer.Option(None, help="USD per million prompt tokens (cost column)."),
    price_completion: float | None = typer.Option(None, help="USD per million completion tokens."),
) -> None:
    """PNG plots and one self-contained HTML page from a study's results; given a run's results
    (the JSONL file of tts-scale run --out), one PNG per search tree in RESULTS_trees/."""
    _logging()
    try:
        from tts.backends.base import Pricing
        from tts.study.report import write_report

        pricing = None
        if price_prompt is not None or price_completion is not None:
            pricing = Pricing(prompt=price_prompt or 0.0, completion=price_completion or 0.0)
        if not out.exists():
            raise ConfigError(f"study output {str(out)!r} not found; pass the folder a study wrote (its --out).")
        if out.is_file() and out.suffix.lower() == ".jsonl":  # a run's results: draw their search trees
            from tts.tree_plot import render_results

            for path in render_results(out):
                typer.echo(f"tree: {path}")
            return
        if out.is_file() and out.suffix.lower() in (".yaml", ".yml", ".json", ".jsonl", ".csv"):
            raise ConfigError(
                f"{str(out)!r} is a {out.suffix} file, not a study's output; run `tts-scale study FILE --out DIR` "
                "first, then pass DIR (or DIR/results.sqlite)."
            )
        files = write_report(out, html_path=html, pricing=pricing)
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    typer.echo(f"report: {files.html}")
    for name, path in files.images.items():
        typer.echo(f"{name}: {path}")


@app.command("list")
def list_cmd(
    kind: str | None = typer.Argument(
        None, help="strategies, proposers, verifiers, backends, retrievers or tasks (default: all)."
    ),
    names: bool = typer.Option(False, "--names", help="Only the names, one a line."),
) -> None:
    """List strategies, verifiers, tasks, ... and their options.

    Everything registered (plugins included), with each option's name, type, default and meaning.
    """
    _logging()
    try:
        from tts.config.catalog import KIND_NAMES, catalog

        items = catalog(kind)
    except TTSError as exc:
        _fail(exc)
        return
    current = None
    for item in items:
        if names:
            typer.echo(item.name)
            continue
        if item.kind != current:
            current = item.kind
            typer.echo(f"{KIND_NAMES[current]}:")
        typer.echo(f"  {item.name}: {item.doc}" if item.doc else f"  {item.name}")
        for opt in item.options:
            typer.echo(f"      {opt.name} ({opt.type}, default {opt.default})" + (f": {opt.doc}" if opt.doc else ""))
    if not items and not names:
        typer.echo(f"no {kind} registered (plugins register through the tts_scale entry-point group).")


@app.command()
def serve(
    pipelines: list[str] = typer.Argument(
        ..., metavar="[NAME=]PIPELINE.yaml...", help="Pipelines to serve, named by NAME or the file's stem."
    ),
    backend: str | None = typer.Option(None, help="Backend of every pipeline (fake answers with its default reply)."),
    default: str | None = typer.Option(None, help="Pipeline that answers a model name no pipeline has."),
    api_key_file: Path | None = typer.Option(None, help="File holding the bearer token clients must send."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_concurrent_requests: int = typer.Option(64, help="Requests in flight at once; more are answered 429."),
    max_body_bytes: int = typer.Option(1_048_576, help="Largest request body; larger ones are answered 413."),
    max_tokens: int = typer.Option(4096, help="The most tokens per completion a request may ask for."),
    timeout: float | None = typer.Option(None, help="Seconds one choice may run (a 504 past it)."),
    verbose: bool = VERBOSE,
) -> None:
    """Serve pipelines behind an OpenAI-compatible endpoint: the request's model names the pipeline.

    Routes: /v1/chat/completions, /v1/models, /health and /metrics (Prometheus). Concurrent requests
    share one scheduler per backend, so their samples batch together.
    """
    _logging(verbose)
    try:
        from tts.errors import parse_options
        from tts.serve import Pipelines, ServeOptions, Server, read_api_key, run_server

        flags = {
            "max_concurrent_requests": max_concurrent_requests,
            "max_body_bytes": max_body_bytes,
            "max_tokens": max_tokens,
            "limits": {"max_wall_time": timeout},
        }
        options = parse_options(ServeOptions, flags, where="serve")
        key = read_api_key(str(api_key_file)) if api_key_file is not None else None
        served = Pipelines.load(pipelines, backend=backend, default=default, options=options)
        server = Server(served, options, key)
    except (TTSError, OSError) as exc:
        _fail(exc)
        return
    auth = "bearer token required" if key else "no token"
    typer.echo(f"serving {', '.join(served.names())} on http://{host}:{port}/v1 ({auth})", err=True)
    run_server(server, host=host, port=port, log_level="info" if verbose else "warning")


from tts._cli_index import index_app  # noqa: E402  (`tts-scale index build|query`: retrieval indexes)

app.add_typer(index_app, name="index")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
