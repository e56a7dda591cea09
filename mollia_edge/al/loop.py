"""The active-learning loop (paper Algorithm 1) with the robust loss of Eqs. 7-9.

Round counting (the paper's curves: round r = after r queries): round ``r`` trains a fresh
classifier (cold start, seeded by ``(seed, r)``) on the seed rows plus ``r`` annotated batches,
``seed_size + r * B`` rows, and evaluates it. Then, while ``r < rounds``, that model queries
``B`` rows, the annotator labels them (y+, y-), and each new row's discrepancy weight W_d
(Eq. 8) is fixed once: ``alpha`` where this model - the model of the iteration before the
row is trained on - predicts another class than y+, else 1. Seed rows carry gold labels,
weight 1 and no negatives. ``rounds = 10`` thus trains 11 models; round 10 has 550 rows.

Each fit holds out a seeded ``validation_fraction`` of the labelled rows, with the labels they
have (annotator labels beyond the seed set: no gold is used), for early stopping. The
negative-learning weight rises linearly from ``lambda_start`` (round 0) to ``lambda_end``
(round ``rounds``). With a :class:`~mollia_edge.store.Store`, each round's metrics and the rows
it annotated are committed together as the round ends; running the same run again returns
the recorded rounds and goes on after the last one.

An annotator may abstain on a row (y+ = -1, e.g. MoLAM below its confidence threshold): the
row is set aside - never trained on, never queried again, recorded with label -1 - and the
strategy is asked again for the rows still missing, at most ``config.top_up_queries`` times a
round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ActiveLearningConfig
from ..errors import ConfigError, DataError
from ..randomness import derived_seed
from ..store import Store
from .annotators import Annotator
from .classifier import MODES, OnnxClassifier
from .stopping import StoppingRule
from .strategies import make_strategy

_SET_ELSEWHERE = {
    "mode", "init_layers", "threads", "n_classes", "seed", "hidden", "learning_rate", "encoder_learning_rate",
    "epochs", "batch_size", "patience", "early_stopping", "length_buckets",
}
"""OnnxClassifier settings that ``classifier_options`` may not give (the config or the arguments do)."""

Progress = Callable[["RoundMetrics"], None]
"""Called with each round's metrics as the round ends."""


@dataclass(frozen=True)
class ActiveLearningTask:
    """The rows of one active-learning problem.

    ``inputs``: the classifier's inputs of all ``n`` rows, indexable by an index array - an
    array (n, D) in head mode, :class:`~mollia_edge.al.encoder.HiddenStates` in top-layers mode.
    ``pool`` (P,): rows the loop may label (seed rows included). ``gold`` (n,) int64: gold
    labels, -1 where unknown; required on the seed rows and the ``test`` rows (T,), which
    must lie outside the pool. Label noise is measured on queried rows whose gold is known.
    """

    inputs: Any
    pool: np.ndarray
    n_classes: int
    gold: np.ndarray
    test: np.ndarray | None = None


@dataclass(frozen=True)
class RoundMetrics:
    """One round: the model trained on ``labelled`` rows, and the batch it queried."""

    round: int
    labelled: int
    """Rows labelled when this round's model was trained (held-out rows included)."""
    lambda_nl: float
    best_epoch: int
    micro_f1: float | None
    """On the test rows; equals accuracy (one label per row). None without test rows."""
    macro_f1: float | None
    queried: int
    """Rows this round's model queried (0 in the last round)."""
    disagreed: int
    """Queried rows where this model predicted another class than the annotator's y+."""
    disagreed_wrong: int | None
    """Of those, rows whose y+ differs from gold (the discrepancy caught a wrong label)."""
    down_weighted: int
    """Queried rows given weight alpha (``disagreed``, or 0 without discrepancy weighting)."""
    label_noise: float | None
    """Share of the queried rows whose y+ differs from gold (None if gold is not known)."""
    negative_share: float | None
    """Share of the queried rows' label space (rows x K) marked negative and used."""
    false_negative_share: float | None
    """Share of that label space where the gold class is marked negative (paper Table 3)."""
    train_seconds: float
    evaluate_seconds: float
    query_seconds: float
    annotate_seconds: float
    abstained: int = 0
    """Rows the annotator abstained on this round (set aside; the query was topped up)."""
    stop_kappa: float | None = None
    """With a stopping rule: Cohen's kappa between this round's and the previous round's labels
    for the stop set (:mod:`~mollia_edge.al.stopping`)."""
    stopped: str | None = None
    """Why the loop stopped after this round, before ``rounds`` (None: it went on or ran out)."""


