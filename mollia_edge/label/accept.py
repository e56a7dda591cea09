"""Labels with a guarantee (``guarantee.target_error``): which machine labels are accepted so that,
with ``guarantee.confidence_level``, their error rate is at most the target, and what to review.

Per source (``llm_mixture`` rows labelled by the label model, ``classifier`` rows) a confidence
threshold is chosen by :func:`~mollia_edge.guarantee.acceptance_threshold` on the calibration
rows: the seed rows' cross-fitted probabilities from that source (:mod:`.crossfit`, calibrated as
the rows are), each right or wrong. The level is split between the sources (Bonferroni), so
both hold together and the accepted rows as a whole are within the target; when the calibration
rows are too few for two shares, only the source with more rows to accept is tested
(:func:`tested_sources`).

Exchangeability, honestly: the guarantee needs calibration rows drawn as the rows it accepts.
* Input seed rows count as calibration rows: give seed labels to a random sample of the file.
* Rows a person labelled from the review queue were chosen for being doubtful: they train the
  models but are not calibration rows, except the queue's *random checks* (:data:`RANDOM_CHECK`),
  rows drawn at random from all machine-labelled rows and interleaved with the doubtful ones.
* Rows the loop queried (chosen for being uncertain) and rows the label model abstained on are
  never accepted: no calibration row was drawn like them.
* The cross-fitted models were fitted on 4/5 of the seed rows: slightly weaker than the job's,
  so the calibration errs on the safe side; the temperature is fitted on the same rows (one
  parameter; the threshold's ordering of the rows is nearly unchanged by it).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..guarantee import Acceptance, acceptance_threshold, rows_needed
from ..randomness import derived_seed
from ..session import RowLabel
from .context import JobContext
from .final import FinalModel

RANDOM_CHECK = "random check (keeps the error guarantee honest)"
"""The review reason of the queue's random rows: labelled by a person, they are calibration rows."""
RANDOM_CHECKS = 100
"""Random checks at the top of the review queue, before the doubtful rows (see :func:`review_order`)."""
SOURCES = {"llm_mixture": "mixture", "classifier": "classifier"}
"""Row source -> its calibration rows' probabilities (:attr:`~.final.FinalModel.seed_proba`)."""


@dataclass(frozen=True)
class Guarantee:
    """The thresholds chosen and the rows accepted."""

    target_error: float
    confidence_level: float
    by_source: dict[str, Acceptance]
    accepted: frozenset[int]
    eligible: int
    """Machine-labelled rows that could be accepted (not queried, not abstained on)."""
    machine_rows: int
    calibration: frozenset[int] = frozenset()
    """Rows whose label counts as a calibration row: the seed rows that do, and the random checks
    (the output's ``calibration_row`` column)."""

    def as_dict(self) -> dict[str, Any]:
        return {"target_error": self.target_error, "confidence_level": self.confidence_level,
                "accepted": len(self.accepted), "machine_rows": self.machine_rows, "eligible_rows": self.eligible,
                "by_source": {source: a.as_dict() for source, a in self.by_source.items()}, "line": self.line()}

    def line(self) -> str:
        """One line for the summary."""
        share = len(self.accepted) / self.machine_rows if self.machine_rows else 0.0
        head = (f"accepted {len(self.accepted):,} of {self.machine_rows:,} rows ({share:.0%}) at <= "
                f"{self.target_error:.0%} error with {self.confidence_level:.0%} confidence; "
                f"{self.machine_rows - len(self.accepted):,} to review")
        short = [f"{source}: {a.rows} calibration rows, at least {a.needed} above a threshold with none wrong needed"
                 for source, a in self.by_source.items() if a.threshold is None]
        return head + (f" ({'; '.join(short)}: label or review more rows)" if short else "")


def calibration_rows(context: JobContext) -> np.ndarray:
    """(s,) booleans over ``context.seed_rows``: which seed rows are calibration rows (input seeds,
    and the review queue's random checks a person answered)."""
    checked = {row for row, reason, _ in context.session.review_queue("done") if reason == RANDOM_CHECK}
    given = set(context.prep.input_seeds if context.prep.calibration_seeds is None else context.prep.calibration_seeds)
    return np.array([int(r) in given or int(r) in checked for r in context.seed_rows], bool)


def tested_sources(rows: dict[str, int], calibration: int, target_error: float, delta: float) -> list[str]:
    """The sources whose thresholds are tested, the level split evenly among them: as many as the
    ``calibration`` rows can serve (each needs :func:`~mollia_edge.guarantee.rows_needed` at its
    share of ``delta``), those with the most ``rows`` to accept first. Decided on counts alone,
    never on which calibration rows are right, so the tests stay valid; a source left out accepts
    nothing (50 seed rows at 5 %: one source at .1 needs 45, two at .05 each need 59)."""
    order = sorted(rows, key=lambda source: (-rows[source], source))
    for m in range(len(order), 0, -1):
        if calibration >= rows_needed(target_error, delta / m):
            return order[:m]
    return order[:1]


