"""Per-annotator report on the seed rows: each LLM's accuracy and pairwise agreement.

Shapes: ``n`` rows, ``N`` annotators, ``K`` classes; scores and consistency (n, N, K).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from .errors import DataError, quoted
from .molam import single, vote


def cohen_kappa(a: Any, b: Any, n_classes: int) -> float:
    """Cohen's kappa between two labellings (n,) with classes in [0, K): 1 = full agreement,
    0 = as much as chance; 1.0 when both give one and the same class everywhere."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise DataError(f"labellings must be non-empty 1-D arrays of one length, got {a.shape} and {b.shape}")
    if np.all(a == a[0]) and np.array_equal(a, b):  # chance agreement is 1: scikit-learn says nan
        return 1.0
    return float(cohen_kappa_score(a, b, labels=np.arange(n_classes)))


def confusion_text(confused: Sequence[dict[str, Any]]) -> str:
    """``AnnotatorReport.most_confused`` in words: "negative as positive 12/25, ..."."""
    return ", ".join(f"{quoted(c['label'], quote=False)} as {quoted(c['answered'], quote=False)} {c['rows']}/{c['of']}"
                     for c in confused)


@dataclass(frozen=True)
class AnnotatorReport:
    """``accuracy_scores`` and ``accuracy_samples`` (N,): each annotator's accuracy on the seed
    rows by the argmax of its label scores and by the majority of its sampled answers;
    ``kappa`` (N, N): Cohen's kappa between the annotators' score labels; ``confusion`` (N, K, K):
    per annotator, seed rows of label a (row) it scored as label b (column); ``labels``: the K
    label names (class indices when not given)."""

    names: list[str]
    accuracy_scores: np.ndarray
    accuracy_samples: np.ndarray
    kappa: np.ndarray
    confusion: np.ndarray
    labels: list[str]

    def most_confused(self, i: int, top: int = 3) -> list[dict[str, Any]]:
        """Annotator ``i``'s ``top`` largest mistakes: seed rows of ``label`` it answered as
        ``answered``, most rows first (ties: label order); ``of``: the seed rows of ``label``."""
        matrix = self.confusion[i]
        pairs = [(-int(matrix[a, b]), a, b) for a in range(len(matrix)) for b in range(len(matrix))
                 if a != b and matrix[a, b] > 0]
        return [{"label": self.labels[a], "answered": self.labels[b], "rows": -n, "of": int(matrix[a].sum())}
                for n, a, b in sorted(pairs)[:top]]

    def as_dict(self) -> dict[str, Any]:
        return {
            name: {
                "accuracy_scores": float(self.accuracy_scores[i]),
                "accuracy_samples": float(self.accuracy_samples[i]),
                "kappa": {other: float(self.kappa[i, j]) for j, other in enumerate(self.names) if j != i},
                "confused": self.most_confused(i),
            }
            for i, name in enumerate(self.names)
        }


def annotator_report(scores: Any, consistency: Any, y: Any, names: Sequence[str] | None = None,
                     labels: Sequence[str] | None = None) -> AnnotatorReport:
    """Report on rows with known labels y (n,) for annotators' scores and consistency (n, N, K);
    ``labels``: the K label names, for the confusion pairs."""
    scores, c = np.asarray(scores, dtype=np.float64), np.asarray(consistency, dtype=np.float64)
    if scores.ndim != 3 or scores.shape != c.shape:
        raise DataError(f"scores {scores.shape} and consistency {c.shape} must both have shape (rows, annotators, classes)")
    y = np.asarray(y)
    if y.shape != (scores.shape[0],):
        raise DataError(f"labels must have shape ({scores.shape[0]},), got {y.shape}")
    n_ann, k = scores.shape[1], scores.shape[2]
    names = list(names) if names is not None else [f"llm{i}" for i in range(n_ann)]
    if len(names) != n_ann:
        raise DataError(f"{len(names)} names given for {n_ann} annotators")
    by_scores = np.stack([single(scores, i).argmax(axis=1) for i in range(n_ann)])
    by_samples = np.stack([vote(c[:, i : i + 1], scores[:, i : i + 1]).argmax(axis=1) for i in range(n_ann)])
    kappa = np.array([[cohen_kappa(by_scores[i], by_scores[j], k) for j in range(n_ann)] for i in range(n_ann)])
    confusion = np.zeros((n_ann, k, k), dtype=np.int64)
    for i in range(n_ann):
        np.add.at(confusion[i], (y.astype(np.int64), by_scores[i]), 1)
    label_names = list(labels) if labels is not None else [str(j) for j in range(k)]
    if len(label_names) != k:
        raise DataError(f"{len(label_names)} label names given for {k} classes")
    return AnnotatorReport(names, (by_scores == y).mean(axis=1), (by_samples == y).mean(axis=1), kappa,
                           confusion, label_names)
