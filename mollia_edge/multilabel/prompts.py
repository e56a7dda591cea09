"""The LLMs' signals per label: for each text and label, the probability that the label applies.

One prompt per text lists the categories and asks for one of them followed by ``yes`` or
``no``; its 2K answers ``<label>: yes`` / ``<label>: no`` are scored as the single-label job
scores labels (exact sequence probabilities from full-vocabulary log-probabilities, every
answer a branch sharing the text's KV cells, outputs stored as they are made). The probability
that label k applies is its yes answer's share of its own two answers:

    P(k applies) = P("k: yes") / (P("k: yes") + P("k: no"))

in which what the model thinks of naming k at all cancels out. The consistency is the same
share among the sampled answers that name k (the exact expected share when they are exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..llm.prompts import PromptSpec
from ..llm.signals import AnnotationSignals

YES, NO = "yes", "no"
INSTRUCTION = (
    "Read the given {{item}} and decide whether it belongs to a category. Several categories may apply "
    "to one {{item}}. The categories: {categories}\n\n"
    "Task: name one category and answer yes or no, in the form \"<category>: yes\" or \"<category>: no\", "
    "with no additional text or explanation.\n\n"
)


def answers(labels: Sequence[str]) -> tuple[str, ...]:
    """The 2K answers the model's probabilities are read for: ``a: yes``, ``a: no``, ``b: yes``..."""
    return tuple(f"{label}: {word}" for label in labels for word in (YES, NO))


def yes_no_prompt(labels: Sequence[str], item: str, chat_format: str,
                  demonstrations: Sequence[tuple[str, str]] = (), descriptions: Sequence[str] = ()) -> PromptSpec:
    """The prompt for ``labels``: every text's answers are :func:`answers` of them; the task
    file's ``descriptions`` (one per label, "" for none) follow the category names."""
    described = [f"{label} ({text})" if text else label for label, text in zip(labels, descriptions or [""] * len(labels))]
    listed = "; ".join(described) if any(descriptions) else ", ".join(labels)
    listed = listed.replace("{", "{{").replace("}", "}}")
    return PromptSpec(labels=answers(labels), item=item, instruction=INSTRUCTION.format(categories=listed),
                      chat_format=chat_format, demonstrations=tuple(demonstrations))


def demonstrations_from(texts: Sequence[str], y: np.ndarray, labels: Sequence[str], shots: int,
                        rng: np.random.Generator, words: int = 60) -> tuple[tuple[tuple[str, str], ...], list[int]]:
    """(Demonstrations, the seed rows they use): per label ``shots`` seed rows (texts (s,), y (s, K)
    bool), alternately one the label applies to (``k: yes``) and one it does not (``k: no``), each
    drawn at random among the rows not used yet and cut to ``words`` words; in shuffled order."""
    chosen: list[tuple[int, str]] = []
    used: set[int] = set()
    for k, label in enumerate(labels):
        for shot in range(shots):
            want = shot % 2 == 0
            rows = [i for i in np.flatnonzero(y[:, k] == want) if i not in used]
            if rows:
                row = int(rng.choice(rows))
                used.add(row)
                chosen.append((row, f"{label}: {YES if want else NO}"))
    order = rng.permutation(len(chosen))
    demos = tuple((" ".join(texts[chosen[i][0]].split()[:words]), chosen[i][1]) for i in order)
    return demos, sorted(used)


def shot_candidates(shots: int | str, max_shots: int) -> list[int]:
    """The numbers of demonstrations per label a model is tried with: ``llm.shots``, or 0 and
    ``llm.max_shots`` where it is ``auto``."""
    return sorted({0, max_shots}) if shots == "auto" else [int(shots)]


def seed_auc(p_yes: np.ndarray, y: np.ndarray) -> float:
    """Mean over labels of the ROC AUC of P(label applies) (s, K) against the seed sets (s, K)
    (labels all or none of the rows carry left out; 0.5 when every label is): how well the
    model ranks, which is what the label model takes from it (its raw probabilities are not
    calibrated: a model that says no to everything can have the lower log-loss)."""
    from sklearn.metrics import roc_auc_score

    scores = [roc_auc_score(y[:, k], p_yes[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(scores)) if scores else 0.5


def label_probabilities(signals: AnnotationSignals) -> tuple[np.ndarray, np.ndarray]:
    """(P(label applies) (n, K), its consistency (n, K)) from one model's signals over :func:`answers`."""
    logprob = signals.label_logprob.reshape(len(signals.label_logprob), -1, 2)
    shifted = logprob - logprob.max(axis=2, keepdims=True)
    weights = np.exp(shifted)
    p_yes = weights[:, :, 0] / weights.sum(axis=2)
    counts = signals.consistency.reshape(len(signals.consistency), -1, 2)
    named = counts.sum(axis=2)
    consistency = np.where(named > 0, counts[:, :, 0] / np.maximum(named, 1e-12), p_yes)
    return p_yes, consistency
