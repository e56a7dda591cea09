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
from ..al.classifier import average_heads
from ..al.loop import LabelledSet, negative_learning_weight, train_classifier
from ..randomness import derived_seed
from ..teaching import TeachingCheck
from ..text_annotator import embedding_model_proba
from .context import JobContext
from .job import LabelJob
from .llm_stages import Encoded, LabelModelFit, SeedScores
from .loop import LoopResult


@dataclass(frozen=True)
class FinalModel:
    """The final classifier and its probabilities (n, K) of every row."""

    classifier: Any
    proba: np.ndarray


STAGE = "final_classifier"
"""The session stage that records the final classifier, keyed by what it was trained on."""


def train_final(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                teaching: TeachingCheck | None, loop: LoopResult) -> FinalModel:
    """The classifier on :func:`training_rows`, seeded; its probabilities of every row. A
    classifier the session recorded for the same training rows and settings is taken as it is
    (a rerun after a kill or a full disk at the outputs trains nothing again)."""
    setup = loop.classifier
    training = training_rows(context, encoded, seeds, fit, teaching, loop.labelled)
    key = _training_key(context, encoded, training, setup.mode, loop.rounds[0])
    clf = _recorded(context, key)
    if clf is None:
        began = time.perf_counter()
        clf = final_classifier(setup.inputs, training, context.k, context.job, loop.rounds[0], context.prep.seed,
                               setup.mode, setup.options)
        _record(context, key, clf, time.perf_counter() - began)
    return FinalModel(clf, clf.predict_proba(setup.inputs))


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


def _recorded(context: JobContext, key: str) -> Any:
    from ..al.classifier import from_fitted_state

    record = context.session.stage(STAGE)
    if not record or record.get("key") != key:
        return None
    with np.load(io.BytesIO(base64.b64decode(record["params"]))) as arrays:
        return from_fitted_state(record["meta"], {name: arrays[name] for name in arrays.files})


def _record(context: JobContext, key: str, clf: Any, seconds: float) -> None:
    from ..al.classifier import fitted_state

    meta, params = fitted_state(clf)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    context.session.put_stage(STAGE, {"key": key, "meta": meta, "params": base64.b64encode(buffer.getvalue()).decode()},
                              seconds)


def training_rows(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit,
                  teaching: TeachingCheck | None, labelled: LabelledSet) -> LabelledSet:
    """The loop's labelled rows, the sample's label-model labels, then pseudo-labelled rows; only
    the seed rows and their regression's pseudo-labels when the label model does not teach."""
    weight = context.config.al.pseudo_weight
    if teaching is not None and not teaching.label_model_teaches:
        is_seed_row = np.isin(labelled.rows, context.seed_rows)
        labelled = LabelledSet(labelled.rows[is_seed_row], labelled.labels[is_seed_row], labelled.weights[is_seed_row],
                               labelled.negatives[is_seed_row])
        return with_pseudo_labels(context, encoded, labelled, labelled.rows, labelled.labels, labelled.weights, weight)
    sure = abstaining_labels(fit.sample_proba, fit.abstain_below)  # as the loop's annotator: -1 below the floor
    keep = (sure >= 0) & ~np.isin(seeds.sample, labelled.rows)
    sample = seeds.sample[keep]
    rows = np.concatenate([labelled.rows, sample])
    labels = np.concatenate([labelled.labels, sure[keep]])
    weights = np.concatenate([labelled.weights, np.ones(len(sample), np.float32)])
    return with_pseudo_labels(context, encoded, labelled, rows, labels, weights, weight)


def with_pseudo_labels(context: JobContext, encoded: Encoded, labelled: LabelledSet, rows: np.ndarray,
                       labels: np.ndarray, weights: np.ndarray, weight: float) -> LabelledSet:
    """``rows`` and every other row at ``weight`` with the label of a regression fitted on ``rows``."""
    k = context.k
    rest = np.setdiff1d(np.arange(context.n), rows)
    if weight and len(rest) and len(np.unique(labels)) >= 2:
        proba, _ = embedding_model_proba(encoded.x, rows, labels, k, derived_seed(context.prep.seed, 13),
                                         self_training=context.config.al.self_training)
        rows, labels = np.concatenate([rows, rest]), np.concatenate([labels, proba[rest].argmax(axis=1)])
        weights = np.concatenate([weights, np.full(len(rest), weight, np.float32)])
    negatives = np.zeros((len(rows), k), bool)
    negatives[: len(labelled.rows)] = labelled.negatives
    return LabelledSet(rows, labels, weights.astype(np.float32), negatives)


def final_classifier(x: Any, labelled: LabelledSet, k: int, job: LabelJob, rounds: int, seed: int,
                     mode: str, options: dict[str, Any]) -> Any:
    """The classifier on every ``labelled`` row (held-out slice for early stopping), seeded."""
    al = job.config.al.for_mode(mode)
    lam = negative_learning_weight(rounds, dataclasses.replace(al, rounds=max(rounds, 1)))
    settings = {"mode": mode, "threads": job.threads, **options}
    heads = al.final_heads if mode == "head" else 1
    members = [train_classifier(x, labelled, k, lam, al, settings, derived_seed(seed, 9001, i),
                                derived_seed(seed, 9002, i)) for i in range(heads)]
    return members[0] if heads == 1 else average_heads(members)
