"""Who labels the rows the active-learning loop queries.

An :class:`Annotator` answers ``annotate(indices)`` with positive labels y+ (n,) int64 (-1
where it abstains) and negative labels y- (n, K) bool (classes ruled out; all False when it
gives none). Indices are row indices of the whole data set the annotator was built on; signal
arrays are (n_rows, N, K) with ``N`` LLMs and ``K`` classes.

* :class:`LabelModelAnnotator` - a label model over signals computed on demand (the label
  job's LLMs): y+ its argmax (or abstain), y- its negative labels.
* :class:`MolamAnnotator` - MoLAM over recorded LLM signals (paper Eq. 6): y+ its argmax, y- its
  negative labels (Eq. 5).
* :class:`VoteAnnotator` - the LLMs' vote ensemble; no negatives.
* :class:`SingleLLMAnnotator` - one LLM alone (the majority of its sampled answers); no negatives.
* :class:`OracleAnnotator` - the gold labels (a human annotator); no negatives.
* :class:`PrecomputedAnnotator` - labels (and negatives) recorded beforehand.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import molam
from ..config import MolamConfig
from ..errors import DataError


def _signals(scores: Any, consistency: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores and consistency as float64 (n, N, K) arrays of the same shape."""
    scores, c = np.asarray(scores, dtype=np.float64), np.asarray(consistency, dtype=np.float64)
    if scores.ndim != 3 or scores.shape != c.shape:
        raise DataError(f"scores and consistency must both be (rows, LLMs, classes), got {scores.shape} and {c.shape}")
    return scores, c


