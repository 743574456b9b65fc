"""Configuration: what a pipeline says, read from YAML or written in Python, and how it is built.

- :mod:`tts.config.components`: the one component spec shape ``{name, options..., limits}``
  (:class:`ComponentSpec` and its kinds) and :func:`build_component`;
- :mod:`tts.config.spec`: the pipeline's sections (:class:`PipelineSpec`) and
  :func:`load_pipeline`;
- :mod:`tts.config.yaml`: safe YAML with the line of every key, merges and dotted overrides;
- :mod:`tts.config.build`: :func:`make_backend`, :func:`build_strategy`, :func:`build_pipeline`.
"""

from __future__ import annotations

from tts.config.build import (
    Pipeline,
    apply_task,
    backend_for,
    build_pipeline,
    build_strategy,
    load_pipeline_dataset,
    make_backend,
)
from tts.config.components import (
    BackendSpec,
    ComponentSpec,
    ProposerSpec,
    RetrieverSpec,
    SpecError,
    Stage,
    StrategySpec,
    VerifierSpec,
    build_component,
    resolve_component,
    validate_component,
)
from tts.config.spec import BudgetSpec, DatasetSpec, PipelineSpec, RunSpec, TaskSpec, load_pipeline, parse_pipeline
from tts.config.yaml import MAX_YAML_NODES, apply_overrides, merge, read_yaml, read_yaml_file, resolve_paths, where

__all__ = [
    "MAX_YAML_NODES",
    "BackendSpec",
    "BudgetSpec",
    "ComponentSpec",
    "DatasetSpec",
    "Pipeline",
    "PipelineSpec",
    "ProposerSpec",
    "RetrieverSpec",
    "RunSpec",
    "SpecError",
    "Stage",
    "StrategySpec",
    "TaskSpec",
    "VerifierSpec",
    "apply_overrides",
    "apply_task",
    "backend_for",
    "build_component",
    "build_pipeline",
    "build_strategy",
    "load_pipeline",
    "load_pipeline_dataset",
    "make_backend",
    "merge",
    "parse_pipeline",
    "read_yaml",
    "read_yaml_file",
    "resolve_component",
    "resolve_paths",
    "validate_component",
    "where",
]
