"""Value before spend for multi-label tasks: what each LLM adds to the text annotator, per label,
from the seed rows alone.

The single-label check (:mod:`mollia_edge.llm_value`) per label as a binary problem: for each
label, the stacked regression on the text annotator's out-of-fold probability that the label
applies is cross-fitted on the seed rows with and without the model's probability (each model
against the text annotator alone, whatever the order of the models); a seed row's gain is its drop in held-out log-loss summed over the labels.
A model is kept when its mean gain is above :data:`~mollia_edge.llm_value.KEEP_ABOVE` standard
errors (and :data:`~mollia_edge.llm_value.MIN_GAIN`), as in a single-label job. Labels that all
or none of the seed rows carry add nothing either way and are left out.

Shapes: s seed rows, K labels, N LLMs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..llm_value import KEEP_ABOVE, MIN_GAIN, ModelValue, stacked_losses
from .model import binary_proba


def _losses(parts: Sequence[np.ndarray], y: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """(s,) each seed row's held-out log-loss summed over ``labels`` (the stack on ``parts``, each (s, K))."""
    total = np.zeros(len(y))
    for k in labels:
        total += stacked_losses([binary_proba(part[:, k]) for part in parts], y[:, k].astype(np.int64), 2, seed)
    return total


def label_set_values(names: Sequence[str], p_yes: np.ndarray, text_p: np.ndarray | None, y: np.ndarray,
                     seed: int = 0) -> list[ModelValue]:
    """Each LLM's value against the text annotator alone: p_yes (N, s, K) each model's
    probability that each label applies, text_p (s, K) the text annotator's (out of fold; None:
    the label shares), y (s, K) bool the seed sets."""
    labels = np.flatnonzero((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y)))
    base: list[np.ndarray] = [] if text_p is None else [text_p]
    without = _losses(base, y, labels, seed)
    values = []
    for name, p in zip(names, p_yes):
        with_it = _losses([*base, p], y, labels, seed)
        gain = without - with_it
        mean = float(gain.mean())
        se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else 0.0
        keep = mean > max(KEEP_ABOVE * se, MIN_GAIN)
        accuracy = float(np.mean((p >= 0.5) == y))  # of every (row, label) decision
        if keep:
            why = f"its probabilities lower the held-out log-loss of the seed rows by {mean:.3f} (± {se:.3f})"
        else:
            why = (f"its probabilities change the held-out log-loss of the seed rows by {-mean:+.3f} (± {se:.3f}): "
                   "they add nothing to the text annotator a standard error would show")
        values.append(ModelValue(name, accuracy, mean, se, keep, why))
    return values
