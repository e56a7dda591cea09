"""`confidence` that means what it says: temperature scaling fitted on held-out predictions, a
temperature folded into a classifier, and a logistic regression run as a head classifier."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from mollia_edge.al.classifier import head_from_linear, with_temperature
from mollia_edge.calibration import (
    confidence_ece,
    expected_calibration_error,
    fit_temperature,
    temper,
)


def _overconfident(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, K) sharpened by T = 0.4 from calibrated ones, and labels drawn from the
    calibrated ones: rows stated .95 sure are right far less often."""
    rng = np.random.default_rng(seed)
    calibrated = rng.dirichlet(np.full(k, 0.7), n)
    y = np.array([rng.choice(k, p=p) for p in calibrated])
    return temper(calibrated, 0.4), y


def test_a_temperature_fitted_on_held_out_rows_calibrates_overconfident_probabilities():
    p_fit, y_fit = _overconfident(400, 4, 0)
    p_new, y_new = _overconfident(2000, 4, 1)
    temperature = fit_temperature(p_fit, y_fit)
    assert 2.0 < temperature < 3.2  # undoes the sharpening (1 / 0.4 = 2.5)
    assert expected_calibration_error(p_new, y_new, 10) > 0.15
    assert expected_calibration_error(temper(p_new, temperature), y_new, 10) <= 0.04


def test_confidence_ece_is_the_gap_between_stated_and_real_accuracy():
    assert confidence_ece([0.9] * 10, [True] * 9 + [False]) == 0.0
    assert abs(confidence_ece([0.9] * 10, [True] * 5 + [False] * 5) - 0.4) < 1e-12
    assert confidence_ece([], []) == 0.0


def test_a_temperature_folded_into_a_classifier_and_a_regression_as_a_head_are_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for k in (2, 3):
        y = rng.integers(0, k, 120)
        regression = LogisticRegression(max_iter=1000).fit(x, y)
        weight = regression.coef_ if k > 2 else np.vstack([np.zeros(16), regression.coef_[0]])
        bias = regression.intercept_ if k > 2 else np.array([0.0, regression.intercept_[0]])
        head = head_from_linear(weight, bias)
        np.testing.assert_allclose(head.predict_proba(x), regression.predict_proba(x), atol=1e-5)
        np.testing.assert_allclose(with_temperature(head, 2.0).predict_proba(x),
                                   temper(regression.predict_proba(x), 2.0), atol=1e-5)

