"""The multi-label active-learning loop's query strategies: which rows the LLMs read next.

After the random sample, each round fits the label model and the classifier on what the LLMs
have read so far and queries ``batch`` more rows by one of:

* ``entropy``: the mean binary entropy of the classifier's K probabilities (the rows whose
  labels it is least sure of, on average over the labels; the default);
* ``coreset``: greedy k-center on the sentence embeddings from the rows already read;
* ``random``.

The single-label strategies that rank one distribution over K classes (BEMPS, breaking ties,
noise stability) have no multi-label form here: asked for, they are refused in one line, except
``bemps``, the single-label default, which a multi-label job reads as ``entropy``.
"""

from __future__ import annotations

import numpy as np

from ..al.strategies import greedy_k_center
from ..errors import ConfigError, quoted

STRATEGIES = ("entropy", "coreset", "random")
SINGLE_LABEL_DEFAULT = "bemps"


def strategy_of(name: str) -> str:
    """The multi-label strategy ``--strategy name`` means (see the module docstring)."""
    if name == SINGLE_LABEL_DEFAULT:
        return "entropy"
    if name not in STRATEGIES:
        raise ConfigError(f"--strategy {quoted(name)} has no multi-label form; use {', '.join(STRATEGIES)} "
                          "(entropy: the mean binary entropy of the labels, the default)")
    return name


def mean_binary_entropy(proba: np.ndarray) -> np.ndarray:
    """(n,) the mean over the K labels of each row's binary entropy (nats); proba (n, K)."""
    p = np.clip(proba, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean(axis=1)


def query(strategy: str, proba: np.ndarray, x: np.ndarray, read: np.ndarray, candidates: np.ndarray, size: int,
          rng: np.random.Generator) -> np.ndarray:
    """``size`` rows of ``candidates`` (m,) to read next, sorted. proba (n, K) the classifier's,
    x (n, D) the embeddings, read (r,) the rows the LLMs have read."""
    size = min(size, len(candidates))
    if size <= 0:
        return np.empty(0, np.int64)
    if strategy == "random":
        picked = rng.choice(candidates, size=size, replace=False)
    elif strategy == "entropy":
        scores = mean_binary_entropy(proba[candidates])
        picked = candidates[np.argsort(-scores, kind="stable")[:size]]
    else:
        first = int(rng.integers(len(candidates)))
        picked = candidates[greedy_k_center(x[candidates], size, x[read], first)]
    return np.sort(np.asarray(picked, np.int64))
