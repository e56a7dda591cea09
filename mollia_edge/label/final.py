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

from ..al.classifier import average_heads, head_from_linear, with_temperature
from ..al.loop import LabelledSet, negative_learning_weight, train_classifier
from ..calibration import fit_temperature, row_log_losses, temper
from ..randomness import derived_seed
from ..teaching import TeachingCheck
from ..text_annotator import fit_regression, text_annotator_fit
from .context import JobContext
from .crossfit import FOLDS, CrossFit, calibration_of, can_cross_fit, cross_fit
from .job import LabelJob
from .llm_stages import Encoded, LabelModelFit, SeedScores
from .loop import LoopResult
from .training import training_rows, with_pseudo_labels


@dataclass(frozen=True)
class FinalModel:
    """The final classifier and its calibrated probabilities (n, K) of every row."""

    classifier: Any
    proba: np.ndarray
    """(n, K) the classifier's probabilities softened or sharpened by its calibration's temperature."""
    calibration: dict[str, Any] | None = None
    """Per source (``mixture``, ``classifier``) the temperature fitted on the seed rows'
    cross-fitted probabilities and what it does there (:func:`~.crossfit.calibration_of`);
    None: too few seed rows, or ``al.calibrate`` off."""
    choice: dict[str, Any] | None = None
    """:func:`against_seed_only`'s choice (None: not judged)."""
    seed_proba: dict[str, np.ndarray] | None = None
    """Per source (``mixture``, ``classifier``) the seed rows' cross-fitted probabilities (s, K)
    as that source's rows get them, calibrated: the classifier's, or the seed-only regression's
    when it labels the classifier rows (the calibration rows of :mod:`.accept`)."""

    def mixture_temperature(self) -> float:
        """The temperature of the label model's probabilities of the mixture rows (1: none fitted)."""
        return self.calibration["mixture"]["temperature"] if self.calibration else 1.0


STAGE = "final_classifier"
"""The session stage that records the final classifier, keyed by what it was trained on."""


def train_final(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                teaching: TeachingCheck | None, loop: LoopResult) -> FinalModel:
    """The classifier on :func:`training_rows`, seeded, and the seed rows' cross-fitted
    probabilities (:mod:`.crossfit`) that calibrate it and the label model; its probabilities of
    every row. A classifier the session recorded for the same training rows and settings is taken
    as it is (a rerun after a kill or a full disk at the outputs trains nothing again)."""
    setup = loop.classifier
    training = training_rows(context, encoded, seeds, fit, teaching, loop.labelled)
    key = _training_key(context, encoded, training, setup.mode, loop.rounds[0])
    clf, crossed = _recorded(context, key)
    if clf is None:
        began = time.perf_counter()
        clf = final_classifier(setup.inputs, training, context.k, context.job, loop.rounds[0], context.prep.seed,
                               setup.mode, setup.options)

        def train(labelled: LabelledSet, fold: int) -> np.ndarray:
            part = with_pseudo_labels(context, encoded, labelled)
            one = final_classifier(setup.inputs, part, context.k, context.job, loop.rounds[0],
                                   derived_seed(context.prep.seed, 29, fold), setup.mode, setup.options, heads=1)
            return one.predict_proba(setup.inputs)

        crossed = cross_fit(context, encoded, seeds, fit, teaching, loop, train)
        _record(context, key, clf, crossed, time.perf_counter() - began)
    calibration = None
    if crossed is not None:
        calibration = {"folds": FOLDS, "mixture": calibration_of(crossed.mixture, crossed.y, soften_only=True),
                       "classifier": calibration_of(crossed.classifier, crossed.y)}
        clf = with_temperature(clf, calibration["classifier"]["temperature"])
    choice, plain, plain_oof = against_seed_only(context, encoded, crossed, calibration)
    seed_proba = None
    if crossed is not None and calibration is not None:
        seed_proba = {"mixture": temper(crossed.mixture, calibration["mixture"]["temperature"]),
                      "classifier": plain_oof if plain is not None else
                      temper(crossed.classifier, calibration["classifier"]["temperature"])}
    if plain is not None:
        return FinalModel(plain, plain.predict_proba(encoded.x), calibration, choice, seed_proba)
    return FinalModel(clf, clf.predict_proba(setup.inputs), calibration, choice, seed_proba)


