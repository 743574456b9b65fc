"""tts-scale: test-time scaling and reasoning orchestration for large language models.

The public API for recipes::

    import tts
    backend = tts.make_backend("hf")                       # or FakeBackend(...), "vllm", "openai"
    data = tts.load_dataset("larger:100")
    report = tts.run(tts.SelfConsistency(n=8), data.problems, backend, task=data.task)
    print(report.summary().accuracy)

``await tts.arun(...)`` is the async form; ``tts.run`` also works inside a running event loop.

Every public name is listed in ``__all__`` and loaded on first use (a module ``__getattr__``), so
``import tts`` costs little and imports no torch, transformers, vllm or matplotlib; a test walks
``__all__`` and checks that every name resolves.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that is its one home
_HOMES: dict[str, str] = {
    # core types and errors
    **dict.fromkeys(
        ["Candidate", "Completion", "Message", "Problem", "Request", "Result", "Score", "Trace", "TraceEvent", "Usage"],
        "tts.types",
    ),
    **dict.fromkeys(
        [
            "BackendError",
            "BudgetExceeded",
            "Cancelled",
            "ConfigError",
            "DatasetError",
            "ModelNotFound",
            "RequestTimeout",
            "TTSError",
            "UnsupportedControl",
        ],
        "tts.errors",
    ),
    **dict.fromkeys(["Constraint", "SamplingParams"], "tts.sampling"),
    "Limits": "tts.limits",
    "Context": "tts.context",
    "Scheduler": "tts.scheduler",
    "RequestCache": "tts.cache",
    "FairShare": "tts.fair",
    "Task": "tts.task",
    **dict.fromkeys(["Dataset", "load_dataset"], "tts.datasets"),
    **dict.fromkeys(["Strategy", "Proposer"], "tts.strategy"),
    **dict.fromkeys(["Comparison", "Report", "Summary", "arun", "compare", "run", "solve"], "tts.runner"),
    # backends
    **dict.fromkeys(["Backend", "Capabilities", "Handle"], "tts.backends"),
    **dict.fromkeys(["CostModel", "FakeBackend", "OracleModel", "OracleSpec", "Scripted"], "tts.backends.fake"),
    # configuration, registry, studies
    **dict.fromkeys(
        ["PipelineSpec", "build_pipeline", "build_strategy", "load_pipeline", "make_backend"], "tts.config"
    ),
    "REGISTRY": "tts.registry",
    **dict.fromkeys(["StudyRunner", "load_study", "run_study"], "tts.study"),
    "write_report": "tts.study.report",
    # strategies
    "BestOfN": "tts.strategies.best_of_n",
    "CoT": "tts.strategies.cot",
    **dict.fromkeys(["Ensemble", "Member"], "tts.strategies.ensemble"),
    "FewShot": "tts.strategies.few_shot",
    "Greedy": "tts.strategies.greedy",
    "LeastToMost": "tts.strategies.least_to_most",
    "ProgramOfThought": "tts.strategies.program_of_thought",
    "Refine": "tts.strategies.refine",
    "SelfConsistency": "tts.strategies.self_consistency",
    "Thinking": "tts.strategies.thinking",
    "UniversalSelfConsistency": "tts.strategies.universal_self_consistency",
    "TreeOfThoughts": "tts.strategies.tree_of_thoughts",
    "StepBeamSearch": "tts.strategies.step_beam_search",
    "DVTS": "tts.strategies.dvts",
    "MCTS": "tts.strategies.mcts",
    "ParticleFiltering": "tts.strategies.particle_filtering",
    # verifiers
    **dict.fromkeys(["Verifier", "VerifierCost"], "tts.verifiers.base"),
    **dict.fromkeys(
        ["AllPass", "CachedVerifier", "Cascade", "WeightedSum", "prune", "rerank"], "tts.verifiers.combine"
    ),
    "CalibratedVerifier": "tts.verifiers.calibration",
    **dict.fromkeys(["ChoiceVerifier", "QAVerifier"], "tts.verifiers.qa"),
    "ConsistencyVerifier": "tts.verifiers.consistency",
    "FactCheckVerifier": "tts.verifiers.fact_check",
    **dict.fromkeys(["Game24Verifier", "ProgramVerifier"], "tts.verifiers.program"),
    **dict.fromkeys(["LLMJudge", "PairwiseJudge", "SelfVerifier"], "tts.verifiers.judge"),
    "MathVerifier": "tts.verifiers.math",
    **dict.fromkeys(["OutcomeRewardModel", "ProcessRewardModel"], "tts.verifiers.reward_model"),
}

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tts' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return __all__
