"""The small active-learning problem the loop's tests share (``test_al_loop``, ``test_stopping``):
blobs with fake LLM signals, a small loop configuration and a recording annotator."""

import numpy as np

from mollia_edge.al.annotators import OracleAnnotator, PrecomputedAnnotator
from mollia_edge.al.loop import ActiveLearningTask, run_active_learning
from mollia_edge.config import ActiveLearningConfig

K = 3
N_ROWS = 420
SMALL = ActiveLearningConfig(seed_size=20, query_size=15, rounds=3, epochs=12, head_patience=4, batch_size=20,
                             hidden=16, head_learning_rate=1e-2, negative_learning=True, discrepancy_weighting=True)


def make_problem():
    """Blobs in 8 dimensions with 3 classes; 60 test rows outside the pool; fake LLM signals
    (3 LLMs, each right ~70% of the time, with near-zero scores on one wrong class)."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, K, N_ROWS)
    x = (np.eye(K, 8)[gold] * 2.0 + rng.normal(size=(N_ROWS, 8))).astype(np.float32)
    said = np.where(rng.random((N_ROWS, 3)) < 0.7, gold[:, None], rng.integers(0, K, (N_ROWS, 3)))
    consistency = np.eye(K)[said]
    scores = 0.8 * consistency + 0.2 / K
    scores[np.arange(N_ROWS), :, (gold + 1) % K] = 1e-5  # every LLM rules out one wrong class
    task = ActiveLearningTask(x, np.arange(60, N_ROWS), K, gold, np.arange(60))
    return task, scores, consistency


def _noisy(gold, share, seed=1):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(len(gold)) < share, (gold + rng.integers(1, K, len(gold))) % K, gold)
    return OracleAnnotator(labels, K, name="noisy")


def _run(task, annotator, **kwargs):
    return run_active_learning(task, annotator, "random", config=kwargs.pop("config", SMALL), seed=3, **kwargs)


class RecordingAnnotator(PrecomputedAnnotator):
    """Fixed labels (-1: abstains); remembers every batch it was asked for."""

    def __init__(self, labels, name="recording"):
        super().__init__(name, labels, K)
        self.batches = []

    def _annotate(self, rows):
        self.batches.append(rows.copy())
        return super()._annotate(rows)
