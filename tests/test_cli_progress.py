"""11.1: progress you can see. Samples and tokens count as they land, with elapsed time and a rate;
without a terminal a line every few seconds says where a run or a study is; the one-time model
conversion is announced."""

from __future__ import annotations

import io
import logging
import textwrap
import time
from pathlib import Path

from typer.testing import CliRunner

from tts.cli import _logging, app
from tts.progress import RunDisplay, StudyDisplay, format_progress
from tts.runner import RunProgress

runner = CliRunner()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_progress_line_counts_samples_before_any_problem_finishes() -> None:
    line = format_progress(RunProgress(done=0, total=100, completions=340, completion_tokens=4100, elapsed=41.0))
    assert line == "0/100 problems, 340 samples, 41 s, 8.3 samples/s, 100.0 tok/s"


def test_without_a_terminal_a_line_every_interval_and_one_at_the_end() -> None:
    stream, clock = io.StringIO(), Clock()
    with RunDisplay("sc", 100, stream=stream, interval=10, clock=clock, heartbeat=False) as display:
        for t in range(1, 26):  # a snapshot every second for 25 s, samples landing, no problem done
            clock.now = float(t)
            display(RunProgress(done=0, total=100, completions=10 * t, completion_tokens=100 * t, elapsed=float(t)))
    lines = stream.getvalue().splitlines()
    assert lines == [
        "sc: 0/100 problems, 100 samples, 10 s, 10.0 samples/s, 100.0 tok/s",
        "sc: 0/100 problems, 200 samples, 20 s, 10.0 samples/s, 100.0 tok/s",
        "sc: 0/100 problems, 250 samples, 25 s, 10.0 samples/s, 100.0 tok/s",
    ]


def test_run_without_a_terminal_says_where_it_is_on_stderr() -> None:
    result = runner.invoke(
        app, ["run", "--backend", "fake", "--dataset", "larger:5", "--strategy", "self_consistency", "--n", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "self_consistency: 5/5 problems, 15 samples," in result.stderr
    assert "samples/s" in result.stderr and "tok/s" in result.stderr
    assert "problems" not in result.stdout.split("tts-scale run")[0]  # progress is not mixed into the table


def test_study_without_a_terminal_reports_elapsed_time(tmp_path: Path) -> None:
    stream, clock = io.StringIO(), Clock()
    with StudyDisplay(stream=stream, interval=10, clock=clock, heartbeat=False) as display:
        clock.now = 3.0
        display("greedy", 1, 4)
        clock.now = 12.0
        display("greedy", 4, 4)
        display("sc@4", 1, 4)
    assert stream.getvalue().splitlines() == [
        "study: 4/4 problems in 1 configuration, 12 s; greedy: 4/4",
        "study: 5/8 problems in 2 configurations, 12 s; sc@4: 1/4",
    ]
    study = tmp_path / "study.yaml"
    study.write_text(
        textwrap.dedent(
            f"""
            name: tiny
            dataset: {{name: larger, limit: 3}}
            backend: {{name: fake}}
            strategy: {{name: greedy}}
            pipelines: [{{label: greedy}}]
            out: {tmp_path / "out"}
            report: false
            """
        )
    )
    result = runner.invoke(app, ["study", str(study)])
    assert result.exit_code == 0, result.output
    assert "study: 3/3 problems in 1 configuration, " in result.stderr


def test_the_model_conversion_is_announced_without_verbose(caplog: object) -> None:
    models = logging.getLogger("tts.models")
    saved = models.level
    try:
        models.setLevel(logging.NOTSET)
        _logging(verbose=False)
        assert models.isEnabledFor(logging.INFO)  # "converting ... (once)" reaches stderr
        assert not logging.getLogger("tts.scheduler").isEnabledFor(logging.INFO)
    finally:
        models.setLevel(saved)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_study_bars_show_the_time_each_configuration_took() -> None:
    """All of a configuration's problems may finish together: its bar still shows the time it ran
    (from the end of the one before), not 0:00:00."""
    clock = Clock()
    with StudyDisplay(stream=Terminal(), clock=clock) as display:
        clock.now = 30.0
        display("greedy", 4, 4)  # the first configuration: 30 s since the study started
        clock.now = 50.0
        display("sc@4", 4, 4)  # the second: 20 s since the first finished
        elapsed = {t.description: t.finished_time for t in display._bar.tasks}
    assert elapsed == {"greedy": 30.0, "sc@4": 20.0}


def test_the_terminal_bar_counts_samples_while_no_problem_is_done() -> None:
    stream, clock = Terminal(), Clock()
    with RunDisplay("sc", 10, stream=stream, clock=clock) as display:
        display(RunProgress(done=0, total=10, completions=24, completion_tokens=480, elapsed=4.0))
        (task,) = display._bar.tasks
        assert task.completed == 0 and task.fields["samples"] == "24 samples, 120.0 tok/s"
    assert "24 samples" in stream.getvalue()


def test_a_long_silence_still_gets_a_line_every_interval() -> None:
    """No snapshot for a while (a model loading, one big batch): the heartbeat still says how long."""
    stream = io.StringIO()
    with RunDisplay("sc", 10, stream=stream, interval=0.05) as display:
        time.sleep(0.3)
        assert "sc: 0/10 problems, no samples yet, 0 s" in stream.getvalue()
        display(RunProgress(done=0, total=10, completions=8, completion_tokens=80, elapsed=0.3))
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("sc: 0/10 problems, 8 samples, ")
