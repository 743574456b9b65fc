"""bench/saturation.py's claim, exactly, on the fake backend's virtual clock: tree-of-thoughts BFS
over 64 problems keeps the engine as busy as an oracle scheduler would (one engine batch per
generation or evaluation phase)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_saturation_ratio_is_one(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("saturation", ROOT / "bench" / "saturation.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ratio = bench.main()
    out = capsys.readouterr().out
    # phases: 64, 320, 320 propose sequences of 160 tokens (1, 2, 2 waves of 256) and 960, 4800,
    # 4800 value sequences of 8 tokens (4, 19, 19 waves): 160 + 320 + 320 + 8 * (4 + 19 + 19)
    assert "ideal_decode=1136.0" in out
    assert "engine_batches=6 " in out and "requests=4224" in out  # one engine batch per phase
    assert ratio <= 1.15 and ratio == pytest.approx(1.0)
    assert out.strip().splitlines()[-1].startswith("ratio=")
    sequential = float(out.split("one_problem_at_a_time=")[1].split()[0])
    assert sequential == pytest.approx(64 * (3 * 160 + 3 * 8) + 136.24, abs=1.0)  # 25.5x the ideal
