"""What one LLM annotator says about one text: the signals MoLAM is built from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextSignals:
    """One model's signals for one text over K labels.

    label_logprob: shape (K,), log P(label tokens | prompt) from full-vocabulary log-softmax.
    consistency: shape (K,), expected (exact) or observed (sampled) share of answers equal to
        each label; ``consistency.sum() + invalid == 1`` up to rounding.
    invalid: share of answers (or probability mass) that is no label.
    answers: the sampled answers, normalised, in sample order (empty in exact mode).
    truncated: the text was cut to ``max_text_tokens``.
    """

    label_logprob: np.ndarray
    consistency: np.ndarray
    invalid: float
    answers: tuple[str, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class AnnotationSignals:
    """One model's signals for n texts over K labels (a stack of :class:`TextSignals`).

    label_logprob, consistency: shape (n, K); invalid: shape (n,).
    """

    labels: tuple[str, ...]
    label_logprob: np.ndarray
    consistency: np.ndarray
    invalid: np.ndarray
    answers: tuple[tuple[str, ...], ...]
    truncated: np.ndarray

    @property
    def label_prob(self) -> np.ndarray:
        """Distribution over the K labels, shape (n, K): the label probabilities renormalised."""
        shifted = self.label_logprob - self.label_logprob.max(axis=1, keepdims=True)
        weights = np.exp(shifted)
        return weights / weights.sum(axis=1, keepdims=True)

    @classmethod
    def stack(cls, labels: tuple[str, ...], rows: list[TextSignals]) -> AnnotationSignals:
        k = len(labels)
        return cls(
            labels=labels,
            label_logprob=np.array([r.label_logprob for r in rows], dtype=np.float64).reshape(-1, k),
            consistency=np.array([r.consistency for r in rows], dtype=np.float64).reshape(-1, k),
            invalid=np.array([r.invalid for r in rows], dtype=np.float64),
            answers=tuple(r.answers for r in rows),
            truncated=np.array([r.truncated for r in rows], dtype=bool),
        )