def against_seed_only(context: JobContext, encoded: Encoded, crossed: CrossFit | None,
                      calibration: dict[str, Any] | None) -> tuple[dict[str, Any] | None, Any, np.ndarray | None]:
    """(the choice in words, the plain seed-only regression as a head classifier, calibrated,
    when it labels the classifier's rows, else None; its calibrated cross-fitted probabilities
    (s, K) of the seed rows, else None). Both are judged on the seed rows,
    cross-fitted: the classifier keeps its rows when it is right on more of them than a logistic
    regression on the seed rows' embeddings alone, or on as many with a lower log-loss."""
    if crossed is None or calibration is None:
        return None, None, None
    seed_rows, y, k = context.seed_rows, crossed.y, context.k
    oof, strength = text_annotator_fit(encoded.x, seed_rows, y, k, derived_seed(context.prep.seed, 31),
                                       self_training=(0, 1))
    temperature = fit_temperature(oof[seed_rows], y)
    oof = temper(oof[seed_rows], temperature)
    mine = temper(crossed.classifier, calibration["classifier"]["temperature"])
    ours = (float(np.mean(mine.argmax(axis=1) == y)), float(row_log_losses(mine, y).mean()))
    theirs = (float(np.mean(oof.argmax(axis=1) == y)), float(row_log_losses(oof, y).mean()))
    keeps = ours[0] > theirs[0] or (ours[0] == theirs[0] and ours[1] <= theirs[1])
    choice = {"chosen": "classifier" if keeps else "seed-only regression",
              "seed_accuracy": {"classifier": round(ours[0], 4), "seed-only regression": round(theirs[0], 4)},
              "seed_log_loss": {"classifier": round(ours[1], 4), "seed-only regression": round(theirs[1], 4)}}
    if keeps or not strength:
        return choice, None, None
    context.say("the seed-only regression labels the classifier's rows (and is the exported classifier): the job's "
                f"classifier is no better on the seed rows, cross-fitted ({ours[0]:.3f} against {theirs[0]:.3f})")
    regression = fit_regression(encoded.x[seed_rows], y, strength)
    weight = np.full((k, encoded.x.shape[1]), 0.0)
    bias = np.full(k, -30.0)  # a label no seed row has: never predicted
    if len(regression.classes_) == 2:
        weight[regression.classes_[1]], bias[regression.classes_] = regression.coef_[0], (0.0, regression.intercept_[0])
    else:
        weight[regression.classes_], bias[regression.classes_] = regression.coef_, regression.intercept_
    return choice, head_from_linear(weight / temperature, bias / temperature, context.job.threads), oof


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


def _recorded(context: JobContext, key: str) -> tuple[Any, CrossFit | None]:
    """(the recorded classifier, the seed rows' cross-fitted probabilities), or (None, None) when
    none was recorded for ``key``."""
    from ..al.classifier import from_fitted_state

    record = context.session.stage(STAGE)
    if not record or record.get("key") != key or (can_cross_fit(context) and not record.get("cross_fitted")):
        return None, None  # not recorded, or by a version that did not cross-fit
    with np.load(io.BytesIO(base64.b64decode(record["params"]))) as arrays:
        clf = from_fitted_state(record["meta"], {name: arrays[name] for name in arrays.files})
    crossed = record.get("cross_fitted")
    return clf, CrossFit.from_record(crossed) if crossed else None


def _record(context: JobContext, key: str, clf: Any, crossed: CrossFit | None, seconds: float) -> None:
    from ..al.classifier import fitted_state

    meta, params = fitted_state(clf)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    context.session.put_stage(STAGE, {"key": key, "meta": meta, "params": base64.b64encode(buffer.getvalue()).decode(),
                                      "cross_fitted": crossed.as_record() if crossed else None}, seconds)


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
