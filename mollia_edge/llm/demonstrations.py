"""Demonstrations from the user's seed rows: chosen to cover each label, never shown to the
rows they would give away.

* :func:`demonstration_sets`: two disjoint sets of seed rows, up to ``shots`` per label each,
  each covering its label's seeds (the row nearest the label's centroid on the embeddings,
  then greedy k-center).
* :class:`PromptPlan`: one model's prompts. Every row is scored with the demonstrations of
  set A, except the rows of set A themselves, which are scored with set B's: a seed row's
  signals never come from a prompt that shows its own answer (cross-fitting), so the label
  model's fit and the per-LLM seed accuracy stay honest.
* :class:`RetrievedPlan`: each row's own demonstrations, the seed rows of each label nearest
  to it on the embeddings (:func:`nearest_rows`), never the row itself (leave-one-out on the
  seed rows): a prompt prefix per text, evaluated for every text (dearer than a shared one).
* :func:`clip_words`: demonstrations are cut to a few dozen words, so a long-text task does not
  pay for a long prefix in every text's attention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..al.strategies import greedy_k_center
from ..config import LLMConfig
from .prompts import PromptSpec


DEMO_TOTAL_WORDS = 1200
"""All demonstrations of a prompt together are cut to about this many words (many labels: each
shorter), so the shared prefix stays within the context (20 newsgroups, 2 shots at 60 words:
5185 tokens, over half of n_ctx 8192)."""


def demo_words(llm: LLMConfig, k: int) -> int:
    """Words per demonstration: ``llm.demo_words``, less where K labels x ``llm.max_shots``
    demonstrations would pass :data:`DEMO_TOTAL_WORDS`."""
    return max(8, min(llm.demo_words, DEMO_TOTAL_WORDS // max(1, k * max(1, llm.max_shots))))


def clip_words(text: str, words: int) -> str:
    """The first ``words`` words of ``text`` (whitespace collapsed), "…" where it was cut."""
    parts = text.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def _cover(x: np.ndarray, rows: np.ndarray, m: int) -> np.ndarray:
    """Up to ``m`` of ``rows`` covering them: nearest the centroid first, then greedy k-center."""
    if m <= 0 or not len(rows):
        return np.empty(0, np.int64)
    points = x[rows].astype(np.float64)
    first = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    picked = greedy_k_center(points, min(m, len(rows)), np.zeros((0, points.shape[1])), first)
    return rows[np.asarray(picked, np.int64)]


def demonstration_sets(x: np.ndarray, rows: np.ndarray, y: np.ndarray, shots: int) -> tuple[np.ndarray, np.ndarray]:
    """Sets A and B (disjoint row indices), ordered round-robin over the labels.

    x (n, D): embeddings of all rows; rows (m,): the seed rows; y (m,): their class indices.
    A takes up to ``shots`` rows per label, B up to ``shots`` of the label's other rows.
    """
    by_label = {int(label): np.sort(rows[y == label]) for label in np.unique(y)}
    first = {label: _cover(x, members, shots) for label, members in by_label.items()}
    second = {label: _cover(x, np.setdiff1d(by_label[label], first[label]), shots) for label in by_label}
    return _round_robin(first), _round_robin(second)


def _round_robin(chosen: dict[int, np.ndarray]) -> np.ndarray:
    """Rows taken one per label in turn (label order), so no label always comes last."""
    longest = max((len(r) for r in chosen.values()), default=0)
    order = [int(chosen[label][i]) for i in range(longest) for label in sorted(chosen) if i < len(chosen[label])]
    return np.asarray(order, np.int64)


@dataclass(frozen=True)
class PromptPlan:
    """One model's prompts: ``main`` for every row but ``held_rows``, which get ``held``."""

    shots: int
    main: PromptSpec
    held: PromptSpec | None = None
    held_rows: frozenset[int] = frozenset()

    @property
    def name(self) -> int | str:
        """What the report calls this plan: its demonstrations per label."""
        return self.shots

    @classmethod
    def zero_shot(cls, base: PromptSpec) -> PromptPlan:
        return cls(0, base)

    @classmethod
    def with_demonstrations(
        cls, base: PromptSpec, shots: int, texts: Sequence[str], x: np.ndarray, rows: np.ndarray, y: np.ndarray,
        words: int,
    ) -> PromptPlan:
        """``shots`` demonstrations per label from the seed ``rows`` (labels ``y``, class indices)."""
        if shots == 0:
            return cls.zero_shot(base)
        a, b = demonstration_sets(x, rows, y, shots)
        label_of = dict(zip(rows.tolist(), y.tolist()))

        def spec(chosen: np.ndarray) -> PromptSpec:
            demos = tuple((clip_words(texts[r], words), base.labels[label_of[int(r)]]) for r in chosen)
            return dataclasses.replace(base, demonstrations=demos)

        return cls(shots, spec(a), spec(b), frozenset(int(r) for r in a))

    @property
    def prompts(self) -> tuple[PromptSpec, ...]:
        return (self.main,) if self.held is None else (self.main, self.held)

    def split(self, rows: np.ndarray) -> list[tuple[PromptSpec, np.ndarray]]:
        """(prompt, the positions in ``rows`` it scores) for each prompt that has rows."""
        held = np.fromiter((int(r) in self.held_rows for r in rows), bool, len(rows))
        parts = [(self.main, np.flatnonzero(~held))]
        if self.held is not None:
            parts.append((self.held, np.flatnonzero(held)))
        return [(prompt, positions) for prompt, positions in parts if len(positions)]


