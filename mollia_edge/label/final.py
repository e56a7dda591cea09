"""The final classifier: trained on every labelled row (seeds, the loop's and the sample's labels)
and, at ``al.pseudo_weight``, every other row with the label of a regression on the embeddings."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..al.annotators import abstaining_labels
from ..al.classifier import average_heads, head_from_linear, with_temperature
from ..al.loop import LabelledSet, negative_learning_weight, train_classifier
from ..calibration import (
    expected_calibration_error,
    fit_temperature,
    row_log_losses,
    temper,
)
from ..folds import stratified_splits
from ..randomness import derived_seed
from ..teaching import TeachingCheck
from ..text_annotator import embedding_model_proba, fit_regression, text_annotator_fit
from .context import JobContext
from .job import LabelJob
from .llm_stages import Encoded, LabelModelFit, SeedScores
from .loop import LoopResult


@dataclass(frozen=True)
class FinalModel:
    """The final classifier and its calibrated probabilities (n, K) of every row."""

    classifier: Any
    proba: np.ndarray
    """(n, K) the classifier's probabilities softened or sharpened by ``calibration``'s temperature."""
    calibration: dict[str, Any] | None = None
    """The temperature fitted on cross-fitted predictions of the seed rows and the seed ECE
    before and after it (None: too few seed rows, or ``al.calibrate`` off)."""
    choice: dict[str, Any] | None = None
    """:func:`against_seed_only`'s choice (None: not judged)."""


STAGE = "final_classifier"
"""The session stage that records the final classifier, keyed by what it was trained on."""


def train_final(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                teaching: TeachingCheck | None, loop: LoopResult) -> FinalModel:
    """The classifier on :func:`training_rows`, seeded; its probabilities of every row. A
    classifier the session recorded for the same training rows and settings is taken as it is
    (a rerun after a kill or a full disk at the outputs trains nothing again)."""
    setup = loop.classifier
    base = labelled_rows(context, seeds, fit, teaching, loop.labelled)
    training = with_pseudo_labels(context, encoded, base)
    key = _training_key(context, encoded, training, setup.mode, loop.rounds[0])
    clf, calibration = _recorded(context, key)
    if clf is None:
        began = time.perf_counter()
        clf = final_classifier(setup.inputs, training, context.k, context.job, loop.rounds[0], context.prep.seed,
                               setup.mode, setup.options)
        calibration = calibrate(context, encoded, setup, base, loop.rounds[0])
        _record(context, key, clf, calibration, time.perf_counter() - began)
    if calibration:
        clf = with_temperature(clf, calibration["temperature"])
    choice, plain = against_seed_only(context, encoded, calibration)
    if plain is not None:
        return FinalModel(plain, plain.predict_proba(encoded.x), calibration, choice)
    return FinalModel(clf, clf.predict_proba(setup.inputs), calibration, choice)


def against_seed_only(context: JobContext, encoded: Encoded,
                      calibration: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any]:
    """(the choice in words, the plain seed-only regression as a head classifier, calibrated,
    when it labels the classifier's rows, else None). Both are judged on the seed rows,
    cross-fitted: the classifier keeps its rows when it is right on more of them than a logistic
    regression on the seed rows' embeddings alone, or on as many with a lower log-loss."""
    if not calibration or "seed_right" not in calibration:
        return None, None
    seed_rows, y, k = context.seed_rows, context.seed_label[context.seed_rows], context.k
    oof, strength = text_annotator_fit(encoded.x, seed_rows, y, k, derived_seed(context.prep.seed, 31),
                                       self_training=(0, 1))
    temperature = fit_temperature(oof[seed_rows], y)
    oof = temper(oof[seed_rows], temperature)
    mine = (float(np.mean(calibration["seed_right"])), calibration["seed_log_loss"])
    theirs = (float(np.mean(oof.argmax(axis=1) == y)), float(row_log_losses(oof, y).mean()))
    keeps = mine[0] > theirs[0] or (mine[0] == theirs[0] and mine[1] <= theirs[1])
    choice = {"chosen": "classifier" if keeps else "seed-only regression",
              "seed_accuracy": {"classifier": round(mine[0], 4), "seed-only regression": round(theirs[0], 4)},
              "seed_log_loss": {"classifier": round(mine[1], 4), "seed-only regression": round(theirs[1], 4)}}
    if keeps or not strength:
        return choice, None
    context.say("the seed-only regression labels the classifier's rows (and is the exported classifier): the job's "
                f"classifier is no better on the seed rows, cross-fitted ({mine[0]:.3f} against {theirs[0]:.3f})")
    regression = fit_regression(encoded.x[seed_rows], y, strength)
    weight = np.full((k, encoded.x.shape[1]), 0.0)
    bias = np.full(k, -30.0)  # a label no seed row has: never predicted
    if len(regression.classes_) == 2:
        weight[regression.classes_[1]], bias[regression.classes_] = regression.coef_[0], (0.0, regression.intercept_[0])
    else:
        weight[regression.classes_], bias[regression.classes_] = regression.coef_, regression.intercept_
    return choice, head_from_linear(weight / temperature, bias / temperature, context.job.threads)