def _row_indices(name: str, value: Any, n_rows: int) -> np.ndarray:
    rows = np.asarray(value)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise DataError(f"{name} must be a 1-D array of integer row indices, got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise DataError(f"{name} must lie in 0..{n_rows - 1}, found {rows.min()}..{rows.max()}")
    return rows.astype(np.int64)


def confidence_floor(probabilities: Any, below: float, max_share: float) -> float:
    """The confidence under which an annotator abstains: ``below``, lowered to the
    ``max_share``-quantile of the confidence (highest class probability) of the rows (n, K)
    when more than that share lies below it."""
    p = np.asarray(probabilities)
    if not len(p):
        return below
    return min(below, float(np.quantile(p.max(axis=1), max_share)))


def abstaining_labels(probabilities: Any, abstain_below: float) -> np.ndarray:
    """y+ (n,) int64 from class probabilities (n, K): the most probable class, or -1 (abstain)
    where its probability is below ``abstain_below``."""
    p = np.asarray(probabilities)
    return np.where(p.max(axis=1) >= abstain_below, p.argmax(axis=1), -1).astype(np.int64)


class Annotator(ABC):
    """Labels rows of a data set of ``n_rows`` rows and ``n_classes`` classes."""

    name: str
    n_rows: int
    n_classes: int

    def annotate(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """(y+ (n,) int64, y- (n, K) bool) for the row ``indices`` (n,)."""
        rows = _row_indices("indices", indices, self.n_rows)
        return self._annotate(rows)

    @abstractmethod
    def _annotate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels of valid row indices (n,)."""


class PrecomputedAnnotator(Annotator):
    """Labels (n_rows,) int64 and negatives (n_rows, K) bool (default: none) known in advance
    for every row, e.g. a recorded annotation."""

    def __init__(self, name: str, labels: Any, n_classes: int, negatives: Any = None) -> None:
        self.name, self.labels, self.n_rows, self.n_classes = name, np.asarray(labels), len(labels), n_classes
        self.negatives = np.zeros((self.n_rows, n_classes), bool) if negatives is None else np.asarray(negatives, bool)
        if self.negatives.shape != (self.n_rows, n_classes):
            raise DataError(f"negatives must have shape ({self.n_rows}, {n_classes}), got {self.negatives.shape}")

    def _annotate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.labels[rows], self.negatives[rows]


class OracleAnnotator(PrecomputedAnnotator):
    """Gold labels (n_rows,) int64; -1 marks rows without one, which it refuses to annotate."""

    def __init__(self, gold: Any, n_classes: int, name: str = "oracle") -> None:
        labels = np.asarray(gold)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or np.any(labels >= n_classes):
            raise DataError(
                f"gold must be integer labels (rows,) below {n_classes} (-1: unknown), got {labels.dtype} {labels.shape}"
            )
        super().__init__(name, labels.astype(np.int64), n_classes)

    def _annotate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unknown = rows[self.labels[rows] < 0]
        if len(unknown):
            raise DataError(f"the oracle has no gold label for rows {unknown[:5].tolist()}")
        return super()._annotate(rows)


class VoteAnnotator(PrecomputedAnnotator):
    """The vote ensemble of all LLMs (:func:`mollia_edge.molam.vote`; ties to the score average)."""

    def __init__(self, scores: Any, consistency: Any, name: str = "vote") -> None:
        scores, c = _signals(scores, consistency)
        super().__init__(name, molam.vote(c, scores).argmax(axis=1), scores.shape[2])


class SingleLLMAnnotator(PrecomputedAnnotator):
    """LLM number ``llm`` alone: the majority of its sampled answers, ties to its own scores
    (how the paper counts a single LLM: Yi .768 on TREC)."""

    def __init__(self, scores: Any, consistency: Any, llm: int, name: str) -> None:
        scores, c = _signals(scores, consistency)
        if not 0 <= llm < scores.shape[1]:
            raise DataError(f"LLM index {llm} out of range: the signals come from {scores.shape[1]} LLMs")
        one = slice(llm, llm + 1)
        super().__init__(name, molam.vote(c[:, one], scores[:, one]).argmax(axis=1), scores.shape[2])


class LabelModelAnnotator(Annotator):
    """A label model over annotator signals that arrive on demand: ``signals(rows)`` gives
    scores and consistency (n, N, K) of the rows (e.g. LLMs run as the loop queries them).
    y+ is the model's argmax, or -1 (abstain) below ``abstain_below``; y- its negative labels.

    ``model`` has ``predict_proba(scores, consistency)`` (n, K) and ``negative_labels(scores)``.
    ``negatives(rows)``, when given, gives y- (n, K) instead (the label job: from the LLMs' raw
    label mass, paper Eq. 5, where the scores are renormalised over the K labels).
    """

    def __init__(self, signals: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], model: Any,
                 abstain_below: float, n_rows: int, n_classes: int, name: str = "mollia",
                 negatives: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.signals, self.model, self.abstain_below_ = signals, model, abstain_below
        self.name, self.n_rows, self.n_classes = name, n_rows, n_classes
        self.negatives = negatives

    def _annotate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, c = self.signals(rows)
        negatives = np.array(self.model.negative_labels(scores) if self.negatives is None else self.negatives(rows), bool)
        labels = abstaining_labels(self.model.predict_proba(scores, c), self.abstain_below_)
        sure = labels >= 0
        negatives[np.flatnonzero(sure), labels[sure]] = False  # the label given is never also ruled out
        return labels, negatives


class MolamAnnotator(LabelModelAnnotator):
    """MoLAM fitted once, at construction, on the seed rows' gold labels and the LLM signals of
    the ``unlabelled_rows`` (pseudo-labelling; default: every row that is not a seed row).
    It abstains (y+ = -1) below the confidence ``abstain_below_``: ``config.abstain_below``, or
    lower where more than ``config.max_abstain_share`` of the unlabelled rows lie below it.

    Keep evaluation rows out of ``unlabelled_rows``. ``fit_seconds_`` is the fitting time.
    ``text_annotator``: the position of the text's own annotator among the annotators.
    """

    def __init__(
        self,
        scores: Any,
        consistency: Any,
        seed_rows: Any,
        seed_labels: Any,
        n_classes: int,
        *,
        unlabelled_rows: Any = None,
        config: MolamConfig | None = None,
        seed: int = 50,
        name: str = "mollia",
        text_annotator: int | None = None,
    ) -> None:
        self.scores, self.consistency = _signals(scores, consistency)
        n_rows = self.scores.shape[0]
        seed_rows = _row_indices("seed_rows", seed_rows, n_rows)
        if unlabelled_rows is None:
            unlabelled = np.setdiff1d(np.arange(n_rows), seed_rows)
        else:
            unlabelled = _row_indices("unlabelled_rows", unlabelled_rows, n_rows)
        started = time.perf_counter()
        model = molam.fit_annotation_model(
            self.scores[seed_rows], self.consistency[seed_rows], seed_labels,
            self.scores[unlabelled], self.consistency[unlabelled], n_classes,
            config=config, seed=seed, text_annotator=text_annotator,
        )
        self.fit_seconds_ = time.perf_counter() - started
        unlabelled_proba = model.predict_proba(self.scores[unlabelled], self.consistency[unlabelled])
        config = config or MolamConfig()
        abstain_below = confidence_floor(unlabelled_proba, config.abstain_below, config.max_abstain_share)
        super().__init__(lambda rows: (self.scores[rows], self.consistency[rows]), model, abstain_below,
                         n_rows, n_classes, name)
