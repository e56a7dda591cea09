"""Label sets: read from seed cells, written to output cells, scored against gold.

A seed cell holds several labels as ``a|b`` (CSV, TSV, any text cell), as a JSON list
(``["a", "b"]``: a JSONL or Parquet list, or that text in a cell), or is empty (no seed).
``none`` as the whole cell (any case) is a seed row whose text carries no label. The label set
is the labels given with ``--labels``, or every label some seed cell names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import normalise_label
from ..errors import DataError, quoted, quoted_list

SEPARATOR = "|"
NO_LABEL = "none"
"""A seed cell that says the text carries none of the labels."""


def cell_labels(value: Any, where: str) -> tuple[str, ...] | None:
    """The labels of one seed cell (None: no seed; ``()``: a seed row with no label)."""
    if value is None:
        return None
    if isinstance(value, dict):
        raise DataError(f"{where}: the cell holds a JSON object; write the labels as a|b or as a JSON list")
    if isinstance(value, (list, tuple)):
        names = value
    else:
        text = str(value).strip()
        if not text:
            return None
        if text.lower() == NO_LABEL:
            return ()
        if text.startswith("["):
            try:
                names = json.loads(text)
            except json.JSONDecodeError:
                raise DataError(f"{where}: {quoted(text[:60])} starts like a JSON list but is not one; "
                                f"write the labels as a|b or as a JSON list") from None
            if not isinstance(names, list):
                raise DataError(f"{where}: the cell is not a list of labels")
        else:
            names = text.split(SEPARATOR)
    out = []
    for name in names:
        if not isinstance(name, str):
            raise DataError(f"{where}: a label in the list is {type(name).__name__}, not text; write label names")
        label = normalise_label(name)
        if label and label not in out:
            out.append(label)
    return tuple(out)


def seed_sets(cells: Sequence[Any], where: str) -> list[tuple[str, ...] | None]:
    """Per row its seed labels (:func:`cell_labels`); ``where`` names the file and column."""
    return [cell_labels(cell, f"{where}, row {i}") for i, cell in enumerate(cells, start=1)]


def label_set_of(sets: Sequence[tuple[str, ...] | None], given: Sequence[str] | None) -> tuple[str, ...]:
    """The job's labels: ``given`` (each seed label must be one of them), else those the seeds name."""
    named = sorted({label for labels in sets if labels for label in labels})
    if given is None:
        if len(named) < 2:
            raise DataError(f"the seed rows name {len(named)} label(s); a multi-label task needs at least 2: "
                            "give --labels or label more rows")
        return tuple(named)
    unknown = sorted(set(named) - set(given))
    if unknown:
        raise DataError(f"seed label(s) {quoted_list(unknown)} are not in --labels {quoted_list(given)}; "
                        "add them to --labels or correct the cells")
    if SEPARATOR in "".join(given) or any(label.lower() == NO_LABEL for label in given):
        raise DataError(f"a label may not contain {quoted(SEPARATOR)} nor be {quoted(NO_LABEL)} in a multi-label task")
    return tuple(given)


def indicator(sets: Sequence[tuple[str, ...] | None], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(Y (n, K) bool: each row's labels; seeded (n,) bool: the rows whose cell was not empty)."""
    index = {label: k for k, label in enumerate(labels)}
    y = np.zeros((len(sets), len(labels)), bool)
    for i, names in enumerate(sets):
        for name in names or ():
            y[i, index[name]] = True
    return y, np.array([names is not None for names in sets], bool)


def format_set(row: np.ndarray, labels: Sequence[str]) -> str:
    """The output ``label`` cell of one row (K,) bool: ``a|b``, or ``none``."""
    return SEPARATOR.join(label for label, on in zip(labels, row) if on) or NO_LABEL


def format_confidences(p: np.ndarray, labels: Sequence[str]) -> str:
    """The ``confidence`` cell of one row (K,): ``a:0.93|b:0.71|c:0.02``, every label's probability."""
    return SEPARATOR.join(f"{label}:{float(q):.3f}" for label, q in zip(labels, p))


def multilabel_quality(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Micro-/macro-F1, subset accuracy and Hamming loss of ``predicted`` against ``gold``,
    both (n, K) bool (scikit-learn's definitions; a label with no positives in either scores 0)."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    return {"rows": int(len(gold)),
            "micro_f1": round(float(f1_score(gold, predicted, average="micro", zero_division=0)), 4),
            "macro_f1": round(float(f1_score(gold, predicted, average="macro", zero_division=0)), 4),
            "subset_accuracy": round(float(accuracy_score(gold, predicted)), 4),
            "hamming_loss": round(float(hamming_loss(gold, predicted)), 4)}
