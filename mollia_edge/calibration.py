"""Calibration of class probabilities: temperature scaling and expected calibration error.

Shapes: ``n`` rows, ``K`` classes; probabilities (n, K) with rows summing to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataError

_FLOOR = 1e-12


def _probabilities(value: Any) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise DataError(f"probabilities must have shape (rows, classes) with >= 2 classes, got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise DataError("probabilities must be finite and non-negative")
    return p


def _gold(value: Any, p: np.ndarray) -> np.ndarray:
    y = np.asarray(value)
    if y.shape != (p.shape[0],):
        raise DataError(f"labels must have shape ({p.shape[0]},) to match the probabilities, got {y.shape}")
    if np.any((y < 0) | (y >= p.shape[1])):
        raise DataError(f"labels must be class indices in [0, {p.shape[1]})")
    return y.astype(np.int64)


def temper(probabilities: Any, temperature: float) -> np.ndarray:
    """softmax(log p / T) for probabilities (n, K): T > 1 softens, T < 1 sharpens."""
    p = _probabilities(probabilities)
    if not temperature > 0:
        raise DataError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return p / p.sum(axis=1, keepdims=True)
    logits = np.log(np.maximum(p, _FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def row_log_losses(p: np.ndarray, y: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Each row's log-loss (n,): -log p[i, y[i]] of probabilities (n, K) on labels (n,), with p
    floored at ``floor``. The one log-loss of the project. scikit-learn's ``log_loss`` gives only
    the mean (the paired per-row comparisons of model selection need each row) and floors at
    machine epsilon; the default floor 1e-6 keeps one confidently wrong seed row (an
    overconfident boosted model) from outweighing the other 49 in a 50-row choice."""
    return -np.log(np.clip(p[np.arange(len(y)), y], floor, 1.0))


def _nll(p: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(row_log_losses(temper(p, temperature), y, _FLOOR).mean())


def fit_temperature(probabilities: Any, y: Any, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature in [low, high] minimising the log-loss of probabilities (n, K) on labels (n,).

    Golden-section search on log T (the log-loss of temperature scaling is unimodal in it).
    """
    p = _probabilities(probabilities)
    gold = _gold(y, p)
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(p, gold, np.exp(c)), _nll(p, gold, np.exp(d))
    for _ in range(40):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(p, gold, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(p, gold, np.exp(d))
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probabilities: Any, y: Any, bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over equal-width confidence bins of |accuracy - confidence| x share."""
    p = _probabilities(probabilities)
    gold = _gold(y, p)
    return confidence_ece(p.max(axis=1), p.argmax(axis=1) == gold, bins)


def confidence_ece(confidence: Any, correct: Any, bins: int = 10) -> float:
    """ECE of stated confidences (n,) against whether each row is right (n,): the share-weighted
    mean over equal-width confidence bins of |accuracy - mean confidence|."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if not len(confidence):
        return 0.0
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += abs(correct[rows].mean() - confidence[rows].mean()) * rows.mean()
    return float(total)
