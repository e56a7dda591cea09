"""Do the label model's labels teach a classifier on the text more than the seed rows alone?

The final classifier learns from the seed rows and the label model's labels of the rows the
LLMs saw. When the LLMs are no help (10 topics and 135M-parameter models), those labels are
mostly noise, and a classifier trained on them ends below a regression on the seed rows
alone. This check decides, on the seed rows only, which teacher the classifier gets:

* arm ``seeds``: a logistic regression on the embeddings of the other seed folds;
* arm ``label model``: the same, plus the label model's labels of the LLM-annotated rows.

Each arm predicts the held-out seed fold; the arm with the lower log-loss wins (ties go to the
seeds). Honesty: the label model's labels of the extra rows use the text's own annotator, which
was fitted on every seed; for each fold they are made again with that annotator refitted
without the fold (``labels_for``), so the held-out seeds cannot leak into the arm that uses
them. The label model's trees saw every seed (second order; documented, not corrected).

Shapes: ``x`` (n, D); ``seed_rows`` (m,) and ``seed_y`` (m,) in 0..K-1; ``extra_rows`` (e,);
``labels_for(text_proba)`` takes (e, K) probabilities of the text annotator on the extra rows
(or None when there is no text annotator) and returns (e,) labels, -1 where it abstains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .text_annotator import _fit, _folds, _proba, choose_strength


@dataclass(frozen=True)
class TeachingCheck:
    """The decision and its evidence: mean held-out log-loss on the seed rows of each arm."""

    label_model_teaches: bool
    seeds_log_loss: float | None = None
    label_model_log_loss: float | None = None
    label_model_rows: int = 0
    reason: str = "cross-validated log-loss on the seed rows"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"teacher": "label model" if self.label_model_teaches else "seed rows",
                                  "why": self.reason}
        if self.seeds_log_loss is not None and self.label_model_log_loss is not None:
            out["seed_log_loss"] = {"seed rows": round(self.seeds_log_loss, 4),
                                    "seed rows + label model": round(self.label_model_log_loss, 4)}
            out["label_model_rows"] = self.label_model_rows
        return out


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-6, 1.0)).sum())


def check_teaching(x: np.ndarray, seed_rows: np.ndarray, seed_y: np.ndarray, extra_rows: np.ndarray,
                   labels_for: Callable[[np.ndarray | None], np.ndarray], k: int, text_annotator: bool,
                   seed: int = 0, folds: int = 5) -> TeachingCheck:
    """Cross-validated log-loss on the seed rows of both teachers (see the module's docstring).

    ``text_annotator``: whether the label model has the text's own annotator among its inputs
    (it is refitted per fold with the seed arm's regularisation).
    """
    x = np.asarray(x, np.float64)
    seed_y = np.asarray(seed_y, np.int64)
    if len(np.unique(seed_y)) < 2 or not len(extra_rows):
        return TeachingCheck(True, reason="nothing to cross-validate on")
    own_strength = choose_strength(x[seed_rows], seed_y, k, folds, seed)

    def labels_without(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        return labels_for(_proba(_fit(x[rows], y, own_strength), x[extra_rows], k) if text_annotator else None)

    extra_all = labels_without(seed_rows, seed_y)
    sure = extra_all >= 0
    both = np.concatenate([seed_rows, extra_rows[sure]])
    strengths = (own_strength, choose_strength(x[both], np.concatenate([seed_y, extra_all[sure]]), k, folds, seed))
    losses = [0.0, 0.0]
    for train, test in _folds(seed_y, min(folds, len(seed_y)), seed + 2):
        if len(np.unique(seed_y[train])) < 2:
            continue
        rows, y = seed_rows[train], seed_y[train]
        extra = labels_without(rows, y)
        keep = extra >= 0
        arms = ((x[rows], y), (np.concatenate([x[rows], x[extra_rows[keep]]]), np.concatenate([y, extra[keep]])))
        for arm, (features, labels) in enumerate(arms):
            p = _proba(_fit(features, labels, strengths[arm]), x[seed_rows[test]], k)
            losses[arm] += _log_loss(p, seed_y[test])
    m = len(seed_y)
    seeds_loss, label_model_loss = losses[0] / m, losses[1] / m
    return TeachingCheck(label_model_loss < seeds_loss, seeds_loss, label_model_loss, int(sure.sum()))
