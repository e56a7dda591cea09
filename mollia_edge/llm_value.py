"""What each LLM adds beyond the text's own annotator, from the seed rows alone (value before spend).

Shapes: ``m`` seed rows, ``K`` classes; probabilities (m, K).

An LLM is worth its time when its label scores tell the seed labels apart better than the text
annotator (out-of-fold on the seed rows) alone: a small stacked regression (scikit-learn's
multinomial LogisticRegression on the log-probabilities of its inputs) is cross-fitted on the
seed rows with and without the model's scores, repeated over several fold draws, and the model's
**gain** is the mean per-row drop in held-out log-loss it brings, with its standard error over
the rows.

A model is kept when its mean gain is above :data:`KEEP_ABOVE` standard errors (and
:data:`MIN_GAIN`), and released when its scores leave the held-out seed rows no better predicted
than a standard error would show. A useless model's expected gain is negative (its scores only
add noise for the stack to fit); the models that helped on the dev sets gained 2-5 standard
errors (Stack Overflow) and Gemma-3 on rotten-tomatoes 4.8, while a model kept on a gain within
one standard error costs its whole budget for what 50 rows cannot show.

Each model is judged against the text annotator alone, not against the LLMs kept before it:
two good models that agree add little to each other on 50 seed rows (Gemma-3 and
Qwen2.5-Coder-1.5B on rotten-tomatoes: +.297 ± .058 and +.299 ± .101 alone, +.009 and +.011 each
after the other), so a check beyond the other LLMs released whichever came second in the user's
list - Qwen2.5-Coder-1.5B, right on .899 of its sample, and the job ended at .814 instead of .861
with it kept. The seed rows cannot tell which of two such models is better; a check that does not
depend on the order of ``--models`` keeps both.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from .calibration import row_log_losses
from .folds import stratified_splits

KEEP_ABOVE = 1.0
"""A model is kept when its mean gain exceeds this many standard errors (see the module
docstring; compared on the dev sets by ``scripts/dev_llm_value.py``: 1 keeps both models of
Stack Overflow in 20/20 draws, as 0 did, and releases more of the 20 Newsgroups models, which do
not help the held-out rows; 0 kept SmolLM2 there in 10/10 draws, its held-out log-loss +.200)."""
MIN_GAIN = 0.005
"""Nats per seed row: a smaller gain buys nothing a label would show (a model whose scores barely
vary from text to text, as a random-weight one's, gains about 1e-5); the useful models of the
dev sets gain 0.1-0.5."""
STACK_C = 1.0
"""Inverse regularisation strength of the stacked regression (scikit-learn's C)."""
FOLDS, REPEATS = 5, 4
FLOOR = 1e-4
"""Probabilities are floored here before their log is taken (a score of 0 is not infinite evidence)."""


@dataclass(frozen=True)
class ModelValue:
    """One LLM's value on the seed rows and the decision taken on it."""

    name: str
    seed_accuracy: float
    """The share of seed rows whose label is the model's top score."""
    gain: float
    """Mean drop in held-out log-loss per seed row when its scores join the stack (> 0: it helps)."""
    standard_error: float
    kept: bool
    why: str

    def as_dict(self) -> dict[str, object]:
        return {"seed_accuracy": round(self.seed_accuracy, 4), "gain": round(self.gain, 4),
                "standard_error": round(self.standard_error, 4), "decision": "kept" if self.kept else "released",
                "why": self.why}


def stack_features(parts: Sequence[np.ndarray]) -> np.ndarray:
    """(m, F) log-probabilities of the stack's inputs (each (m, K)), side by side."""
    return np.concatenate([np.log(np.clip(p, FLOOR, 1.0)) for p in parts], axis=1)


def stacked_losses(parts: Sequence[np.ndarray], y: np.ndarray, k: int, seed: int,
                   folds: int = FOLDS, repeats: int = REPEATS) -> np.ndarray:
    """Each seed row's held-out log-loss (m,) under the stacked regression on ``parts`` (each
    (m, K)), averaged over ``repeats`` draws of ``folds`` stratified folds; no parts: the
    training folds' label shares (the prior)."""
    y = np.asarray(y, np.int64)
    x = stack_features(parts) if parts else np.zeros((len(y), 1))
    losses = np.zeros(len(y))
    for repeat in range(repeats):
        for train, test in stratified_splits(y, min(folds, len(y)), seed + repeat):
            p = np.full((len(test), k), 1e-3)
            classes = np.unique(y[train])
            if len(classes) < 2 or not parts:
                p[:, classes] += np.bincount(y[train], minlength=k)[classes] / len(train)
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=UserWarning)
                    model = LogisticRegression(C=STACK_C, max_iter=2000).fit(x[train], y[train])
                p[:, model.classes_] += model.predict_proba(x[test])
            p /= p.sum(axis=1, keepdims=True)
            losses[test] += row_log_losses(p, y[test])
    return losses / repeats


class ValueCheck:
    """The value check as the panel calls it, one model at a time: ``check(name, scores)`` is True
    when the model is kept; ``values_`` holds each decision. Each model is judged against
    ``base`` alone (see the module docstring), so the decisions do not depend on the order.

    ``base`` (m, K): the text annotator's out-of-fold probabilities of the seed rows (None: the
    stack starts from the label shares); ``y`` (m,): the seed labels.
    """

    def __init__(self, base: np.ndarray | None, y: np.ndarray, k: int, seed: int = 0) -> None:
        self.y, self.k, self.seed, self.has_base = np.asarray(y, np.int64), k, seed, base is not None
        self.base_: list[np.ndarray] = [] if base is None else [np.asarray(base, np.float64)]
        self.without_ = stacked_losses(self.base_, self.y, k, seed)
        self.values_: list[ModelValue] = []

    def __call__(self, name: str, scores: np.ndarray, first_look: bool = False) -> bool:
        """Whether the model with these scores (m, K) of the seed rows is kept. ``first_look``: its
        scores under its cheapest prompt, before the choice of demonstrations: only a model whose
        scores do not lower the held-out log-loss at all is released there (final); any gain is
        looked at again on the chosen prompt (Gemma-3 zero-shot on `make demo`'s 50 seed rows
        gained .005 ± .016 and was released at one standard error: .604 instead of .820)."""
        scores = np.asarray(scores, np.float64)
        accuracy = float(np.mean(scores.argmax(axis=1) == self.y))
        with_it = stacked_losses([*self.base_, scores], self.y, self.k, self.seed)
        gain = self.without_ - with_it
        mean = float(gain.mean())
        se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else 0.0
        keep = mean > max(KEEP_ABOVE * se, MIN_GAIN)
        if first_look and mean > 0:  # zero-shot cannot show what demonstrations bring: look again with them
            return True
        if keep:
            why = f"its scores lower the held-out log-loss of the seed rows by {mean:.3f} (± {se:.3f})"
        else:
            what = "the text annotator" if self.has_base else "the label shares"
            change = f"raise the held-out log-loss of the seed rows by {-mean:.3f}" if mean <= 0 else \
                f"lower the held-out log-loss of the seed rows by only {mean:.3f}"
            why = (f"{'zero-shot, ' if first_look else ''}its scores {change} (± {se:.3f}): "
                   f"they add nothing to {what} a standard error would show")
        self.values_.append(ModelValue(name, accuracy, mean, se, keep, why))
        return keep


def model_values(names: Sequence[str], llm_scores: Sequence[np.ndarray], base: np.ndarray | None,
                 y: np.ndarray, k: int, seed: int = 0) -> list[ModelValue]:
    """Each LLM's value (:class:`ValueCheck`): ``llm_scores`` (each (m, K)) on the seed rows with
    labels ``y`` (m,)."""
    check = ValueCheck(base, y, k, seed)
    for name, scores in zip(names, llm_scores):
        check(name, scores)
    return check.values_
