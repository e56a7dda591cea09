"""How much the LLMs read in a label job: a budget in words, planned stage by stage.

A text costs its words plus :data:`PROMPT_WORDS` (the prompt around it) plus
:data:`LABEL_WORDS` per label (each label's answer is scored after the text, and a long label
set means long demonstrations in the prefix every token attends to: on 2 cores the starter
models took 1.7-2x as long per word on a 10-label task as on a 2-label one); every model of the
panel reads every row the job sends to the LLMs, so the budget is per model. The plan is a
function of the texts and the settings only (never of timing), so a job's labels do not
depend on the machine's speed:

* seed rows: every seed row is scored once; choosing the number of demonstrations scores some
  of them again per candidate, as many as keep the seed stage within half the budget;
* the sample the label model is fitted on: at most half of what is left;
* the loop's queries: the rest, spread over the rounds (fewer rows per round, or fewer rounds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PROMPT_WORDS = 10
"""Words a text's prompt adds around it (the shared prefix is evaluated once per prompt)."""
LABEL_WORDS = 4
"""Words each label adds to a text's cost."""
MIN_CHOICE_ROWS = 10
"""Fewer seed rows than this cannot choose the number of shots."""


def text_costs(texts: Sequence[str], n_labels: int) -> np.ndarray:
    """Cost (n,) of each text in words, in a task of ``n_labels`` labels."""
    extra = PROMPT_WORDS + LABEL_WORDS * n_labels
    return np.fromiter((len(t.split()) + extra for t in texts), np.int64, len(texts))


@dataclass
class WordBudget:
    """``total`` words (0: no limit) and what the job's stages planned to spend of it."""

    total: int
    costs: np.ndarray
    """(n,) each row's cost in words."""
    spent: dict[str, int] = field(default_factory=dict)

    @property
    def left(self) -> float:
        return float("inf") if not self.total else self.total - sum(self.spent.values())

    def shot_choice(self, candidates: Sequence[int], seed_rows: np.ndarray,
                    retrieved_words: int = 0) -> tuple[list[int], np.ndarray]:
        """(candidates, the seed rows the choice is made on): every seed row is scored once; the
        choice among the numbers of shots scores ``m`` of them again under each other candidate
        (and once more with ``retrieved_words`` more words each, for retrieved demonstrations,
        where that is > 0), with ``m`` as large as half the budget allows (all of them where it
        does). Fewer than :data:`MIN_CHOICE_ROWS`: no choice (``[]``), each model takes its default."""
        options = sorted(set(candidates))
        seed_cost = int(self.costs[seed_rows].sum())
        if len(options) < 2:
            self.spent["seed rows"] = seed_cost
            return options, seed_rows
        if len(seed_rows) < MIN_CHOICE_ROWS:
            self.spent["seed rows"] = seed_cost
            return [], np.empty(0, np.int64)
        mean = seed_cost / max(1, len(seed_rows))
        per_row = mean * (len(options) - 1) + (mean + retrieved_words if retrieved_words else 0)
        affordable = len(seed_rows) if not self.total else int((self.total / 2 - seed_cost) // per_row)
        chosen = seed_rows[: max(0, min(len(seed_rows), affordable))]
        if len(chosen) < MIN_CHOICE_ROWS:
            self.spent["seed rows"] = seed_cost
            return [], np.empty(0, np.int64)
        again = int(self.costs[chosen].sum())
        self.spent["seed rows"] = (seed_cost + again * (len(options) - 1)
                                   + (again + retrieved_words * len(chosen) if retrieved_words else 0))
        return options, chosen

    def retrieval_fits(self, extra_words: int, rows: np.ndarray) -> bool:
        """Whether retrieved demonstrations (``extra_words`` more per row) can be paid for on the
        sample: it takes half of what the seed stage leaves, and the other half must pay its extra
        words, so a row's mean cost (over ``rows``, the unlabelled ones) must be at least
        ``extra_words``. Decided before the seed stage reserves anything for them."""
        return not self.total or (len(rows) > 0 and float(self.costs[rows].mean()) >= extra_words)

    def affords(self, rows: int, extra_words: int) -> bool:
        """Whether what is left pays for ``extra_words`` more on each of ``rows`` rows."""
        return not self.total or self.left >= rows * extra_words

    def charge_retrieved(self, rows: int, extra_words: int) -> None:
        """A model reads with retrieved demonstrations: ``extra_words`` more on each of the
        ``rows`` rows already planned and on every row planned from now on (the loop)."""
        self.spent["retrieved demonstrations"] = rows * extra_words
        self.costs = self.costs + extra_words

    def sample(self, ordered: np.ndarray, most: int) -> np.ndarray:
        """The first rows of ``ordered`` (at most ``most``) that cost at most half of what is left."""
        allowed = self.left / 2
        cumulative = np.cumsum(self.costs[ordered[:most]])
        chosen = ordered[: int(np.searchsorted(cumulative, allowed, side="right"))]
        self.spent["sample"] = int(self.costs[chosen].sum())
        return chosen

    def rounds(self, rounds: int, batch: int, candidates: np.ndarray, keep_batch: bool = False) -> tuple[int, int]:
        """(rounds, batch) of the loop that the rest pays for, at the candidates' mean cost: fewer
        rows a round (``keep_batch``: fewer rounds of ``batch``, as when the loop runs until a
        stopping rule says so)."""
        if not rounds or not len(candidates):
            return rounds, batch
        mean = float(self.costs[candidates].mean())
        affordable = max(0, int(self.left // mean)) if np.isfinite(self.left) else rounds * batch  # seed rows past the budget: none
        if affordable >= rounds * batch:
            planned = (rounds, batch)
        elif keep_batch and affordable >= batch:
            planned = (affordable // batch, batch)
        elif affordable >= rounds:
            planned = (rounds, affordable // rounds)
        else:
            planned = (affordable, 1) if affordable else (0, batch)
        self.spent["loop"] = int(planned[0] * planned[1] * mean)
        return planned

    def report(self) -> dict[str, object]:
        return {"words_per_model": self.total or None, "planned": dict(self.spent)}
