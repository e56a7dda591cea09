"""What one LLM annotator says about one text: the signals MoLAM is built from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


NO_LABEL = ""
"""A sampled answer that matched no label (label names are never empty)."""


@dataclass(frozen=True)
class TextSignals:
    """One model's signals for one text over K labels.

    label_logprob: shape (K,), log P(label tokens | prompt) from full-vocabulary log-softmax.
    consistency: shape (K,), expected (exact) or observed (sampled) share of answers equal to
        each label; ``consistency.sum() + invalid == 1`` up to rounding.
    invalid: share of answers (or probability mass) that is no label.
    answers: the label each sampled answer gave (:data:`NO_LABEL` for an answer that is no
        label), in sample order; empty in exact mode. Never the raw answer: a model may repeat
        the text, and these are stored.
    truncated: the text was cut (to ``max_text_tokens``, or to ``max_chunks`` chunks).
    chunks: the text was read in this many chunks (:mod:`mollia_edge.chunks`), whose signals
        these combine; 1 for a text that fits.
    """

    label_logprob: np.ndarray
    consistency: np.ndarray
    invalid: float
    answers: tuple[str, ...] = ()
    truncated: bool = False
    chunks: int = 1


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
    chunks: np.ndarray
    """shape (n,): chunks each text was read in (1: whole)."""

    @property
    def scores(self) -> np.ndarray:
        """The label scores the label model takes, shape (n, K): the label sequence
        probabilities (the paper's z) renormalised over the K labels."""
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
            chunks=np.array([r.chunks for r in rows], dtype=np.int64),
        )


def combine_chunks(parts: list[TextSignals], how: str) -> TextSignals:
    """One text's signals from its chunks' (in order): label log-probabilities by their
    ``mean`` or ``max`` over the chunks, consistency and invalid share by their mean, the
    sampled answers of every chunk."""
    if len(parts) == 1:
        return parts[0]
    logprob = np.stack([p.label_logprob for p in parts])
    return TextSignals(
        label_logprob=logprob.max(axis=0) if how == "max" else logprob.mean(axis=0),
        consistency=np.mean([p.consistency for p in parts], axis=0),
        invalid=float(np.mean([p.invalid for p in parts])),
        answers=tuple(a for p in parts for a in p.answers),
        truncated=any(p.truncated for p in parts),
        chunks=len(parts),
    )
