"""Calibration: AUROC, reliability curves, ECE, Platt and isotonic calibration of a synthetic
miscalibrated scorer (ECE drops on held-out scores), and the calibrated-verifier wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from tts.errors import ConfigError
from tts.types import Candidate, Problem, Score
from tts.verifiers.base import VerifierCost
from tts.verifiers.calibration import (
    CalibratedVerifier,
    IsotonicCalibration,
    PlattScaling,
    auroc,
    calibration_report,
    expected_calibration_error,
    fit_calibrator,
    reliability_curve,
)


def overconfident_scorer(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True correctness probabilities p, labels drawn from them, and an overconfident scorer's
    scores sigmoid(3 * logit(p)) (pushed towards 0 and 1)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    labels = (rng.uniform(size=n) < p).astype(int)
    scores = 1 / (1 + np.exp(-3 * np.log(p / (1 - p))))
    return p, labels, scores


def test_auroc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)
    y = rng.integers(0, 2, 60)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert auroc(s, y) == pytest.approx(brute)
    assert auroc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0 and auroc([0.9, 0.1], [0, 1]) == 0.0
    with pytest.raises(ConfigError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])


def test_reliability_curve_and_ece() -> None:
    curve = reliability_curve([0.1, 0.1, 0.9, 0.9, 0.95], [0, 1, 1, 1, 0], bins=2)
    assert curve.edges == (0.0, 0.5, 1.0) and curve.counts == (2, 3)
    assert curve.confidence == pytest.approx((0.1, 2.75 / 3)) and curve.accuracy == pytest.approx((0.5, 2 / 3))
    assert curve.ece == pytest.approx((2 * 0.4 + 3 * (2.75 / 3 - 2 / 3)) / 5)
    quantile = reliability_curve(np.linspace(0, 1, 100), np.arange(100) % 2, bins=4, strategy="quantile")
    assert quantile.counts == (25, 25, 25, 25)
    p, labels, _ = overconfident_scorer(20000, seed=1)
    assert expected_calibration_error(p, labels) < 0.02  # the true probabilities are calibrated
    with pytest.raises(ConfigError, match=r"probabilities in \[0, 1\]"):
        reliability_curve([1.5], [1])
    with pytest.raises(ConfigError, match="same length"):
        expected_calibration_error([0.5, 0.5], [1])


def _overfit_logistic_model(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of a realistic miscalibrated scorer: a tiny logistic model trained without
    regularisation on 80 noisy examples of a task whose true boundary is not linear, then scored on
    12000 held-out examples. Overfitting makes it overconfident in a way no one-line transform of
    its scores undoes exactly (unlike sigmoid(3 * logit(p)))."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 12))
        true_logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] ** 2 - 0.6 + 0.4 * np.sin(3 * x[:, 3])
        return x, (rng.uniform(size=n) < 1 / (1 + np.exp(-true_logit))).astype(int)

    x_train, y_train = draw(80)
    w, b = np.zeros(12), 0.0
    for _ in range(4000):  # plain gradient descent, no regularisation: it overfits
        p = 1 / (1 + np.exp(-(x_train @ w + b)))
        w -= 0.5 * x_train.T @ (p - y_train) / len(y_train)
        b -= 0.5 * float(np.mean(p - y_train))
    x_test, y_test = draw(12000)
    return 1 / (1 + np.exp(-(x_test @ w + b))), y_test


@pytest.mark.parametrize("method", ["platt_logit", "isotonic", "platt"])
def test_calibration_lowers_ece_of_a_miscalibrated_scorer_on_held_out_scores(method: str) -> None:
    # a trained model's scores (see _overfit_logistic_model), not a distortion Platt inverts exactly
    scores, labels = _overfit_logistic_model(seed=2)
    train_scores, train_labels, test_scores, test_labels = scores[:4000], labels[:4000], scores[4000:], labels[4000:]
    calibrator = fit_calibrator(train_scores, train_labels, method)
    report = calibration_report(test_scores, test_labels, calibrator, bins=10)
    assert report.ece_before > 0.08
    assert report.ece_after < 0.5 * report.ece_before
    # calibration is monotone: the ranking (AUROC) is unchanged, up to ties
    assert auroc(calibrator(test_scores), test_labels) == pytest.approx(auroc(test_scores, test_labels), abs=0.01)
    # the curve moves towards the diagonal
    gaps = [abs(a - c) for a, c in zip(report.after.accuracy, report.after.confidence, strict=True)]
    assert max(gaps) < max(abs(a - c) for a, c in zip(report.before.accuracy, report.before.confidence, strict=True))


def test_platt_on_log_odds_recovers_the_temperature() -> None:
    _, labels, scores = overconfident_scorer(20000, seed=4)
    platt = PlattScaling(logit=True).fit(scores, labels)
    assert platt.a == pytest.approx(1 / 3, abs=0.03) and platt.b == pytest.approx(0.0, abs=0.05)
    with pytest.raises(ConfigError, match="not fitted"):
        PlattScaling()([0.5])


def test_isotonic_is_the_monotone_least_squares_fit() -> None:
    iso = IsotonicCalibration().fit([1, 2, 3, 4, 5, 6], [0, 1, 0, 0, 1, 1])
    assert iso.y.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1, 1])
    assert iso([0, 2.5, 10]).tolist() == pytest.approx([0, 1 / 3, 1])
    with pytest.raises(ConfigError, match="not fitted"):
        IsotonicCalibration()([0.5])


async def test_calibrated_verifier_maps_values_and_steps() -> None:
    class Overconfident:
        name = "rm"
        cost = VerifierCost(kind="model", calls=1)

        async def score(self, problem, candidates, ctx=None):
            return [Score(0.99, True, "sure", "rm", steps=(0.99, 0.5)), Score(0.2, False, "", "rm")]

    calibrator = IsotonicCalibration().fit([0.2, 0.99, 0.99], [0, 0, 1])  # 0.2 -> 0, 0.99 -> 0.5
    verifier = CalibratedVerifier(Overconfident(), calibrator, threshold=0.6)
    scores = await verifier.score(Problem("q", "?"), [Candidate("a", "1"), Candidate("b", "2")], None)
    assert [s.value for s in scores] == pytest.approx([0.5, 0.0])
    assert scores[0].steps == pytest.approx((0.5, 0.5 * 0.3 / 0.79)) and scores[0].feedback == "sure"
    assert [s.passed for s in scores] == [False, False] and scores[0].verifier == "calibrated(rm)"
    assert verifier.cost == VerifierCost(kind="model", calls=1)
    keep = CalibratedVerifier(Overconfident(), calibrator)
    assert [
        s.passed for s in await keep.score(Problem("q", "?"), [Candidate("a", "1"), Candidate("b", "2")], None)
    ] == [True, False]


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_fixes_a_trained_overconfident_model(method: str) -> None:
    scores, labels = _overfit_logistic_model(seed=3)
    fit_s, fit_y, test_s, test_y = scores[:4000], labels[:4000], scores[4000:], labels[4000:]
    raw = expected_calibration_error(test_s, test_y)
    fixed = expected_calibration_error(fit_calibrator(fit_s, fit_y, method)(test_s), test_y)
    assert raw > 0.08  # the trained model really is miscalibrated
    assert fixed < raw / 2 and fixed < 0.05
    assert auroc(test_s, test_y) == pytest.approx(auroc(fit_calibrator(fit_s, fit_y, "platt")(test_s), test_y))
