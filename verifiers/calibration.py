"""Calibrate a verifier's scores against labels: reliability curves, Platt scaling, isotonic
regression, expected calibration error (ECE) and AUROC.

A verifier whose score says 0.9 should be right nine times out of ten; reward models and LLM
judges rarely are. Fit a calibrator on scores with known labels (correct / incorrect), check the
ECE before and after on held-out scores, then wrap the verifier in :class:`CalibratedVerifier` so
thresholds (``prune(candidates, 0.8)``) mean what they say::

    cal = fit_calibrator(train_scores, train_labels, method="isotonic")
    report = calibration_report(test_scores, test_labels, cal)   # report.ece_before, report.ece_after
    verifier = CalibratedVerifier(reward_model, cal)

Everything here is plain numpy; calibrators are small, picklable objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import AfterValidator, Field

from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score

from .base import AVerifier, VerifierCost, VerifierOptions, build_verifier, cost_of, verifier_options

if TYPE_CHECKING:
    from tts.context import Context

__all__ = [
    "CalibratedOptions",
    "CalibratedVerifier",
    "CalibrationReport",
    "Calibrator",
    "IsotonicCalibration",
    "PlattScaling",
    "ReliabilityCurve",
    "auroc",
    "calibration_report",
    "expected_calibration_error",
    "fit_calibrator",
    "reliability_curve",
]

BinStrategy = Literal["uniform", "quantile"]


def _arrays(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool | int | float] | np.ndarray, probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    if s.shape != y.shape:
        raise ConfigError(f"scores and labels must have the same length, got {s.size} and {y.size}.")
    if s.size == 0:
        raise ConfigError("scores must not be empty: calibration needs labelled scores.")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores must be finite numbers, got NaN or infinity.")
    if not np.all((y == 0) | (y == 1)):
        raise ConfigError("labels must be 0/1 or booleans (1 = correct).")
    if probabilities and (s.min() < 0 or s.max() > 1):
        raise ConfigError(
            f"scores must be probabilities in [0, 1] here, got range [{s.min():.3g}, {s.max():.3g}]; "
            "calibrate them first (PlattScaling maps any real score to [0, 1])."
        )
    return s, y


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool | int] | np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative (ties count half). 0.5 is chance, 1.0 a perfect ranking."""
    s, y = _arrays(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        raise ConfigError("labels must contain both classes (some 1 and some 0) to compute AUROC.")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty_like(s)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y == 1].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per bin: mean predicted score (``confidence``), fraction of positives (``accuracy``) and
    ``counts``; empty bins are dropped. ``edges`` are the bin boundaries used."""

    edges: tuple[float, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |accuracy - confidence| over bins."""
        total = sum(self.counts)
        return (
            float(
                sum(n * abs(a - c) for n, a, c in zip(self.counts, self.accuracy, self.confidence, strict=True)) / total
            )
            if total
            else 0.0
        )


