"""Every command in the README runs and prints what the README says: each ``tts-scale`` line in a
fresh process with short limits on the fake backend (the model would take too long for the whole
list), and the Python snippet once for real on the ``hf`` backend."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DATA = ROOT.parent / "shared" / "data"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "tts-scale":
                    out.append(words[1:])
    return out


COMMANDS = _commands()
RUNS_A_MODEL = {"run", "demo", "study"}


def test_the_readme_has_the_commands_it_should() -> None:
    verbs = [c[0] for c in COMMANDS]
    assert {"demo", "run", "list", "study", "report"} <= set(verbs), verbs
    assert "python -m pytest -q -p no:cacheprovider" in README
    assert 'pip install -e ".[cpu,plot]"' in README  # the install covers every step (report needs plot)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_runs(args: list[str], tmp_path: Path) -> None:
    args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
    args = [str(DATA) if a == "../shared/data" else a for a in args]
    if args[0] in RUNS_A_MODEL:
        args += ["--backend", "fake"]
    if args[0] == "demo":
        args += ["--limit", "4"]
    if args[0] == "study" and "--dry-run" not in args:
        args += ["--out", str(tmp_path / "studies" / "cpu-demo")]
    if args[0] == "report":
        study = [
            str(ROOT / "recipes" / "studies" / "cpu_demo_study.yaml"),
            "--limit",
            "4",
            "--backend",
            "fake",
            "--out",
            str(tmp_path / "studies" / "cpu-demo"),
            "--no-report",
        ]
        subprocess.run(
            [sys.executable, "-m", "tts", "study", *study], cwd=tmp_path, check=True, capture_output=True, timeout=300
        )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tts", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    expect = {
        "run": "accuracy",
        "demo": "greedy",
        "list": "self_consistency",
        "study": "configuration",
        "report": "report",
    }[args[0]]
    assert expect in (proc.stdout + proc.stderr).lower() or expect in proc.stdout, proc.stdout[-2000:]
    if args[0] == "report":
        assert any(p.suffix == ".html" for p in (tmp_path / "studies" / "cpu-demo").rglob("*"))
    if "--out" in args and args[0] == "run":
        out = tmp_path / args[args.index("--out") + 1]
        assert out.exists() and len(out.read_text().splitlines()) == 20


def test_python_snippet_runs_on_the_fake_backend(tmp_path: Path) -> None:
    (snippet,) = _blocks("python")
    code = snippet.replace('tts.make_backend("hf")', "tts.FakeBackend.scripted(default='The answer is 7.')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy [95% CI]" in proc.stdout and "problems" in proc.stdout


@pytest.mark.hf
def test_python_snippet_runs_for_real_in_minutes(tmp_path: Path) -> None:
    """The README's snippet exactly as written, on the embedded hf backend (about a minute here)."""
    (snippet,) = _blocks("python")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    accuracy = float(re.search(r"accuracy \[95% CI\]\s+([0-9.]+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert 0.0 <= accuracy <= 1.0 and re.search(r"\n\s+problems\s+20\n", proc.stdout)
