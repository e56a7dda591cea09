"""Labels with a guarantee: the confidence above which a label may be accepted so that, with a
stated probability, the error rate among accepted rows is at most a target.

Learn-then-Test (Angelopoulos, Bates, Candes, Jordan and Lei 2021) on calibration rows no model
was fitted on: for each threshold t of a fixed grid, from the highest down, the null hypothesis
"the error rate among rows with confidence >= t exceeds E" is rejected when the binomial
probability of seeing at most the observed errors among the n_t calibration rows above t, were
the rate E, is at most delta = 1 - confidence level (the one-sided Clopper-Pearson bound on the
rate is then <= E). Fixed-sequence testing stops at the first threshold not rejected, so the
family-wise error is at most delta: with probability >= 1 - delta every accepted threshold, and
so the lowest one returned, has an error rate <= E among the rows it accepts. Valid when the
calibration rows and the rows to accept are exchangeable (a random sample of the same rows).

Thresholds with fewer calibration rows above them than could ever show the target (even all
right, :func:`rows_needed`) are skipped: which thresholds are tested then depends on the
calibration rows' confidences, never on whether they are right, and the tests stay valid given
the confidences. Without it the sequence would start at the highest confidence, above one row,
and stop there at once.

Shapes: ``n`` calibration rows; confidences (n,) in [0, 1], ``correct`` (n,) booleans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from .errors import DataError

GRID = np.linspace(1.0, 0.0, 1001)
"""The thresholds tested, highest first (fixed before seeing any data: the fixed sequence)."""


@dataclass(frozen=True)
class Acceptance:
    """The threshold chosen on calibration rows, or None (nothing can be accepted)."""

    threshold: float | None
    """Accept rows with confidence >= this; None: accept none."""
    rows: int
    """Calibration rows."""
    above: int
    """Calibration rows at or above the threshold (0 when None)."""
    errors: int
    """Of those, how many were wrong."""
    needed: int
    """The fewest calibration rows above a threshold, none of them wrong, that could show the
    target at this confidence level (:func:`rows_needed`)."""

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": None if self.threshold is None else round(self.threshold, 4), "calibration_rows": self.rows,
                "calibration_rows_above": self.above, "calibration_errors_above": self.errors,
                "rows_needed": self.needed}


def rows_needed(target_error: float, delta: float) -> int:
    """The fewest rows, all right, whose binomial test rejects "error rate > E" at level delta:
    the smallest n with (1 - E)^n <= delta."""
    return math.ceil(math.log(delta) / math.log1p(-target_error))


def acceptance_threshold(confidence: Any, correct: Any, target_error: float, delta: float) -> Acceptance:
    """The lowest threshold of :data:`GRID` whose error rate among calibration rows at or above it
    is shown <= ``target_error`` at level ``delta``, every higher one shown too (fixed sequence).
    confidence (n,), correct (n,)."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise DataError(f"confidence and correct must be two arrays of one shape (n,), got {confidence.shape} "
                        f"and {correct.shape}")
    sorted_conf = np.sort(confidence)[::-1]
    wrong = np.concatenate([[0], np.cumsum(~correct[np.argsort(-confidence, kind="stable")])])
    above = np.searchsorted(-sorted_conf, -GRID, side="right")  # (len(GRID),) rows with confidence >= t
    needed = rows_needed(target_error, delta)
    tested = above >= needed  # fewer rows above could not show it even all right: skipped (see the module)
    errors = wrong[above]
    shown = binom.cdf(errors, np.maximum(above, 1), target_error) <= delta
    failed = np.flatnonzero(tested & ~shown)
    last = failed[0] if len(failed) else len(GRID)  # fixed sequence: stop at the first threshold not shown
    passed = np.flatnonzero(tested[:last])
    if not len(passed):
        return Acceptance(None, len(confidence), 0, 0, needed)
    i = passed[-1]
    return Acceptance(float(GRID[i]), len(confidence), int(above[i]), int(errors[i]), needed)