def calibrate(context: JobContext, encoded: Encoded, setup: Any, base: LabelledSet, rounds: int) -> dict[str, Any] | None:
    """The temperature that makes the final classifier's confidence match how often it is right,
    fitted on its cross-fitted predictions of the seed rows: per fold of the seed rows, the same
    classifier is trained on the labelled rows ``base`` but that fold's seed rows, and the other
    rows pseudo-labelled anew without them (a regression on 50 points in 384 dimensions fits
    them all: pseudo-labels made with the held-out rows hand their labels to the classifier,
    which then looked right on .90 of yahoo's seed rows and was on .51 of the others). The
    label model's labels of the sample still saw every seed row: a smaller leak."""
    seed_rows, y = context.seed_rows, context.seed_label[context.seed_rows]
    if not context.config.al.calibrate or len(seed_rows) < CALIBRATION_MIN_SEEDS or len(np.unique(y)) < 2:
        return None
    oof = np.zeros((len(seed_rows), context.k))
    for fold, (_, test) in enumerate(stratified_splits(y, CALIBRATION_FOLDS, derived_seed(context.prep.seed, 23))):
        keep = ~np.isin(base.rows, seed_rows[test])
        part = with_pseudo_labels(context, encoded, LabelledSet(base.rows[keep], base.labels[keep], base.weights[keep],
                                                                base.negatives[keep]))
        clf = final_classifier(setup.inputs, part, context.k, context.job, rounds, derived_seed(context.prep.seed, 29, fold),
                               setup.mode, setup.options, heads=1)
        oof[test] = clf.predict_proba(setup.inputs)[seed_rows[test]]
    temperature = fit_temperature(oof, y)
    calibrated = temper(oof, temperature)
    return {"temperature": round(temperature, 4), "folds": CALIBRATION_FOLDS,
            "seed_right": (calibrated.argmax(axis=1) == y).tolist(),
            "seed_log_loss": round(float(row_log_losses(calibrated, y).mean()), 4),
            "seed_ece_before": round(expected_calibration_error(oof, y, 10), 4),
            "seed_ece_after": round(expected_calibration_error(temper(oof, temperature), y, 10), 4),
            "seed_accuracy": round(float(np.mean(oof.argmax(axis=1) == y)), 4)}


CALIBRATION_FOLDS = 5
CALIBRATION_MIN_SEEDS = 20
"""Fewer seed rows than this: the classifier's confidence is left as it is (a temperature fitted on
fewer cross-fitted predictions, folds of 3 rows, is noise), and it is not compared with the
seed-only regression."""


def _training_key(context: JobContext, encoded: Encoded, training: LabelledSet, mode: str, rounds: int) -> str:
    """A digest of everything the final classifier is a function of (its inputs come from the
    session's texts and the encoder, named by its sha256)."""
    digest = hashlib.sha256()
    for array in (training.rows, training.labels, training.weights, training.negatives):
        digest.update(np.ascontiguousarray(array).tobytes())
    settings = {"mode": mode, "rounds": rounds, "seed": context.prep.seed, "threads": context.job.threads,
                "al": dataclasses.asdict(context.config.al.for_mode(mode)), "encoder": encoded.encoder.sha256,
                "max_length": encoded.encoder.max_length, "k": context.k}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _recorded(context: JobContext, key: str) -> tuple[Any, dict[str, Any] | None]:
    """(the recorded classifier, its calibration), or (None, None) when none was recorded for ``key``."""
    from ..al.classifier import from_fitted_state

    record = context.session.stage(STAGE)
    if not record or record.get("key") != key:
        return None, None
    with np.load(io.BytesIO(base64.b64decode(record["params"]))) as arrays:
        return from_fitted_state(record["meta"], {name: arrays[name] for name in arrays.files}), record.get("calibration")


