"""The text's own annotator: a logistic regression on the sentence embeddings, fitted on the
seed rows, that joins the LLMs in the label model's features.

With weak LLMs the label model would otherwise see only noise; with this annotator it learns
from the seed rows how far to trust each LLM and the embeddings, and leans on the embeddings
where the LLMs are no help.

Honesty: the label model is fitted on the seed rows' signals, so a seed row's probabilities
here are out-of-fold (the model that gives them never saw that row); every other row gets the
model fitted on all seeds. The regularisation strength is chosen by cross-validation on the
seeds (log-loss), as a careful user would choose it.

Self-training (:func:`self_trained_proba`): the rows no one labelled teach the regression too.
Each of ``rounds`` rounds adds, per label, the ``per_label`` unlabelled rows the regression is
surest belong to it, with that label, and refits (same C). The quota is the same for every
label (one without labelled rows is never the regression's answer, so it gets none): a label
the seeds under-represent is not crowded out. Chosen on
development datasets (stackoverflow, imdb, 20newsgroups; 1,000 rows, 50 seeds), never on the
datasets `bench_label.py` reports: accuracy .525 / .680 / .369 with the seed rows alone,
.656 / .689 / .551 with 5 rounds of 10 (:data:`SELF_TRAINING`); never worse on imbalanced
subsets of the same sets.

Shapes: ``x`` (n, D) embeddings of all rows; ``rows`` (m,) the seed rows; ``y`` (m,) their
class indices in 0..K-1; outputs (n, K) probabilities over all K classes (a class without
seeds gets probability 0).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from .config import ActiveLearningConfig
from .calibration import row_log_losses
from .folds import stratified_splits

SELF_TRAINING = ActiveLearningConfig().self_training
"""(rounds, rows added per label per round) of :func:`self_trained_proba` by default: the
defaults of ``al.self_training_rounds`` and ``al.self_training_per_label``."""

STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Candidate inverse regularisation strengths C (scikit-learn's), chosen by CV on the seeds."""


def fit_regression(x: np.ndarray, y: np.ndarray, strength: float) -> LogisticRegression:
    with warnings.catch_warnings():  # many labels, few seeds: "more than 50% unique classes" is expected
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        return LogisticRegression(C=strength, max_iter=2000).fit(x, y)


def regression_proba(model: LogisticRegression, x: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(x), k))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _single_class(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(x), k))
    out[:, int(y[0])] = 1.0
    return out


def self_trained_rows(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, strength: float,
                       self_training: tuple[int, int] = SELF_TRAINING) -> tuple[np.ndarray, np.ndarray]:
    """(rows (r,), labels (r,)): ``rows`` with ``y`` and the rows self-training added with their
    labels (see the module's docstring); ``rows`` and ``y`` alone when ``self_training[0]`` is 0."""
    rounds, per_label = self_training
    rows, y = np.asarray(rows, np.int64), np.asarray(y, np.int64)
    for _ in range(rounds):
        rest = np.setdiff1d(np.arange(len(x)), rows)
        if not len(rest):
            break
        p = regression_proba(fit_regression(x[rows], y, strength), x[rest], k)
        best = p.argmax(axis=1)
        added = [rest[best == j][np.argsort(-p[best == j, j], kind="stable")[:per_label]] for j in range(k)]
        rows = np.concatenate([rows, *added])
        y = np.concatenate([y, *[np.full(len(a), j, np.int64) for j, a in enumerate(added)]])
    return rows, y


def self_trained_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, strength: float,
                       targets: np.ndarray | None = None,
                       self_training: tuple[int, int] = SELF_TRAINING) -> np.ndarray:
    """Probabilities (len(targets), K) (targets: every row by default) of the regression
    (C = ``strength``) fitted on ``rows`` with labels ``y`` and self-trained on the other rows."""
    rows, y = self_trained_rows(x, rows, y, k, strength, self_training)
    return regression_proba(fit_regression(x[rows], y, strength), x if targets is None else x[targets], k)


def choose_strength(x: np.ndarray, y: np.ndarray, k: int, folds: int = 5, seed: int = 0) -> float:
    """The C of :data:`STRENGTHS` with the lowest cross-validated log-loss on (x, y)."""
    splits = stratified_splits(y, min(folds, len(y)), seed)
    losses = []
    for strength in STRENGTHS:
        loss = 0.0
        for train, test in splits:
            if len(np.unique(y[train])) < 2:
                p = _single_class(x[test], y[train], k)
            else:
                p = regression_proba(fit_regression(x[train], y[train], strength), x[test], k)
            loss += row_log_losses(p, y[test]).sum()
        losses.append(loss)
    return STRENGTHS[int(np.argmin(losses))]


def embedding_model_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                          folds: int = 5, self_training: tuple[int, int] = SELF_TRAINING) -> tuple[np.ndarray, float]:
    """(probabilities (n, K) of every row from a model fitted on ``rows`` and self-trained on
    the others, its C chosen by CV on ``rows``)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if len(np.unique(y)) < 2:
        return _single_class(x, y, k), 0.0
    strength = choose_strength(x[rows], y, k, folds, seed)
    return self_trained_proba(x, rows, y, k, strength, self_training=self_training), strength


def text_annotator_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                         folds: int = 5, self_training: tuple[int, int] = SELF_TRAINING) -> np.ndarray:
    """Probabilities (n, K) of every row: out-of-fold on the seed ``rows``, else from all seeds."""
    return text_annotator_fit(x, rows, y, k, seed, folds, self_training)[0]


def text_annotator_fit(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, seed: int = 0,
                       folds: int = 5, self_training: tuple[int, int] = SELF_TRAINING) -> tuple[np.ndarray, float]:
    """(:func:`text_annotator_proba`'s probabilities (n, K), the C chosen; 0.0: one class only).
    A seed row's probabilities come from the regression self-trained from the other folds' seeds
    (its own label unseen: it is one of the unlabelled rows there)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    out, strength = embedding_model_proba(x, rows, y, k, seed, folds, self_training)
    if not strength:
        return out, strength
    for train, test in stratified_splits(y, min(folds, len(y)), seed + 1):
        out[rows[test]] = refitted_proba(x, rows[train], y[train], k, strength, rows[test], self_training)
    return out, strength


def refitted_proba(x: np.ndarray, rows: np.ndarray, y: np.ndarray, k: int, strength: float,
                   targets: np.ndarray, self_training: tuple[int, int] = SELF_TRAINING) -> np.ndarray:
    """Probabilities (len(targets), K) of the regression (C = ``strength``) fitted on ``rows``
    with labels ``y`` and self-trained on the other rows: the annotator without a fold of the
    seeds, or refreshed with the loop's labels, for rows not among ``rows``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if len(np.unique(y)) < 2 or not strength:
        return _single_class(x[targets], y, k)
    return self_trained_proba(x, rows, y, k, strength, targets, self_training)