RETRIEVED = "retrieved"
"""The name of :class:`RetrievedPlan` in the report (beside 0, 1, 2 shared shots)."""


def nearest_rows(x: np.ndarray, rows: np.ndarray, y: np.ndarray, row: int, shots: int) -> np.ndarray:
    """Up to ``shots`` of the seed ``rows`` of each label nearest to ``row`` (cosine on the
    embeddings ``x`` (n, D)), never ``row`` itself; ordered by similarity, the nearest last
    (next to the text). y (m,): the seed rows' class indices."""
    keep = rows != row
    rows, y = rows[keep], y[keep]
    points = x[rows].astype(np.float64)
    target = x[row].astype(np.float64)
    similarity = points @ target / np.maximum(np.linalg.norm(points, axis=1) * np.linalg.norm(target), 1e-12)
    chosen = [members[np.argsort(-similarity[members], kind="stable")[:shots]]
              for members in (np.flatnonzero(y == label) for label in np.unique(y))]
    picked = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    return rows[picked[np.lexsort((-rows[picked], similarity[picked]))]]


class RetrievedPlan:
    """One model's prompts with retrieved demonstrations: each row gets the ``shots`` seed rows
    of each label nearest to it (:func:`nearest_rows`). A seed row never sees its own answer,
    so its signals stay cross-fitted as :class:`PromptPlan`'s are."""

    name = RETRIEVED

    def __init__(self, base: PromptSpec, shots: int, texts: Sequence[str], x: np.ndarray, rows: np.ndarray,
                 y: np.ndarray, words: int) -> None:
        self.base, self.shots, self.texts, self.x, self.words = base, shots, texts, x, words
        self.rows, self.y = np.asarray(rows, np.int64), np.asarray(y, np.int64)
        self._label_of = dict(zip(self.rows.tolist(), self.y.tolist()))

    def _spec(self, chosen: np.ndarray) -> PromptSpec:
        demos = tuple((clip_words(self.texts[r], self.words), self.base.labels[self._label_of[int(r)]]) for r in chosen)
        return dataclasses.replace(self.base, demonstrations=demos)

    def prompt_for(self, row: int) -> PromptSpec:
        return self._spec(nearest_rows(self.x, self.rows, self.y, int(row), self.shots))

    @property
    def prompts(self) -> tuple[PromptSpec, ...]:
        """The prompt with the longest demonstrations any row can get (for the context check)."""
        lengths = np.array([len(self.texts[r].split()) for r in self.rows])
        longest = [members[np.argsort(-lengths[members], kind="stable")[: self.shots]]
                   for members in (np.flatnonzero(self.y == label) for label in np.unique(self.y))]
        return (self._spec(self.rows[np.concatenate(longest)]),) if longest else (self.base,)

    def split(self, rows: np.ndarray) -> list[tuple[PromptSpec, np.ndarray]]:
        """(prompt, the positions in ``rows`` it scores): rows with the same demonstrations together."""
        groups: dict[PromptSpec, list[int]] = {}
        for position, row in enumerate(np.asarray(rows, np.int64)):
            groups.setdefault(self.prompt_for(int(row)), []).append(position)
        return [(prompt, np.asarray(positions, np.int64)) for prompt, positions in groups.items()]


def retrieved_words(texts: Sequence[str], rows: np.ndarray, n_labels: int, shots: int, words: int) -> int:
    """Words the retrieved demonstrations add to each text's prompt: ``shots`` per label, each
    a seed text cut to ``words`` (their mean length) and its answer."""
    if not len(rows) or not shots:
        return 0
    mean = float(np.mean([min(len(texts[r].split()), words) for r in rows]))
    return int(round(n_labels * shots * (mean + 2)))
