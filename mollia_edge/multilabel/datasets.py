"""Multi-label datasets built from the bundled single-label ones: documents with several topics.

No data package ships a multi-label set. :func:`topic_pairs` builds one honestly from a bundled
single-label corpus: a row is the opening of one document (its label), or the openings of two
documents of *different* labels joined as one text (both labels), each document used at most
once. What it models is a document that covers several topics (a news digest, a ticket about
two problems); what it does not: topics that mix within a sentence. The dev and report sets
(docs/multi-label.md) are built this way from yahoo and bbc-news.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datasets import load_dataset
from ..errors import DataError


@dataclass(frozen=True)
class MultiLabelTexts:
    """``texts[i]`` carries the labels ``label_names[k]`` where ``labels[i, k]``; labels (n, K) bool."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str


def _opening(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def topic_pairs(name: str, n: int, seed: int, pair_share: float = 0.5, words: int = 60) -> MultiLabelTexts:
    """``n`` rows from the dataset ``name``: about ``pair_share`` of them two documents of
    different labels (each cut to its first ``words`` words), the others one document."""
    base = load_dataset(name)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(base))
    pairs = int(round(n * pair_share))
    if n + pairs > len(base):
        raise DataError(f"{name} has {len(base)} texts; {n} rows with {pairs} pairs need {n + pairs}")
    k = len(base.label_names)
    texts, y = [], np.zeros((n, k), bool)
    partners = list(order[n:])  # the second documents come from the rows no single row took
    for i in range(n):
        first = order[i]
        y[i, base.labels[first]] = True
        text = _opening(base.texts[first], words)
        if i < pairs:
            j = next(j for j, other in enumerate(partners) if base.labels[other] != base.labels[first])
            second = partners.pop(j)
            y[i, base.labels[second]] = True
            text = f"{text}\n\n{_opening(base.texts[second], words)}"
        texts.append(text)
    shuffle = rng.permutation(n)
    return MultiLabelTexts([texts[i] for i in shuffle], y[shuffle], base.label_names, f"{name}-pairs")
