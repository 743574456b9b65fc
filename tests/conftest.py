"""Shared test configuration.

Markers: ``hf`` (real transformers backend on SmolLM2), ``vllm`` (real vLLM engine), ``slow``.
Real-engine tests are never skipped silently: when their engine is missing they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data folder missing: {DATA} (CI clones ../shared beside the repo)")
    return DATA