def _record(context: JobContext, key: str, clf: Any, calibration: dict[str, Any] | None, seconds: float) -> None:
    from ..al.classifier import fitted_state

    meta, params = fitted_state(clf)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    context.session.put_stage(STAGE, {"key": key, "meta": meta, "params": base64.b64encode(buffer.getvalue()).decode(),
                                      "calibration": calibration}, seconds)


def training_rows(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                  teaching: TeachingCheck | None, labelled: LabelledSet) -> LabelledSet:
    """:func:`labelled_rows`, then every other row pseudo-labelled (:func:`with_pseudo_labels`)."""
    return with_pseudo_labels(context, encoded, labelled_rows(context, seeds, fit, teaching, labelled))


def labelled_rows(context: JobContext, seeds: SeedScores, fit: LabelModelFit, teaching: TeachingCheck | None,
                  labelled: LabelledSet) -> LabelledSet:
    """The loop's labelled rows, then the sample's label-model labels; only the seed rows when the
    label model does not teach."""
    if teaching is not None and not teaching.label_model_teaches:
        is_seed_row = np.isin(labelled.rows, context.seed_rows)
        return LabelledSet(labelled.rows[is_seed_row], labelled.labels[is_seed_row], labelled.weights[is_seed_row],
                           labelled.negatives[is_seed_row])
    sure = abstaining_labels(fit.sample_proba, fit.abstain_below)  # as the loop's annotator: -1 below the floor
    keep = (sure >= 0) & ~np.isin(seeds.sample, labelled.rows)
    sample = seeds.sample[keep]
    return LabelledSet(np.concatenate([labelled.rows, sample]), np.concatenate([labelled.labels, sure[keep]]),
                       np.concatenate([labelled.weights, np.ones(len(sample), np.float32)]),
                       np.concatenate([labelled.negatives, np.zeros((len(sample), context.k), bool)]))


def with_pseudo_labels(context: JobContext, encoded: Encoded, base: LabelledSet) -> LabelledSet:
    """``base`` and, at ``al.pseudo_weight``, every other row with the label of a regression fitted on ``base``."""
    k, weight = context.k, context.config.al.pseudo_weight
    rows, labels, weights = base.rows, base.labels, base.weights
    rest = np.setdiff1d(np.arange(context.n), rows)
    if weight and len(rest) and len(np.unique(labels)) >= 2:
        proba, _ = embedding_model_proba(encoded.x, rows, labels, k, derived_seed(context.prep.seed, 13),
                                         self_training=context.config.al.self_training)
        rows, labels = np.concatenate([rows, rest]), np.concatenate([labels, proba[rest].argmax(axis=1)])
        weights = np.concatenate([weights, np.full(len(rest), weight, np.float32)])
    negatives = np.zeros((len(rows), k), bool)
    negatives[: len(base.rows)] = base.negatives
    return LabelledSet(rows, labels, weights.astype(np.float32), negatives)


def final_classifier(x: Any, labelled: LabelledSet, k: int, job: LabelJob, rounds: int, seed: int,
                     mode: str, options: dict[str, Any], heads: int | None = None) -> Any:
    """The classifier on every ``labelled`` row (held-out slice for early stopping), seeded;
    ``heads``: in head mode, how many heads are averaged (default ``al.final_heads``; the
    calibration's cross-fits take one each, a third of the time: their temperature then
    softens the averaged heads slightly more than it needs to)."""
    al = job.config.al.for_mode(mode)
    lam = negative_learning_weight(rounds, dataclasses.replace(al, rounds=max(rounds, 1)))
    settings = {"mode": mode, "threads": job.threads, **options}
    heads = (heads or al.final_heads) if mode == "head" else 1
    members = [train_classifier(x, labelled, k, lam, al, settings, derived_seed(seed, 9001, i),
                                derived_seed(seed, 9002, i)) for i in range(heads)]
    return members[0] if heads == 1 else average_heads(members)
