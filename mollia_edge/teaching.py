"""Do the label model's labels teach a classifier on the text more than the seed rows alone?

The final classifier learns from the seed rows and the label model's labels of the rows the
LLMs saw. When the LLMs are no help (10 topics and 135M-parameter models), those labels are
mostly noise, and a classifier trained on them ends below a regression on the seed rows
alone. This check decides, on the seed rows only, which teacher the classifier gets:

* arm ``seeds``: a logistic regression on the embeddings of the other seed folds;
* arm ``label model``: the same, plus the label model's labels of the LLM-annotated rows.

Each arm predicts the held-out seed fold (three times five folds); the arm right more often
wins, log-loss breaks a tie, and a full tie goes to the seeds. Accuracy, not log-loss, decides:
noisy labels make a regression overconfident, so its log-loss can worsen while its answers
improve (Rotten Tomatoes: log-loss chose the seeds, and the classifier rows fell from .706 to
.644). Honesty: the label model's labels of the extra rows use the text's own annotator, which
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

from .calibration import row_log_losses
from .folds import stratified_splits
from .text_annotator import SELF_TRAINING, fit_regression, regression_proba, choose_strength, refitted_proba


@dataclass(frozen=True)
class TeachingCheck:
    """The decision and its evidence: held-out accuracy and log-loss on the seed rows of each arm."""

    label_model_teaches: bool
    seeds_accuracy: float | None = None
    label_model_accuracy: float | None = None
    seeds_log_loss: float | None = None
    label_model_log_loss: float | None = None
    label_model_rows: int = 0
    reason: str = "cross-validated on the seed rows"

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"teacher": "label model" if self.label_model_teaches else "seed rows",
                                  "why": self.reason}
        if self.seeds_accuracy is not None:
            out["seed_accuracy"] = {"seed rows": round(self.seeds_accuracy, 4),
                                    "seed rows + label model": round(self.label_model_accuracy or 0.0, 4)}
            out["seed_log_loss"] = {"seed rows": round(self.seeds_log_loss or 0.0, 4),
                                    "seed rows + label model": round(self.label_model_log_loss or 0.0, 4)}
            out["label_model_rows"] = self.label_model_rows
        return out


def _scores(p: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """(right answers, summed log-loss) of probabilities ``p`` (m, K) on labels ``y`` (m,)."""
    return int(np.sum(p.argmax(axis=1) == y)), float(row_log_losses(p, y).sum())


def check_teaching(x: np.ndarray, seed_rows: np.ndarray, seed_y: np.ndarray, extra_rows: np.ndarray,
                   labels_for: Callable[[np.ndarray | None], np.ndarray], k: int, text_annotator: bool,
                   seed: int = 0, folds: int = 5, repeats: int = 3,
                   self_training: tuple[int, int] = SELF_TRAINING) -> TeachingCheck:
    """Held-out accuracy on the seed rows of both teachers, ``repeats`` times ``folds``-fold
    (see the module's docstring); both arms use the regularisation chosen on the seed rows.
    The label model teaches when its arm is right more often, or as often with a lower log-loss.

    ``text_annotator``: whether the label model has the text's own annotator among its inputs
    (it is refitted per fold, self-trained as the job's: ``self_training``).
    """
    x = np.asarray(x, np.float64)
    seed_y = np.asarray(seed_y, np.int64)
    if len(np.unique(seed_y)) < 2 or not len(extra_rows):
        return TeachingCheck(True, reason="nothing to cross-validate on")
    strength = choose_strength(x[seed_rows], seed_y, k, folds, seed)

    def labels_without(rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        return labels_for(refitted_proba(x, rows, y, k, strength, extra_rows, self_training) if text_annotator else None)

    hits, losses, scored = [0, 0], [0.0, 0.0], 0
    for repeat in range(repeats):
        for train, test in stratified_splits(seed_y, min(folds, len(seed_y)), seed + 2 + repeat):
            if len(np.unique(seed_y[train])) < 2:
                continue
            rows, y = seed_rows[train], seed_y[train]
            extra = labels_without(rows, y)
            keep = extra >= 0
            arms = ((x[rows], y), (np.concatenate([x[rows], x[extra_rows[keep]]]), np.concatenate([y, extra[keep]])))
            for arm, (features, labels) in enumerate(arms):
                right, loss = _scores(regression_proba(fit_regression(features, labels, strength), x[seed_rows[test]], k), seed_y[test])
                hits[arm] += right
                losses[arm] += loss
            scored += len(test)
    if not scored:
        return TeachingCheck(True, reason="nothing to cross-validate on")
    teaches = hits[1] > hits[0] or (hits[1] == hits[0] and losses[1] < losses[0])
    return TeachingCheck(teaches, hits[0] / scored, hits[1] / scored, losses[0] / scored, losses[1] / scored,
                         int((labels_without(seed_rows, seed_y) >= 0).sum()))
