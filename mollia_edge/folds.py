"""The one fold maker: stratified k-fold splits of labelled rows (scikit-learn's StratifiedKFold).

Shapes: ``n`` labelled rows; labels (n,) of integers or strings.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


def stratified_splits(y: Any, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train rows, test rows) pairs for labels ``y`` (n,): each class's rows shuffled
    with ``seed`` and spread over the folds. A class with fewer rows than ``folds`` (many labels,
    few seeds) leaves some folds without it: scikit-learn's warning about it is expected here.
    When no class has ``folds`` rows, stratifying is impossible and the rows are shuffled into
    plain folds (scikit-learn's KFold)."""
    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    random_state = seed % 2**32
    if counts.max() < folds:
        splitter = KFold(folds, shuffle=True, random_state=random_state)
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y)]


def fold_ids(y: Any, folds: int, seed: int) -> np.ndarray:
    """The fold (n,) each row is tested in under :func:`stratified_splits`."""
    out = np.empty(len(np.asarray(y)), dtype=np.int64)
    for f, (_, test) in enumerate(stratified_splits(y, folds, seed)):
        out[test] = f
    return out
