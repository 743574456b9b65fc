"""tts-scale: test-time scaling and reasoning orchestration for large language models.

The public API for recipes::

    import tts
    backend = tts.make_backend("hf")                       # or FakeBackend(...), "vllm", "openai"
    data = tts.load_dataset("larger:100")
    report = tts.run(tts.SelfConsistency(n=8), data.problems, backend, task=data.task)
    print(report.summary().accuracy)

``await tts.arun(...)`` is the async form; ``tts.run`` also works inside a running event loop.
Importing ``tts`` imports no torch, transformers or vllm.
"""

from __future__ import annotations

from tts.backends import Backend, Capabilities, Handle, make_backend
from tts.backends.fake import CostModel, FakeBackend, OracleModel, OracleSpec, Scripted
from tts.context import Context
from tts.datasets import Dataset, load_dataset
from tts.errors import (
    BackendError,
    BudgetExceeded,
    Cancelled,
    ConfigError,
    DatasetError,
    ModelNotFound,
    RequestTimeout,
    TTSError,
    UnsupportedControl,
)
from tts.pipeline import PipelineSpec, build_pipeline, load_pipeline
from tts.registry import REGISTRY, build_strategy
from tts.report import write_report
from tts.runner import Comparison, Report, Summary, arun, compare, run, solve
from tts.sampling import Constraint, SamplingParams
from tts.scheduler import Scheduler
from tts.strategies.best_of_n import BestOfN
from tts.strategies.cot import CoT
from tts.strategies.ensemble import Ensemble, Member
from tts.strategies.few_shot import FewShot
from tts.strategies.greedy import Greedy
from tts.strategies.least_to_most import LeastToMost
from tts.strategies.program_of_thought import ProgramOfThought
from tts.strategies.refine import Refine
from tts.strategies.self_consistency import SelfConsistency
from tts.strategies.thinking import Thinking
from tts.strategies.universal_self_consistency import UniversalSelfConsistency
from tts.strategy import Proposer, Strategy
from tts.study import StudyRunner, load_study, run_study
from tts.task import Task
from tts.types import (
    Candidate,
    Completion,
    Message,
    Problem,
    Request,
    Result,
    Score,
    Trace,
    TraceEvent,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "AllPass",
    "Backend",
    "BackendError",
    "BestOfN",
    "BudgetExceeded",
    "CachedVerifier",
    "CalibratedVerifier",
    "Cancelled",
    "Candidate",
    "Capabilities",
    "Cascade",
    "ChoiceVerifier",
    "CoT",
    "Comparison",
    "Completion",
    "ConfigError",
    "ConsistencyVerifier",
    "Constraint",
    "Context",
    "CostModel",
    "Dataset",
    "DatasetError",
    "Ensemble",
    "FactCheckVerifier",
    "FakeBackend",
    "FewShot",
    "Game24Verifier",
    "Greedy",
    "Handle",
    "LLMJudge",
    "LeastToMost",
    "MathVerifier",
    "Member",
    "Message",
    "ModelNotFound",
    "OracleModel",
    "OracleSpec",
    "OutcomeRewardModel",
    "PairwiseJudge",
    "PipelineSpec",
    "Problem",
    "ProcessRewardModel",
    "ProgramOfThought",
    "ProgramVerifier",
    "Proposer",
    "QAVerifier",
    "Refine",
    "Report",
    "Request",
    "RequestTimeout",
    "Result",
    "SamplingParams",
    "Scheduler",
    "Score",
    "Scripted",
    "SelfConsistency",
    "SelfVerifier",
    "Strategy",
    "StudyRunner",
    "Summary",
    "TTSError",
    "Task",
    "Thinking",
    "Trace",
    "TraceEvent",
    "UniversalSelfConsistency",
    "UnsupportedControl",
    "Usage",
    "Verifier",
    "VerifierCost",
    "WeightedSum",
    "__version__",
    "arun",
    "build_pipeline",
    "build_strategy",
    "compare",
    "load_dataset",
    "load_pipeline",
    "load_study",
    "make_backend",
    "prune",
    "rerank",
    "run",
    "run_study",
    "solve",
    "write_report",
]
