"""The rows the final classifier learns from: the loop's labelled rows, the label model's labels of
the sample (when it teaches) and every other row pseudo-labelled by a regression on the embeddings."""

from __future__ import annotations

import numpy as np

from ..al.annotators import abstaining_labels
from ..al.loop import LabelledSet
from ..randomness import derived_seed
from ..teaching import TeachingCheck
from ..text_annotator import embedding_model_proba
from .context import JobContext
from .llm_stages import Encoded, LabelModelFit, SeedScores


def training_rows(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                  teaching: TeachingCheck | None, labelled: LabelledSet) -> LabelledSet:
    """:func:`labelled_rows`, then every other row pseudo-labelled (:func:`with_pseudo_labels`)."""
    return with_pseudo_labels(context, encoded, labelled_rows(context, seeds, fit, teaching, labelled))


def labelled_rows(context: JobContext, seeds: SeedScores, fit: LabelModelFit, teaching: TeachingCheck | None,
                  labelled: LabelledSet) -> LabelledSet:
    """The loop's labelled rows, then the sample's label-model labels; only the seed rows when the
    label model does not teach."""
    if teaching is not None and not teaching.label_model_teaches:
        is_seed_row = np.isin(labelled.rows, context.seed_rows)
        return LabelledSet(labelled.rows[is_seed_row], labelled.labels[is_seed_row], labelled.weights[is_seed_row],
                           labelled.negatives[is_seed_row])
    sure = abstaining_labels(fit.sample_proba, fit.abstain_below)  # as the loop's annotator: -1 below the floor
    keep = (sure >= 0) & ~np.isin(seeds.sample, labelled.rows)
    sample = seeds.sample[keep]
    return LabelledSet(np.concatenate([labelled.rows, sample]), np.concatenate([labelled.labels, sure[keep]]),
                       np.concatenate([labelled.weights, np.ones(len(sample), np.float32)]),
                       np.concatenate([labelled.negatives, np.zeros((len(sample), context.k), bool)]))


def with_pseudo_labels(context: JobContext, encoded: Encoded, base: LabelledSet) -> LabelledSet:
    """``base`` and, at ``al.pseudo_weight``, every other row with the label of a regression fitted on ``base``."""
    k, weight = context.k, context.config.al.pseudo_weight
    rows, labels, weights = base.rows, base.labels, base.weights
    rest = np.setdiff1d(np.arange(context.n), rows)
    if weight and len(rest) and len(np.unique(labels)) >= 2:
        proba, _ = embedding_model_proba(encoded.x, rows, labels, k, derived_seed(context.prep.seed, 13),
                                         self_training=context.config.al.self_training)
        rows, labels = np.concatenate([rows, rest]), np.concatenate([labels, proba[rest].argmax(axis=1)])
        weights = np.concatenate([weights, np.full(len(rest), weight, np.float32)])
    negatives = np.zeros((len(rows), k), bool)
    negatives[: len(base.rows)] = base.negatives
    return LabelledSet(rows, labels, weights.astype(np.float32), negatives)
