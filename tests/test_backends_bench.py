"""``bench/http_overhead.py`` runs its workload end to end (a tiny version of it): self-consistency
through ``tts.arun`` and the OpenAI backend against the zero-latency server in another process,
the bare aiohttp floor on the bodies the server recorded, and the figures printed in order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "http_overhead.py"


def test_http_overhead_bench_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--problems", "4", "--n", "3", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert "4 problems x self-consistency n=3 = 12 completions per round" in out
    names = [line.split("=")[0] for line in lines[-4:]]
    assert names == ["backend_us_per_completion", "floor_us_per_completion", "us_per_completion", "over_floor_us"]
    values = {name: float(line.split("=")[1]) for name, line in zip(names, lines[-4:], strict=True)}
    assert values["floor_us_per_completion"] > 0 and values["us_per_completion"] > 0
    over = values["us_per_completion"] - values["floor_us_per_completion"]
    assert abs(values["over_floor_us"] - over) <= 0.11  # each printed with one decimal
    assert len([line for line in lines if re.match(r"round \d+: ", line)]) == 2
