"""The text's own annotator: a logistic regression on the sentence embeddings, fitted on the
seed rows, that joins the LLMs in the label model's features.

With weak LLMs the label model would otherwise see only noise; with this annotator it learns
from the seed rows how far to trust each LLM and the embeddings, and leans on the embeddings
where the LLMs are no help.

Honesty: the label model is fitted on the seed rows' signals, so a seed row's probabilities
here are out-of-fold (the model that gives them never saw that row); every other row gets the
model fitted on all seeds. The regularisation strength is chosen by cross-validation on the
seeds (log-loss), as a careful user would choose it.

Shapes: ``x`` (n, D) embeddings of all rows; ``rows`` (m,) the seed rows; ``y`` (m,) their
class indices in 0..K-1; outputs (n, K) probabilities over all K classes (a class without
seeds gets probability 0).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Candidate inverse regularisation strengths C (scikit-learn's), chosen by CV on the seeds."""


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds where every class has enough rows, else round-robin folds."""
    counts = np.bincount(y)
    smallest = counts[counts > 0].min()
    if smallest >= folds:
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    order = np.random.default_rng(seed).permutation(len(y))
    return [(np.sort(order[np.arange(len(y)) % folds != f]), np.sort(order[np.arange(len(y)) % folds == f]))
            for f in range(folds)]


def _fit(x: np.ndarray, y: np.ndarray, strength: float) -> LogisticRegression:
    with warnings.catch_warnings():  # many labels, few seeds: "more than 50% unique classes" is expected
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        return LogisticRegression(C=strength, max_iter=2000).fit(x, y)


def _proba(model: LogisticRegression, x: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(x), k))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _single_class(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(x), k))
    out[:, int(y[0])] = 1.0
    return out


def choose_strength(x: np.ndarray, y: np.ndarray, k: int, folds: int = 5, seed: int = 0) -> float:
    """The C of :data:`STRENGTHS` with the lowest cross-validated log-loss on (x, y)."""
    splits = _folds(y, min(folds, len(y)), seed)
    losses = []
    for strength in STRENGTHS:
        loss = 0.0
        for train, test in splits:
            if len(np.unique(y[train])) < 2:
                p = _single_class(x[test], y[train], k)
            else:
                p = _proba(_fit(x[train], y[train], strength), x[test], k)
            loss -= np.log(np.clip(p[np.arange(len(test)), y[test]], 1e-6, 1.0)).sum()
        losses.append(loss)
    return STRENGTHS[int(np.argmin(losses))]


def embedding_model_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                          folds: int = 5) -> tuple[np.ndarray, float]:
    """(probabilities (n, K) of every row from a model fitted on ``rows``, its C chosen by CV)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if len(np.unique(y)) < 2:
        return _single_class(x, y, k), 0.0
    strength = choose_strength(x[rows], y, k, folds, seed)
    return _proba(_fit(x[rows], y, strength), x, k), strength


def text_annotator_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                         folds: int = 5) -> np.ndarray:
    """Probabilities (n, K) of every row: out-of-fold on the seed ``rows``, else from all seeds."""
    return text_annotator_fit(x, rows, y, k, seed, folds)[0]


def text_annotator_fit(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                       folds: int = 5) -> tuple[np.ndarray, float]:
    """(:func:`text_annotator_proba`'s probabilities (n, K), the C chosen; 0.0: one class only)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    out, strength = embedding_model_proba(x, rows, y, k, seed, folds)
    if not strength:
        return out, strength
    for train, test in _folds(y, min(folds, len(y)), seed + 1):
        if len(np.unique(y[train])) < 2:
            out[rows[test]] = _single_class(x[rows[test]], y[train], k)
        else:
            out[rows[test]] = _proba(_fit(x[rows[train]], y[train], strength), x[rows[test]], k)
    return out, strength


def refitted_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, strength: float,
                   targets: np.ndarray) -> np.ndarray:
    """Probabilities (len(targets), K) of the regression (C = ``strength``) fitted on ``rows``
    with labels ``y``: the annotator refreshed with the loop's labels, for rows not among them."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if len(np.unique(y)) < 2 or not strength:
        return _single_class(x[targets], y, k)
    return _proba(_fit(x[rows], y, strength), x[targets], k)