def _edges(s: np.ndarray, bins: int, strategy: BinStrategy) -> np.ndarray:
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}.")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, bins + 1)
    if strategy == "quantile":
        edges = np.quantile(s, np.linspace(0.0, 1.0, bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return np.unique(edges)
    raise ConfigError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}.")


def reliability_curve(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool | int] | np.ndarray,
    bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> ReliabilityCurve:
    """Bins probabilities (``uniform`` width or ``quantile`` = equal counts) and compares each bin's
    mean score with its fraction of positives; a calibrated scorer lies on the diagonal."""
    s, y = _arrays(scores, labels, probabilities=True)
    edges = _edges(s, bins, strategy)
    index = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    conf, acc, counts = [], [], []
    for b in range(len(edges) - 1):
        mask = index == b
        n = int(mask.sum())
        if n:
            conf.append(float(s[mask].mean()))
            acc.append(float(y[mask].mean()))
            counts.append(n)
    return ReliabilityCurve(tuple(float(e) for e in edges), tuple(conf), tuple(acc), tuple(counts))


def expected_calibration_error(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool | int] | np.ndarray,
    bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the reliability bins."""
    return reliability_curve(scores, labels, bins, strategy).ece


class Calibrator(Protocol):
    """Maps raw scores to calibrated probabilities (fit first)."""

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray: ...


@dataclass
class PlattScaling:
    """Platt scaling: p = sigmoid(a * x + b), fit by maximum likelihood with Platt's smoothed
    targets (robust when a class is rare). ``x`` is the raw score (any real number: rewards,
    logits), or with ``logit=True`` the log-odds of a probability score, which undoes over- and
    under-confidence exactly (temperature scaling plus a bias)."""

    a: float = 1.0
    b: float = 0.0
    logit: bool = False
    fitted: bool = False

    def _x(self, scores: np.ndarray) -> np.ndarray:
        if not self.logit:
            return scores
        if scores.size and (scores.min() < 0 or scores.max() > 1):
            raise ConfigError("PlattScaling(logit=True) needs probability scores in [0, 1]; use logit=False.")
        clipped = np.clip(scores, 1e-6, 1 - 1e-6)
        return np.asarray(np.log(clipped / (1 - clipped)))

    def fit(
        self, scores: Sequence[float] | np.ndarray, labels: Sequence[bool | int] | np.ndarray, iterations: int = 100
    ) -> PlattScaling:
        raw, y = _arrays(scores, labels)
        s = self._x(raw)
        n_pos, n_neg = y.sum(), y.size - y.sum()
        t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a, b = 0.0, float(np.log((n_pos + 1) / (n_neg + 1)))
        for _ in range(iterations):  # Newton's method on the logistic log-loss (tiny L2 for stability)
            p = 1.0 / (1.0 + np.exp(-(a * s + b)))
            w = np.maximum(p * (1 - p), 1e-12)
            g = np.array([np.dot(p - t, s) + 1e-6 * a, np.sum(p - t)])
            h = np.array([[np.dot(w, s * s) + 1e-6, np.dot(w, s)], [np.dot(w, s), np.sum(w) + 1e-12]])
            step = np.linalg.solve(h, g)
            a, b = a - float(step[0]), b - float(step[1])
            if np.max(np.abs(step)) < 1e-10:
                break
        self.a, self.b, self.fitted = a, b, True
        return self

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise ConfigError("PlattScaling is not fitted: call .fit(scores, labels) first.")
        s = self._x(np.asarray(scores, dtype=float))
        return np.asarray(1.0 / (1.0 + np.exp(-(self.a * s + self.b))))


@dataclass
class IsotonicCalibration:
    """Isotonic regression (pool adjacent violators): the best non-decreasing step function from
    score to probability. Fits any monotone distortion; needs more data than Platt scaling.
    Between fitted points the mapping interpolates linearly; beyond them it is flat."""

    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(
        self, scores: Sequence[float] | np.ndarray, labels: Sequence[bool | int] | np.ndarray
    ) -> IsotonicCalibration:
        s, lab = _arrays(scores, labels)
        order = np.argsort(s, kind="mergesort")
        xs, ys = s[order], lab[order]
        # pool equal scores first, then merge blocks that violate monotonicity
        ux, start = np.unique(xs, return_index=True)
        sums = np.add.reduceat(ys, start)
        counts = np.diff(np.append(start, xs.size)).astype(float)
        vals: list[float] = []
        wts: list[float] = []
        lows: list[int] = []
        for k in range(ux.size):
            vals.append(sums[k] / counts[k])
            wts.append(counts[k])
            lows.append(k)
            while len(vals) > 1 and vals[-2] > vals[-1]:
                v, w = vals.pop(), wts.pop()
                lows.pop()
                vals[-1] = (vals[-1] * wts[-1] + v * w) / (wts[-1] + w)
                wts[-1] += w
        fitted = np.empty(ux.size)
        bounds = [*lows, ux.size]
        for i, v in enumerate(vals):
            fitted[bounds[i] : bounds[i + 1]] = v
        self.x, self.y = ux, fitted
        return self

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        if self.x.size == 0:
            raise ConfigError("IsotonicCalibration is not fitted: call .fit(scores, labels) first.")
        return np.asarray(np.interp(np.asarray(scores, dtype=float), self.x, self.y))


def fit_calibrator(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool | int] | np.ndarray,
    method: Literal["platt", "platt_logit", "isotonic"] = "platt",
) -> PlattScaling | IsotonicCalibration:
    """A calibrator fitted on labelled scores (1 = the candidate was correct): ``platt`` on raw
    scores, ``platt_logit`` on the log-odds of probability scores, or ``isotonic``."""
    if method in ("platt", "platt_logit"):
        return PlattScaling(logit=method == "platt_logit").fit(scores, labels)
    if method == "isotonic":
        return IsotonicCalibration().fit(scores, labels)
    raise ConfigError(f"method must be 'platt', 'platt_logit' or 'isotonic', got {method!r}.")


@dataclass(frozen=True)
class CalibrationReport:
    """ECE and reliability curves of raw and calibrated scores on the same labelled set."""

    ece_before: float
    ece_after: float
    before: ReliabilityCurve
    after: ReliabilityCurve


def _calibrator(c: Any) -> Any:
    if not callable(c):
        raise ValueError(f"calibrator must be a fitted calibrator (callable on scores), got {type(c).__name__}")
    return c


def calibration_report(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool | int] | np.ndarray,
    calibrator: Calibrator,
    bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> CalibrationReport:
    """Reliability before and after ``calibrator``; evaluate on scores it was not fitted on."""
    s, y = _arrays(scores, labels, probabilities=True)
    before = reliability_curve(s, y, bins, strategy)
    after = reliability_curve(np.clip(calibrator(s), 0.0, 1.0), y, bins, strategy)
    return CalibrationReport(before.ece, after.ece, before, after)


class CalibratedOptions(VerifierOptions):
    """Options of :class:`CalibratedVerifier`."""

    verifier: AVerifier
    calibrator: Annotated[Any, AfterValidator(_calibrator)]
    """A fitted :class:`Calibrator` (callable on an array of scores)."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """``passed = calibrated >= threshold``; None keeps the inner verifier's verdict."""


class CalibratedVerifier:
    """Wraps a verifier and maps its score values through a fitted calibrator.

    ``passed`` becomes ``calibrated >= threshold`` when a threshold is given, else the inner
    verifier's verdict is kept. Per-step values are calibrated too.
    """

    name: ClassVar[str] = "calibrated"
    Options = CalibratedOptions

    def __init__(
        self, options: CalibratedOptions | object = None, calibrator: Calibrator | None = None, /, **kw: Any
    ) -> None:
        if options is not None and not isinstance(options, CalibratedOptions | Mapping):
            options, kw = None, {"verifier": options, **kw}
        if calibrator is not None:
            kw["calibrator"] = calibrator
        self.options = o = verifier_options(CalibratedOptions, options, kw, self.name)
        self.verifier = build_verifier(o.verifier)
        self.calibrator: Calibrator = o.calibrator
        self.threshold = o.threshold
        self.cost: VerifierCost = cost_of(self.verifier)

    async def score(self, problem: Problem, candidates: Sequence[Candidate], ctx: Context) -> list[Score]:
        raw: list[Score] = await self.verifier.score(problem, candidates, ctx)
        if not raw:
            return []
        values = self.calibrator([s.value for s in raw])
        out = []
        for s, v in zip(raw, values, strict=True):
            steps = tuple(float(x) for x in self.calibrator(list(s.steps))) if s.steps else s.steps
            passed = s.passed if self.threshold is None else bool(v >= self.threshold)
            out.append(
                Score(
                    value=float(v),
                    passed=passed,
                    feedback=s.feedback,
                    verifier=f"{self.name}({s.verifier})",
                    steps=steps,
                )
            )
        return out
