"""The models of a multi-label job, each per label as K binary problems.

* :func:`text_annotator`: per label the single-label job's text annotator (a logistic regression
  on the sentence embeddings, C by CV on the seeds, self-trained; out of fold on the seed rows);
* :func:`label_model`: per label the single-label job's label model (MoLAM over every LLM's
  probability that the label applies and its consistency, the text annotator a member; Dawid-
  Skene below MoLAM's seed minimum), fitted on the seed rows among the LLM-annotated rows;
* :func:`negative_labels`: the labels every LLM rules out (paper Eq. 5 per label: each LLM's
  probability that the label applies at most ``molam.delta``);
* :func:`train_classifier`: the ONNX head with K sigmoid outputs and the binary cross-entropy.

Shapes: n rows, K labels, N LLMs, m LLM-annotated rows.
"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..label_model import fit_label_model
from ..randomness import derived_seed
from ..text_annotator import text_annotator_fit


def text_annotator(x: np.ndarray, rows: np.ndarray, y: np.ndarray, seed: int,
                   self_training: tuple[int, int]) -> np.ndarray:
    """P(label applies) (n, K) of every row; out of fold on the seed ``rows`` (y (s, K) bool).
    A label that every seed row carries (or none does) gets that share on every row."""
    out = np.empty((len(x), y.shape[1]))
    for k in range(y.shape[1]):
        column = y[:, k].astype(np.int64)
        if column.min() == column.max():
            out[:, k] = float(column[0])
            continue
        proba, _ = text_annotator_fit(x, rows, column, 2, derived_seed(seed, 31, k), self_training=self_training)
        out[:, k] = proba[:, 1]
    return out


def binary_proba(p: np.ndarray) -> np.ndarray:
    """(..., K) probabilities that labels apply -> (..., K, 2) [does not, does]."""
    return np.stack([1.0 - p, p], axis=-1)


def label_model(p_llm: np.ndarray, c_llm: np.ndarray, text_p: np.ndarray, seed_positions: np.ndarray,
                y_seed: np.ndarray, config: Config, seed: int) -> np.ndarray:
    """P(label applies) (m, K) of the m LLM-annotated rows, per label a label model fitted on
    ``seed_positions`` (s,) among them with labels y_seed (s, K) bool.

    p_llm, c_llm: (N, m, K) each LLM's probability that the label applies and its consistency;
    text_p: (m, K) the text annotator's (out of fold on the seed rows), or None.
    """
    members = [p_llm[i] for i in range(len(p_llm))]
    consistency = [c_llm[i] for i in range(len(c_llm))]
    text_position = None
    if text_p is not None:
        text_position = len(members)
        members.append(text_p)
        consistency.append(text_p)
    scores = np.stack([binary_proba(p) for p in members], axis=1)  # (m, N(+1), K, 2)
    cons = np.stack([binary_proba(c) for c in consistency], axis=1)
    out = np.empty(p_llm.shape[1:] if len(p_llm) else text_p.shape)
    for k in range(y_seed.shape[1]):
        column = y_seed[:, k].astype(np.int64)
        if column.min() == column.max():
            out[:, k] = float(column[0])
            continue
        model = fit_label_model(scores[:, :, k], cons[:, :, k], seed_positions, column, 2, config,
                                derived_seed(seed, 37, k), text_position)
        out[:, k] = model.predict_proba(scores[:, :, k], cons[:, :, k])[:, 1]
    return out


def negative_labels(p_llm: np.ndarray, delta: float) -> np.ndarray:
    """(m, K) bool: labels every LLM gives at most ``delta`` (none without LLMs)."""
    if not len(p_llm):
        return np.zeros(p_llm.shape[1:], bool)
    return (p_llm <= delta).all(axis=0)


def train_classifier(x: np.ndarray, rows: np.ndarray, targets: np.ndarray, weights: np.ndarray, config: Config,
                     seed: int, threads: int):
    """The multi-label head (:class:`~mollia_edge.al.classifier.OnnxClassifier`) fitted on
    ``x[rows]`` with targets (r, K) in [0, 1] and row weights (r,)."""
    from ..al.classifier import OnnxClassifier

    al = config.al
    clf = OnnxClassifier("head", n_classes=targets.shape[1], hidden=al.hidden, epochs=al.epochs,
                         learning_rate=al.head_learning_rate, seed=derived_seed(seed, 41), threads=threads,
                         multi_label=True)
    return clf.fit(np.asarray(x[rows], np.float32), targets.astype(np.float32), weights.astype(np.float32))
