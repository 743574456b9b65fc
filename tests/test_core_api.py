"""The public API: every name in ``tts.__all__`` resolves, ``from tts import *`` works, importing
``tts`` loads no heavy engine, and the edges of the core validate their inputs strictly."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

import tts
from tts import ConfigError, FakeBackend, Problem, SamplingParams, run
from tts.types import Score


def test_every_public_name_resolves() -> None:
    missing = [name for name in tts.__all__ if not hasattr(tts, name)]
    assert missing == []
    assert len(tts.__all__) == len(set(tts.__all__))


def test_star_import_and_light_import_in_a_fresh_process() -> None:
    code = (
        "import sys; from tts import *; import tts; tts.run; tts.SelfConsistency; tts.load_dataset; "
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'matplotlib', 'numpy', 'tts.study') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # ``from tts import *`` resolves every name (studies, reports included); the README's names do not
    # need numpy, but the star import may; the heavy engines are never imported.
    heavy = eval(out.stdout.strip())  # our own printed list
    assert not {"torch", "transformers", "vllm", "matplotlib"} & set(heavy)
    code = (
        "import sys, tts; tts.run; tts.SelfConsistency; tts.SamplingParams; tts.load_dataset; "
        "print([m for m in ('torch', 'transformers', 'vllm', 'matplotlib', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        tts.Nope  # noqa: B018


@pytest.mark.parametrize(
    "bad",
    [
        {"n": "4"},
        {"n": True},
        {"max_tokens": 2.0},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"n": 10**23},
        {"max_tokens": 10**12},
    ],
)
def test_sampling_params_are_strict(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        SamplingParams(**bad)  # type: ignore[arg-type]
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


def test_problem_validates_its_fields() -> None:
    p = Problem(7, "q", 42)  # type: ignore[arg-type]
    assert p.id == "7" and p.reference == "42"
    with pytest.raises(ConfigError, match=r"problem\.question must be a string"):
        Problem("1", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"problem\.reference"):
        Problem("1", "q", ["a"])  # type: ignore[arg-type]


def test_a_bad_problem_fails_that_problem_only() -> None:
    class Odd:
        """A problem-like object whose reference breaks comparison."""

        id = "odd"
        question = "q"
        reference = object()
        metadata: ClassVar[dict[str, object]] = {}

    backend = FakeBackend.scripted(queue=["The answer is 4."] * 4)
    report = run(tts.Greedy(), [Problem("a", "2+2?", "4"), Odd(), Problem("b", "2+2?", "4")], backend)  # type: ignore[list-item]
    assert [r.status for r in report.results] == ["ok", "failed", "ok"]
    assert report.results[0].correct is True and report.results[2].correct is True


def test_verifier_calls_are_in_the_trace_and_counted_once() -> None:
    class Half:
        name = "half"

        async def score(self, problem: Problem, candidates: list, ctx: object = None) -> list[Score]:
            return [Score(0.5) for _ in candidates]

    backend = FakeBackend.scripted(queue=["The answer is 4."] * 4)
    strategy = tts.BestOfN(n=4)
    report = run(strategy, [Problem("a", "2+2?", "4")], backend, verifier=Half())
    result = report.results[0]
    kinds = [e.kind for e in result.trace.events]
    assert kinds == ["generate", "verify"]
    assert "half" in result.trace.events[1].note
    assert result.usage.verifier_calls == 4 and report.usage.verifier_calls == 4  # one per candidate


def test_run_inside_a_running_loop() -> None:
    async def main() -> float | None:
        backend = FakeBackend.scripted(queue=["The answer is 4."])
        return run(tts.Greedy(), [Problem("a", "2+2?", "4")], backend).accuracy

    assert asyncio.run(main()) == 1.0


def test_judges_tokens_are_verifier_tokens_and_calls_count_per_candidate() -> None:
    from tts import Request
    from tts.context import Context

    class Judge:
        name = "judge"

        async def score(self, problem: Problem, candidates: list, ctx: Context | None = None) -> list[Score]:
            assert ctx is not None
            out = await ctx.generate(Request("Is it right? yes or no", SamplingParams(temperature=0, max_tokens=4)))
            return [Score(1.0 if "yes" in out[0].text else 0.0) for _ in candidates]

    backend = FakeBackend.scripted(queue=["The answer is 4."] * 3 + ["yes"])
    result = run(tts.BestOfN(n=3), [Problem("a", "2+2?", "4")], backend, verifier=Judge()).results[0]
    u = result.usage
    assert u.verifier_calls == 3 and u.calls == 2 and u.completions == 3
    assert u.verifier_completion_tokens == 1 and u.verifier_prompt_tokens > 0
    assert u.completion_tokens == backend.completion_tokens - 1


def test_a_failed_problem_error_never_carries_a_registered_secret() -> None:
    from tts.secrets import register_secret

    register_secret("sk-test-0123456789abcdef")

    class Leaky:
        name = "leaky"

        async def solve(self, problem: Problem, ctx: object) -> object:
            raise RuntimeError("401: bad key sk-test-0123456789abcdef")

    report = run(Leaky(), [Problem("a", "q", "4")], FakeBackend())  # type: ignore[arg-type]
    assert "sk-test-0123456789abcdef" not in (report.results[0].error or "")
    assert report.results[0].status == "failed"


def test_no_package_module_is_over_600_lines() -> None:
    """Each module stays short enough to read (the consolidation's rule): every ``.py`` file of the
    packages, backends included."""
    root = Path(__file__).resolve().parent.parent
    long = {
        str(path.relative_to(root)): n
        for package in ("tts", "strategies", "verifiers", "retrieval")
        for path in (root / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not long, f"split these modules (over 600 lines): {long}"


def test_a_run_collects_young_garbage_less_often_and_restores_the_threshold() -> None:
    import gc

    from tts.runner import YOUNG_GENERATION

    seen: list[int] = []

    class Probe:
        name = "probe"

        async def solve(self, problem: Problem, ctx: object) -> object:
            seen.append(gc.get_threshold()[0])
            raise RuntimeError("recorded")

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        run(Probe(), [Problem("a", "q"), Problem("b", "q")], FakeBackend())  # type: ignore[arg-type]
        assert seen == [YOUNG_GENERATION, YOUNG_GENERATION]
        assert gc.get_threshold()[0] == 700, "restored when the run ends"
        gc.set_threshold(50_000, *before[1:])  # a higher threshold is never lowered
        run(Probe(), [Problem("c", "q")], FakeBackend())  # type: ignore[arg-type]
        assert seen[-1] == 50_000 and gc.get_threshold()[0] == 50_000
    finally:
        gc.set_threshold(*before)