def negative_learning_weight(round_number: int, config: ActiveLearningConfig) -> float:
    """lambda of round ``round_number`` (0..rounds): linear from lambda_start to lambda_end, 0 without NL."""
    if not config.negative_learning:
        return 0.0
    share = round_number / config.rounds
    return config.lambda_start + (config.lambda_end - config.lambda_start) * share


def discrepancy_weights(predicted: np.ndarray, annotated: np.ndarray, alpha: float) -> np.ndarray:
    """W_d (n,) float32 (Eq. 8): ``alpha`` where ``predicted`` (n,) differs from ``annotated`` (n,), else 1."""
    return np.where(predicted != annotated, alpha, 1.0).astype(np.float32)


def f1_scores(gold: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(micro-F1, macro-F1) of ``predicted`` (n,) against ``gold`` (n,). Micro-F1 equals accuracy
    (one label per row); the macro mean runs over the classes present in gold or predictions."""
    micro = float(np.mean(predicted == gold))
    f1 = []
    for k in range(n_classes):
        true_pos = np.sum((predicted == k) & (gold == k))
        size = np.sum(predicted == k) + np.sum(gold == k)
        if size:
            f1.append(2 * true_pos / size)
    return micro, float(np.mean(f1))


def draw_seed_rows(pool: Any, size: int, seed: int) -> np.ndarray:
    """``size`` distinct rows (size,) int64 drawn from ``pool`` with ``seed``, sorted."""
    pool = np.asarray(pool, dtype=np.int64)
    if size > len(pool):
        raise ConfigError(f"cannot draw {size} seed rows from a pool of {len(pool)}")
    return np.sort(np.random.default_rng(derived_seed(seed, 0)).choice(pool, size=size, replace=False))


@dataclass
class LabelledSet:
    """The labelled rows in the order added: rows, labels, weights W_d and negatives (M, K)."""

    rows: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    negatives: np.ndarray

    def add(self, rows: np.ndarray, labels: np.ndarray, weights: np.ndarray, negatives: np.ndarray) -> None:
        self.rows = np.concatenate([self.rows, rows]).astype(np.int64)
        self.labels = np.concatenate([self.labels, labels]).astype(np.int64)
        self.weights = np.concatenate([self.weights, weights]).astype(np.float32)
        self.negatives = np.concatenate([self.negatives, negatives]).astype(bool)


def add_recorded_labels(store: Store, run_id: str, labelled: LabelledSet) -> np.ndarray:
    """Add the annotator labels recorded for run ``run_id`` to ``labelled``, in the order they
    were added; return the rows (m,) int64 the annotator abstained on (stored with label -1)."""
    recorded = store.al_labels(run_id)
    set_aside = np.array([row for row, _, label, _, _ in recorded if label < 0], np.int64)
    if given := [entry for entry in recorded if entry[2] >= 0]:
        rows, _, labels, weights, negatives = zip(*given)
        labelled.add(np.array(rows), np.array(labels), np.array(weights), np.stack(negatives))
    return set_aside


# ------------------------------------------------------------------------------ validation
def _index_array(name: str, value: Any, n_rows: int) -> np.ndarray:
    rows = np.asarray(value)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise DataError(f"{name} must be a 1-D array of integer row indices, got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise DataError(f"{name} must lie in 0..{n_rows - 1}, found {rows.min()}..{rows.max()}")
    if len(np.unique(rows)) != len(rows):
        raise DataError(f"{name} contains duplicate rows: list each row once")
    return rows.astype(np.int64)


def _check_task(task: ActiveLearningTask, seed_rows: np.ndarray, config: ActiveLearningConfig) -> None:
    gold = task.gold
    if task.n_classes < 2:
        raise ConfigError(f"n_classes must be at least 2, got {task.n_classes}")
    integer = gold.ndim == 1 and np.issubdtype(gold.dtype, np.integer)
    if not integer or np.any(gold >= task.n_classes) or np.any(gold < -1):
        raise DataError(f"gold must be (rows,) integer labels in -1..{task.n_classes - 1} (-1: unknown)")
    n_rows = len(gold)
    pool = _index_array("pool", task.pool, n_rows)
    seed_rows = _index_array("seed_rows", seed_rows, n_rows)
    if not np.all(np.isin(seed_rows, pool)):
        raise DataError("every seed row must be a pool row")
    if np.any(gold[seed_rows] < 0):
        raise DataError("every seed row needs a gold label (the seed set is labelled by a person)")
    needed = len(seed_rows) + config.rounds * config.query_size
    if needed > len(pool):
        raise ConfigError(
            f"{config.rounds} rounds of {config.query_size} queries after {len(seed_rows)} seed rows need a pool "
            f"of {needed} rows, it has {len(pool)}: lower al.rounds or al.query_size"
        )
    if task.test is not None:
        test = _index_array("test", task.test, n_rows)
        if np.any(np.isin(test, pool)):
            raise DataError("test rows must not be in the pool")
        if np.any(gold[test] < 0):
            raise DataError("every test row needs a gold label")


def _fingerprint(inputs: Any, n_rows: int) -> str:
    """sha256 of the inputs of up to 64 rows spread over the data set (cheap, catches a changed data set)."""
    sample = inputs[np.unique(np.linspace(0, n_rows - 1, num=min(n_rows, 64)).astype(np.int64))]
    digest = hashlib.sha256()
    for part in (sample,) if isinstance(sample, np.ndarray) else (sample.values, sample.mask):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _rows_digest(rows: np.ndarray | None) -> str | None:
    return None if rows is None else hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


# ------------------------------------------------------------------------------ the loop
def train_classifier(
    inputs: Any,
    labelled: LabelledSet,
    n_classes: int,
    lambda_nl: float,
    config: ActiveLearningConfig,
    classifier: Mapping[str, Any],
    split_seed: int,
    init_seed: int,
) -> OnnxClassifier:
    """A cold-started classifier fitted on the ``labelled`` rows of ``inputs``.

    A seeded ``config.validation_fraction`` slice of the rows (their labels as given: no gold
    beyond them) is held out for early stopping; with a single row there is none.
    ``classifier``: further :class:`OnnxClassifier` settings (mode, init_layers, threads...).
    """
    order = np.random.default_rng(split_seed).permutation(len(labelled.rows))
    n_val = min(len(order) - 1, max(1, round(config.validation_fraction * len(order))))
    fit, val = order[n_val:], order[:n_val]
    clf = OnnxClassifier(
        n_classes=n_classes, hidden=config.hidden, learning_rate=config.head_learning_rate,
        encoder_learning_rate=config.learning_rate, epochs=config.epochs, batch_size=config.batch_size,
        patience=config.head_patience if classifier.get("mode", "head") == "head" else config.patience,
        early_stopping=config.early_stopping, length_buckets=config.length_buckets,
        seed=init_seed, **classifier,
    )
    rows = labelled.rows
    validation = {"x_val": inputs[rows[val]], "y_val": labelled.labels[val]} if n_val else {}
    return clf.fit(
        inputs[rows[fit]], labelled.labels[fit], labelled.weights[fit],
        labelled.negatives[fit] if lambda_nl > 0 else None, lambda_nl, **validation,
    )


def _annotation(annotator: Annotator, rows: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The annotator's (y+ (n,), y- (n, K)) for ``rows``, checked."""
    positive, negatives = annotator.annotate(rows)
    positive, negatives = np.asarray(positive), np.asarray(negatives, dtype=bool)
    if positive.shape != rows.shape or np.any(positive < -1) or np.any(positive >= n_classes):
        raise DataError(
            f"annotator {annotator.name!r} must give one label in 0..{n_classes - 1} (or -1: abstains) per queried row"
        )
    if negatives.shape != (len(rows), n_classes):
        raise DataError(
            f"annotator {annotator.name!r} gave negatives of shape {negatives.shape}, not ({len(rows)}, {n_classes})"
        )
    return positive.astype(np.int64), negatives


class _RowIndex:
    """A data set whose item for an index array is the array itself (see :class:`_RoundOutputs`)."""

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.asarray(rows, dtype=np.int64)


class _RoundOutputs:
    """One round's classifier, asked with row indices (``_RowIndex()`` as the data set): every
    output is computed once per row of ``inputs`` (``n_rows`` rows), so the round's top-up
    queries reuse them. MC-dropout samples are drawn from the cached head features; weight-noise
    outputs are kept per row like the others, so every query of the round sees the perturbed
    models of its first one (seeded by it)."""

    def __init__(self, clf: OnnxClassifier, inputs: Any, n_rows: int) -> None:
        self.clf, self.inputs, self.n_rows, self.n_classes_ = clf, inputs, n_rows, clf.n_classes_
        self._values: dict[Any, np.ndarray] = {}
        self._known: dict[Any, np.ndarray] = {}
        self._seeds: dict[Any, int] = {}

    def _cached(self, key: Any, rows: np.ndarray, compute: Callable[[Any], np.ndarray]) -> np.ndarray:
        known = self._known.setdefault(key, np.zeros(self.n_rows, bool))
        if len(missing := rows[~known[rows]]):
            computed = np.asarray(compute(self.inputs[missing]))
            if key not in self._values:
                self._values[key] = np.empty((self.n_rows, *computed.shape[1:]), computed.dtype)
            self._values[key][missing] = computed
            known[missing] = True
        return self._values[key][rows]

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self._cached("predict_proba", rows, self.clf.predict_proba)

    def hidden(self, rows: np.ndarray) -> np.ndarray:
        return self._cached("hidden", rows, self.clf.hidden)

    def posterior_samples(self, rows: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        return self.clf.samples_from_features(self.hidden(rows), n_samples, seed)

    def noisy_proba(self, rows: np.ndarray, noise_scale: float, n_draws: int, seed: int) -> np.ndarray:
        key = ("noisy_proba", noise_scale, n_draws)
        seed = self._seeds.setdefault(key, seed)  # the same perturbed models for every row

        def per_row(x: Any) -> np.ndarray:  # (n, D, K), so rows can be cached
            return self.clf.noisy_proba(x, noise_scale, n_draws, seed).transpose(1, 0, 2)

        return self._cached(key, rows, per_row).transpose(1, 0, 2)


@dataclass
class _Batch:
    """One round's queried rows the annotator labelled, and the rows it abstained on."""

    rows: np.ndarray
    positive: np.ndarray
    negatives: np.ndarray
    abstained: np.ndarray
    query_seconds: float = 0.0
    annotate_seconds: float = 0.0

    @classmethod
    def empty(cls, n_classes: int) -> _Batch:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.zeros((0, n_classes), bool), np.empty(0, np.int64))


def _query_batch(
    query: Any, clf: OnnxClassifier, task: ActiveLearningTask, labelled: LabelledSet, set_aside: np.ndarray,
    annotator: Annotator, config: ActiveLearningConfig,
) -> _Batch:
    """Query ``config.query_size`` rows and annotate them; rows the annotator abstains on are set
    aside and the strategy is asked again for the missing rows (``config.top_up_queries`` times
    at most), on the model outputs its first query computed."""
    k = task.n_classes
    batch = _Batch.empty(k)
    outputs = _RoundOutputs(clf, task.inputs, len(task.gold))
    for _ in range(1 + config.top_up_queries):
        missing = config.query_size - len(batch.rows)
        taken = np.concatenate([labelled.rows, batch.rows, batch.abstained, set_aside])
        unlabelled = np.setdiff1d(task.pool, taken)
        if missing == 0 or len(unlabelled) == 0:
            break
        started = time.perf_counter()
        rows = query.query(
            outputs, _RowIndex(), unlabelled, np.concatenate([labelled.rows, batch.rows]),
            np.concatenate([labelled.labels, batch.positive]), min(missing, len(unlabelled)),
        )
        batch.query_seconds += time.perf_counter() - started
        started = time.perf_counter()
        positive, negatives = _annotation(annotator, rows, k)
        batch.annotate_seconds += time.perf_counter() - started
        given = positive >= 0
        batch.rows = np.concatenate([batch.rows, rows[given]])
        batch.positive = np.concatenate([batch.positive, positive[given]])
        batch.negatives = np.concatenate([batch.negatives, negatives[given]])
        batch.abstained = np.concatenate([batch.abstained, rows[~given]])
    return batch


def _data_digest(task: ActiveLearningTask, seed_rows: np.ndarray) -> dict[str, Any]:
    """What identifies a run's data in its settings: sizes and digests of the rows and inputs."""
    n = len(task.gold)
    return {"n_classes": task.n_classes, "rows": n, "pool": _rows_digest(task.pool), "test": _rows_digest(task.test),
            "seed_rows": _rows_digest(seed_rows), "inputs": _fingerprint(task.inputs, n)}


def _test_f1(clf: Any, task: ActiveLearningTask) -> tuple[float | None, float | None]:
    """(micro-F1, macro-F1) of the classifier on the task's test rows (None without them)."""
    if task.test is None:
        return None, None
    return f1_scores(np.asarray(task.gold)[task.test], clf.predict(task.inputs[task.test]), task.n_classes)


def _checked_options(classifier_options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(classifier_options or {})
    if clash := set(options) & _SET_ELSEWHERE:
        raise ConfigError(f"classifier_options must not set {sorted(clash)}: the config or the arguments set them")
    return options


def _record_round(store: Store, run_id: str, metrics: RoundMetrics, batch: _Batch, weights: np.ndarray,
                  negatives: np.ndarray) -> None:
    """A round's metrics and labels (abstained rows as label -1, weight 0), in one commit."""
    aside = [(row, -1, 0.0, np.zeros(negatives.shape[1], bool)) for row in batch.abstained]
    added = [*zip(batch.rows, batch.positive, weights, negatives), *aside]
    store.put_al_round(run_id, metrics.round, dataclasses.asdict(metrics), added)


def _weigh_batch(clf: Any, task: ActiveLearningTask, batch: _Batch,
                 config: ActiveLearningConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(negatives (b, K), discrepancy weights (b,), classifier disagrees (b,)) of a queried batch."""
    negatives = batch.negatives
    if not len(batch.rows):
        return negatives, np.empty(0, np.float32), np.zeros(0, bool)
    if not config.negative_learning:
        negatives = np.zeros_like(negatives)
    predicted = clf.predict(task.inputs[batch.rows])
    alpha = config.alpha if config.discrepancy_weighting else 1.0
    return negatives, discrepancy_weights(predicted, batch.positive, alpha), predicted != batch.positive


def _round_metrics(round_number: int, labelled: int, clf: Any, batch: _Batch, negatives: np.ndarray,
                   weights: np.ndarray, disagree: np.ndarray, gold: np.ndarray, config: ActiveLearningConfig,
                   f1: tuple[float | None, float | None], seconds: tuple[float, float]) -> RoundMetrics:
    """One round's metrics; the label-noise figures only where gold is known for the whole batch."""
    new_rows, positive, k = batch.rows, batch.positive, negatives.shape[1]
    measurable = len(new_rows) > 0 and bool(np.all(gold[new_rows] >= 0))
    wrong = positive != gold[new_rows]
    gold_negative = negatives[np.arange(len(new_rows)), gold[new_rows]] if measurable else None
    return RoundMetrics(
        round=round_number,
        labelled=labelled,
        lambda_nl=negative_learning_weight(round_number, config),
        best_epoch=int(clf.best_epoch_),
        micro_f1=f1[0],
        macro_f1=f1[1],
        queried=len(new_rows),
        disagreed=int(disagree.sum()),
        disagreed_wrong=int((disagree & wrong).sum()) if measurable else None,
        down_weighted=int(np.sum(weights < 1)),
        label_noise=float(wrong.mean()) if measurable else None,
        negative_share=float(negatives.mean()) if len(new_rows) else None,
        false_negative_share=float(gold_negative.sum() / (len(new_rows) * k)) if measurable else None,
        train_seconds=seconds[0],
        evaluate_seconds=seconds[1],
        query_seconds=batch.query_seconds,
        annotate_seconds=batch.annotate_seconds,
        abstained=len(batch.abstained),
    )


def _recorded_rounds(store: Store, run_id: str, settings: dict[str, Any], labelled: LabelledSet,
                     stopping: StoppingRule | None) -> tuple[list[RoundMetrics], np.ndarray]:
    """Begin (or find) the run: its recorded rounds, their labels added to ``labelled``, the rows
    set aside so far; the stopping rule charged with the LLM time already spent."""
    store.begin_al_run(run_id, settings)
    results = [RoundMetrics(**metrics) for metrics in store.al_rounds(run_id)]
    set_aside = add_recorded_labels(store, run_id, labelled)
    if stopping is not None:
        stopping.spend(sum(m.annotate_seconds for m in results))
    return results, set_aside


def _train_and_test(task: ActiveLearningTask, labelled: LabelledSet, round_number: int, config: ActiveLearningConfig,
                    classifier: Mapping[str, Any], seed: int) -> tuple[Any, tuple[float | None, float | None],
                                                                       tuple[float, float]]:
    """Round ``round_number``'s classifier, its test F1s and (train, evaluate) seconds."""
    started = time.perf_counter()
    clf = train_classifier(
        task.inputs, labelled, task.n_classes, negative_learning_weight(round_number, config), config, classifier,
        derived_seed(seed, round_number, 1), derived_seed(seed, round_number, 2),
    )
    trained = time.perf_counter()
    f1 = _test_f1(clf, task)
    return clf, f1, (trained - started, time.perf_counter() - trained)


def _stop_check(stopping: StoppingRule | None, clf: Any, task: ActiveLearningTask,
                more_rounds: bool) -> tuple[float | None, str | None]:
    """(kappa of this round's stop-set labels with the last round's, why the loop stops now)."""
    if stopping is None:
        return None, None
    kappa = stopping.observe(clf.predict(task.inputs[stopping.rows]))
    return kappa, stopping.reason() if more_rounds else None


def run_active_learning(
    task: ActiveLearningTask,
    annotator: Annotator,
    strategy: str,
    *,
    config: ActiveLearningConfig | None = None,
    seed: int = 50,
    seed_rows: Any = None,
    mode: str = "head",
    init_layers: Mapping[str, np.ndarray] | None = None,
    threads: int = 1,
    classifier_options: Mapping[str, Any] | None = None,
    store: Store | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    stopping: StoppingRule | None = None,
) -> list[RoundMetrics]:
    """Run Algorithm 1 for rounds 0..``config.rounds`` and return each round's metrics.

    ``strategy``: a name from :data:`~mollia_edge.al.strategies.STRATEGIES`. ``seed_rows``
    (default: ``config.seed_size`` pool rows drawn by :func:`draw_seed_rows` with ``seed``) get
    their gold labels. ``mode``/``init_layers``/``threads`` go to :class:`OnnxClassifier`, with
    ``classifier_options`` (further :class:`OnnxClassifier` settings, e.g. ``dropout``).
    With a ``store`` the run is recorded under ``run_id`` (default: a hash of every setting and
    a fingerprint of the data); recorded rounds are returned as they are and the run goes on
    after them. Everything is deterministic for a given ``seed``. With ``stopping`` the loop
    ends after the round where its rule says so (a resumed run starts its kappas afresh).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    config = (config or ActiveLearningConfig()).for_mode(mode)
    if annotator.n_classes != task.n_classes:
        raise ConfigError(f"annotator {annotator.name!r} has {annotator.n_classes} classes, the task {task.n_classes}")
    gold = np.asarray(task.gold)
    task = dataclasses.replace(task, gold=gold)
    seed_rows = draw_seed_rows(task.pool, config.seed_size, seed) if seed_rows is None else np.asarray(seed_rows)
    _check_task(task, seed_rows, config)
    query = make_strategy(strategy, seed)
    options = _checked_options(classifier_options)
    classifier = {"mode": mode, "init_layers": init_layers, "threads": threads, **options}
    labelled = LabelledSet(seed_rows.astype(np.int64), gold[seed_rows], np.ones(len(seed_rows), np.float32),
                           np.zeros((len(seed_rows), task.n_classes), bool))

    results: list[RoundMetrics] = []
    set_aside = np.empty(0, np.int64)
    if store is not None:
        settings = {
            "config": dataclasses.asdict(config), "strategy": strategy, "annotator": annotator.name, "seed": seed,
            "mode": mode, "init_layers": sorted(init_layers or ()), **_data_digest(task, seed_rows),
            **({"classifier_options": options} if options else {}),  # run ids recorded without options stay valid
        }
        run_id = run_id or "al-" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        results, set_aside = _recorded_rounds(store, run_id, settings, labelled, stopping)
        if any(m.stopped for m in results):
            return results

    for round_number in range(len(results), config.rounds + 1):
        clf, f1, seconds = _train_and_test(task, labelled, round_number, config, classifier, seed)
        kappa, stopped = _stop_check(stopping, clf, task, round_number < config.rounds)
        batch = _Batch.empty(task.n_classes)
        if round_number < config.rounds and not stopped:
            batch = _query_batch(query, clf, task, labelled, set_aside, annotator, config)
            if stopping is not None:
                stopping.spend(batch.annotate_seconds)
        negatives, weights, disagree = _weigh_batch(clf, task, batch, config)
        metrics = dataclasses.replace(
            _round_metrics(round_number, len(labelled.rows), clf, batch, negatives, weights, disagree, gold,
                           config, f1, seconds), stop_kappa=kappa, stopped=stopped)
        if store is not None:
            _record_round(store, run_id, metrics, batch, weights, negatives)
        labelled.add(batch.rows, batch.positive, weights, negatives)
        set_aside = np.concatenate([set_aside, batch.abstained])
        results.append(metrics)
        if progress is not None:
            progress(metrics)
        if stopped:
            break
    return results
