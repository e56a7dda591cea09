"""The label job's label model over its annotators' signals (n, N, K): MoLAM with enough seed
rows (the LLMs and, as its last annotator, the text's own annotator), the seedless
Dawid-Skene model over the LLMs' consistency otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import Config
from .molam import DawidSkene, fit_annotation_model, negative_labels

MIN_MOLAM_SEEDS = 10
"""Fewer seed rows (or seeds of fewer than two classes): the seedless Dawid-Skene label model."""


class LabelModel:
    """``kind``: ``molam`` or ``dawid_skene``; probabilities and negative labels of rows."""

    def __init__(self, kind: str, model: Any, config: Config) -> None:
        self.kind, self.model, self.config = kind, model, config

    def predict_proba(self, scores: np.ndarray, consistency: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) from the signals (n, N, K)."""
        if self.kind == "molam":
            return self.model.predict_proba(scores, consistency)
        return self.model.predict_proba(consistency)

    def describe(self) -> list[dict[str, Any]]:
        """What the label model mixes: each member's base ensemble, trees and weight."""
        if self.kind != "molam":
            return [{"base": "dawid_skene", "trees": 0, "weight": 1.0}]
        return self.model.selection.describe()

    def negative_labels(self, scores: np.ndarray) -> np.ndarray:
        """y- (n, K) bool: the classes every LLM rules out (paper Eq. 5; the text annotator aside)."""
        if self.kind == "molam":
            return self.model.negative_labels(scores)
        return negative_labels(scores, self.config.molam.delta, self.config.molam.negative_rule)


def can_fit_molam(y_seed: np.ndarray) -> bool:
    return len(y_seed) >= MIN_MOLAM_SEEDS and len(np.unique(y_seed)) >= 2


def fit_label_model(scores: np.ndarray, consistency: np.ndarray, seed_pos: np.ndarray, y_seed: np.ndarray, k: int,
                    config: Config, seed: int, text_annotator: int | None = None) -> LabelModel:
    """Fit on the rows of the signals (n, N, K): ``seed_pos`` are the seed rows (labels
    ``y_seed``), the others unlabelled. ``text_annotator``: its position along N, if any."""
    if can_fit_molam(y_seed):
        rest = np.setdiff1d(np.arange(len(scores)), seed_pos)
        model = fit_annotation_model(scores[seed_pos], consistency[seed_pos], y_seed, scores[rest], consistency[rest],
                                     k, config=config.molam, seed=seed, text_annotator=text_annotator)
        return LabelModel("molam", model, config)
    return LabelModel("dawid_skene", DawidSkene(k, seed=seed).fit(consistency), config)
