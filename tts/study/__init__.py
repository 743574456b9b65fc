"""Studies: pipelines x n values x seeds over a dataset, results in SQLite as each problem finishes.

- :mod:`tts.study.spec`: the study file and its configurations (:func:`load_study`);
- :mod:`tts.study.runner`: running them through :func:`tts.runner.arun`, resumable
  (:class:`StudyRunner`, :func:`run_study`);
- :mod:`tts.study.store`: the SQLite store (``OUT/results.sqlite``, its ``results`` table);
- :mod:`tts.study.manifest`: ``manifest.json`` and the CSV exports (:func:`load_results`);
- :mod:`tts.study.analysis`, :mod:`tts.study.curves`, :mod:`tts.study.allocation`: metrics,
  comparisons, scaling curves (with the strategies' own selection rules) and compute-optimal
  allocation, all pure functions of the store;
- :mod:`tts.study.report`: PNG plots and one self-contained HTML page (:func:`write_report`).
"""

from __future__ import annotations

from tts.study.manifest import load_results
from tts.study.runner import PlanRow, StudyOutcome, StudyRunner, run_study
from tts.study.spec import Configuration, Study, StudySpec, load_study

__all__ = [
    "Configuration",
    "PlanRow",
    "Study",
    "StudyOutcome",
    "StudyRunner",
    "StudySpec",
    "load_results",
    "load_study",
    "run_study",
]