def choose_thresholds(context: JobContext, final: FinalModel, rows: dict[str, int],
                      use: np.ndarray) -> dict[str, Acceptance]:
    """Per source with rows to accept (``rows``: how many) its threshold on the calibrated
    confidence, at level (1 - confidence_level) split among :func:`tested_sources`; ``use``:
    :func:`calibration_rows`."""
    settings = context.config.guarantee
    y = context.seed_label[context.seed_rows]
    delta = 1 - settings.confidence_level
    tested = tested_sources(rows, int(use.sum()), settings.target_error, delta)
    share = delta / len(tested)
    chosen = {}
    for source in sorted(rows):
        if final.seed_proba is None or not use.any() or source not in tested:  # accepts nothing
            chosen[source] = Acceptance(None, int(use.sum()), 0, 0, rows_needed(settings.target_error, share))
            continue
        p = final.seed_proba[SOURCES[source]][use]
        chosen[source] = acceptance_threshold(p.max(axis=1), p.argmax(axis=1) == y[use], settings.target_error, share)
    return chosen


def with_guarantee(context: JobContext, final: FinalModel, labels: list[RowLabel],
                   never: set[int]) -> tuple[list[RowLabel], list[tuple[int, str, float]], Guarantee]:
    """The rows' labels with ``needs_review`` = not accepted, the review queue (doubtful rows
    nearest their threshold first, interleaved with random checks) and the guarantee. ``never``:
    rows that may not be accepted (queried by the loop, abstained on)."""
    settings = context.config.guarantee
    machine = [lab for lab in labels if lab.source in SOURCES]
    eligible = [lab for lab in machine if lab.row not in never]
    use = calibration_rows(context)
    thresholds = choose_thresholds(context, final, dict(Counter(lab.source for lab in eligible)), use)
    accepted = frozenset(lab.row for lab in eligible if thresholds[lab.source].threshold is not None
                         and lab.confidence >= thresholds[lab.source].threshold)
    out = [lab if lab.source not in SOURCES else _flagged(lab, lab.row not in accepted) for lab in labels]
    review = _review_queue(context, machine, eligible, thresholds, accepted)
    checks = {row for row, reason, _ in review if reason == RANDOM_CHECK}
    seeds = {int(r) for r in context.seed_rows[use]}
    guarantee = Guarantee(settings.target_error, settings.confidence_level, thresholds, accepted, len(eligible),
                          len(machine), frozenset(seeds | checks))
    return out, review, guarantee


def _flagged(label: RowLabel, flagged: bool) -> RowLabel:
    return dataclasses.replace(label, needs_review=flagged)


def _review_queue(context: JobContext, machine: list[RowLabel], eligible: list[RowLabel],
                  thresholds: dict[str, Acceptance], accepted: frozenset[int]) -> list[tuple[int, str, float]]:
    """:data:`RANDOM_CHECKS` random checks drawn from the rows that could be accepted (calibration
    rows drawn as they are), then the rows not accepted, nearest their source's threshold first."""
    def gap(lab: RowLabel) -> float:
        threshold = thresholds.get(lab.source)
        return abs((threshold.threshold if threshold and threshold.threshold is not None else 1.0) - lab.confidence)

    doubtful = sorted((lab for lab in machine if lab.row not in accepted), key=lambda lab: (gap(lab), lab.row))
    rng = np.random.default_rng(derived_seed(context.prep.seed, 37))
    checks = rng.permutation([lab.row for lab in eligible]).tolist()
    order = review_order([lab.row for lab in doubtful], checks)
    total = len(order)
    return [(row, RANDOM_CHECK if check else "below the accepted confidence", round((total - i) / total, 6))
            for i, (row, check) in enumerate(order)]


def review_order(doubtful: Sequence[int], checks: Sequence[int]) -> list[tuple[int, bool]]:
    """(row, is a random check) in the Review screen's order: the first :data:`RANDOM_CHECKS` of
    ``checks`` (a random order), then the ``doubtful`` rows as given, each row once.

    Random checks first because only they become calibration rows, and more calibration rows is
    what lets the threshold come down: on the dev sample (bbc-news, 1,000 rows of sample seed 1,
    20 draws of 50 seeds, ``scripts/bench_guarantee.py --order``) 25 / 50 / 100 reviews raised the
    accepted share at E = .05 from .379 to .682 / .790 / .839 this way, to .654 / .755 / .835 with
    doubtful rows and random checks taking turns, and to .469 / .432 / .437 with doubtful rows only
    (they teach the models but never tighten the bound)."""
    order: list[tuple[int, bool]] = []
    seen: set[int] = set()
    for row, check in [*((r, True) for r in list(checks)[:RANDOM_CHECKS]), *((r, False) for r in doubtful)]:
        if int(row) not in seen:
            order.append((int(row), check))
            seen.add(int(row))
    return order
