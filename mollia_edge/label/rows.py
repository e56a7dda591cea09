"""Every row's final label: seeds as given, rows the LLMs annotated by the label model, the others
by the classifier; doubtful rows queued for review (human labels always win)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..calibration import temper
from ..session import RowLabel
from .accept import Guarantee, with_guarantee
from .context import JobContext, negatives, signals
from .final import FinalModel
from .llm_stages import LabelModelFit, SeedScores
from .loop import LoopResult

Review = list[tuple[int, str, float]]
"""(row, reason, priority) of the rows queued for review."""


@dataclass(frozen=True)
class RowLabels:
    """The labels as the session holds them after the job (human labels win), and where the LLMs spoke."""

    current: dict[int, RowLabel]
    llm_rows: np.ndarray
    """(m,) the non-seed rows the LLMs annotated (sample, loop, abstained), labelled by the label model."""
    votes: np.ndarray
    """(m, N) each LLM's own label index on ``llm_rows``."""
    guarantee: Guarantee | None = None
    """The accepted rows and their thresholds (``guarantee.target_error``), else None."""


def label_rows(context: JobContext, seeds: SeedScores, fit: LabelModelFit, loop: LoopResult,
               final: FinalModel) -> RowLabels:
    """Every row's label, stored in the session with the review queue; the session's labels after."""
    seed_rows, k, n = context.seed_rows, context.k, context.n
    first = np.concatenate([seed_rows, seeds.sample]).astype(np.int64)
    llm_rows = np.setdiff1d(np.union1d(np.union1d(first, loop.labelled.rows), loop.abstained), seed_rows)
    scores, c = signals(context, loop.text_proba, llm_rows)
    some = len(llm_rows) > 0
    p_mix = temper(fit.model.predict_proba(scores, c), final.mixture_temperature()) if some else np.zeros((0, k))
    denied = negatives(context, loop.text_proba, fit.model, llm_rows)
    m = len(context.panel.models)
    votes = scores[:, :m].argmax(axis=2) if some else np.zeros((0, m), np.int64)
    position = {int(row): i for i, row in enumerate(llm_rows)}
    abstained = set(loop.abstained.tolist())
    row_labels: list[RowLabel] = []
    review: Review = []
    for i in range(n):
        if context.seed_label[i] >= 0:
            row_labels.append(RowLabel(i, context.prep.labels[context.seed_label[i]], "seed", "seed", 1.0))
        elif i in position:
            j = position[i]
            row_labels.append(_mixture_row(context, fit, final, i, p_mix[j], denied[j], votes[j], i in abstained, review))
        else:
            row_labels.append(_classifier_row(context, final, i, review))
        if context.progress and (i + 1) % 500 == 0:
            context.progress("labelling", i + 1, n)
    guarantee = None
    if context.config.guarantee.target_error is not None:
        never = set(np.setdiff1d(loop.labelled.rows, seed_rows).tolist()) | abstained
        row_labels, review, guarantee = with_guarantee(context, final, row_labels, never)
    context.session.put_machine_labels(row_labels)
    context.session.queue_for_review(review)
    if context.progress:
        context.progress("labelling", n, n)
    return RowLabels(context.session.row_labels(), llm_rows, votes, guarantee)


def _mixture_row(context: JobContext, fit: LabelModelFit, final: FinalModel, i: int, p: np.ndarray,
                 denied: np.ndarray, votes: np.ndarray, abstained: bool, review: Review) -> RowLabel:
    labels = context.prep.labels
    y, clf_label = int(p.argmax()), int(final.proba[i].argmax())
    confidence = float(p[y])
    disagree = clf_label != y
    flagged = disagree or confidence < context.job.review_threshold or abstained
    if flagged:
        reason = f"classifier says {labels[clf_label]}" if disagree else "low confidence"
        review.append((i, reason, 1.0 - confidence + float(disagree)))
    return RowLabel(i, labels[y], "llm_mixture", f"llm_mixture:{fit.model.kind}", round(confidence, 6),
                    tuple(labels[q] for q in np.flatnonzero(denied) if q != y),
                    "|".join(f"{m}:{labels[v]}" for m, v in zip(context.panel.names, votes)), flagged)


def _classifier_row(context: JobContext, final: FinalModel, i: int, review: Review) -> RowLabel:
    labels, p = context.prep.labels, final.proba[i]
    y = int(p.argmax())
    confidence = float(p[y])
    flagged = confidence < context.job.review_threshold
    if flagged:
        review.append((i, "low confidence", 1.0 - confidence))
    author = "seed-only regression" if final.choice and final.choice["chosen"] != "classifier" else "classifier"
    return RowLabel(i, labels[y], "classifier", author, round(confidence, 6), (), "", flagged)  # no LLM saw it
