"""MoLAM: the mixture-of-LLMs annotation model (paper Eqs. 4-6) and its honest baselines.

Shapes used throughout: ``n`` rows, ``N`` annotators (LLMs), ``K`` classes.

* :func:`molam_features` builds h(x) = [z_1, c_1, ..., z_N, c_N] from label scores and
  consistency, each of shape (n, N, K).
* :func:`negative_labels` marks the classes every annotator (or their mean) rules out.
* Baselines, each returning probabilities (n, K): :func:`vote`, :func:`score_average`,
  :func:`single`, :func:`dawid_skene` (needs no seed labels).
* :class:`MoLAM`: XGBoost ``multi:softprob`` on the seed rows plus pseudo-labelling, with an
  optional base margin (log of an ensemble's probabilities) so boosting starts from it.
* :func:`select_molam`: picks candidate settings by stratified k-fold cross-validation on the
  seed rows only (the reference code's selection by gold accuracy on the pool is leakage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import fit_temperature, row_log_losses, temper
from .config import MolamConfig
from .cpus import usable_cpus
from .errors import ConfigError, DataError
from .folds import fold_ids

_EPS = 1e-12


# ----------------------------------------------------------------------------- validation
def _array3(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3:
        raise DataError(f"{name} must have shape (rows, annotators, classes), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{name} must have at least one row and one annotator, got shape {arr.shape}")
    if arr.shape[2] < 2:
        raise DataError(f"{name} must have at least 2 classes (last axis), got {arr.shape[2]}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or infinite values: replace them (e.g. with 0) first")
    if np.any(arr < 0):
        raise DataError(f"{name} must be non-negative (probabilities or shares), found {arr.min():g}")
    return arr


def _features2(name: str, value: Any, n_features: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (rows, features), got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise DataError(f"{name} has no rows: pass at least one row")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(
            f"{name} has {arr.shape[1]} feature columns but the model was fitted on {n_features}: "
            "build the features the same way for both"
        )
    if np.any(np.isnan(arr)):
        raise DataError(f"{name} contains NaN values: replace them before fitting or predicting")
    return arr


def _check_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise ConfigError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if n_classes < 2:
        raise ConfigError(f"n_classes must be >= 2 (a label set needs at least 2 classes), got {n_classes}")
    return int(n_classes)


def _labels(name: str, value: Any, n_rows: int, n_classes: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise DataError(f"{name} must have shape ({n_rows},) to match the feature rows, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError(f"{name} must hold integer class indices 0..{n_classes - 1}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if np.any(bad):
        raise DataError(
            f"{name} has labels out of range [0, {n_classes}): e.g. {arr[bad][:5].tolist()}; "
            "map labels to 0..n_classes-1 or raise n_classes"
        )
    return arr


def _margin(name: str, value: Any, n_rows: int, n_classes: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n_rows, n_classes):
        raise DataError(f"{name} must have shape ({n_rows}, {n_classes}) (rows, classes), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} must be finite: use log(clip(probabilities, 1e-6, 1)), not log(0)")
    return arr


def _class_probabilities(name: str, value: Any, n_rows: int, n_classes: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n_rows, n_classes):
        raise DataError(f"{name} must have shape ({n_rows}, {n_classes}) (rows, classes), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"{name} must hold finite, non-negative probabilities")
    return arr


def _normalise(scores: np.ndarray) -> np.ndarray:
    """Scores (..., K) divided by their row sum; an all-zero row becomes uniform."""
    total = scores.sum(axis=-1, keepdims=True)
    k = scores.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, scores / np.where(total > 0, total, 1.0), 1.0 / k)
    return out


def log_margin(probabilities: Any, floor: float = 1e-4) -> np.ndarray:
    """Base margin (n, K) for :class:`MoLAM`: log of probabilities (n, K) clipped below at ``floor``."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise DataError(f"probabilities must have shape (rows, classes), got {p.shape}")
    return np.log(np.clip(p, floor, 1.0))


# ----------------------------------------------------------------------------- features
def molam_features(scores: Any, consistency: Any, invalid: Any = None) -> np.ndarray:
    """h(x) of paper Eq. 4.

    scores, consistency: (n, N, K) label scores z and consistency shares c of N annotators.
    invalid: optional (n, N) share of each annotator's sampled answers that were no label.
    Returns (n, 2*N*K) = [z_1, c_1, ..., z_N, c_N]; with ``invalid`` given, (n, 2*N*K + 2*N):
    the paper's columns followed by, per annotator, [invalid share, entropy of its
    normalised scores]. Leave ``invalid`` out to reproduce the paper exactly.
    """
    scores = _array3("scores", scores)
    c = _array3("consistency", consistency)
    if scores.shape != c.shape:
        raise DataError(f"scores {scores.shape} and consistency {c.shape} must have the same shape (n, N, K)")
    n, n_ann, k = scores.shape
    out = np.concatenate([scores, c], axis=2).reshape(n, 2 * n_ann * k)
    if invalid is None:
        return out
    inv = np.asarray(invalid, dtype=np.float64)
    if inv.shape != (n, n_ann):
        raise DataError(f"invalid must have shape ({n}, {n_ann}) (rows, annotators), got {inv.shape}")
    if not np.all(np.isfinite(inv)) or np.any(inv < 0) or np.any(inv > 1):
        raise DataError("invalid must hold shares in [0, 1]")
    p = _normalise(scores)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=2)
    extra = np.stack([inv, entropy], axis=2).reshape(n, 2 * n_ann)
    return np.concatenate([out, extra], axis=1)


def split_meta(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """The paper's recorded ``*_meta_x.npy`` (n, 2*N, K) as (scores, consistency), each (n, N, K)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] % 2:
        raise DataError(f"meta features must have shape (rows, 2*annotators, classes), got {arr.shape}")
    return arr[:, 0::2], arr[:, 1::2]


def negative_labels(scores: Any, delta: float = 0.001, rule: str = "every") -> np.ndarray:
    """Negative labels y- (paper Eq. 5): bool (n, K), True where the class is ruled out.

    scores: (n, N, K). ``rule="every"``: every annotator's score < delta (the paper);
    ``rule="mean"``: the mean over annotators <= delta (the reference code). A row on which
    every label would be ruled out (the LLMs put their mass on no label at all) rules out none:
    that is no evidence against any one label.
    """
    scores = _array3("scores", scores)
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if rule == "every":
        out = np.all(scores < delta, axis=1)
    elif rule == "mean":
        out = scores.mean(axis=1) <= delta
    else:
        raise ConfigError(f"rule must be 'every' or 'mean', got {rule!r}")
    out[out.all(axis=1)] = False
    return out


# ----------------------------------------------------------------------------- baselines
def score_average(scores: Any) -> np.ndarray:
    """Score-average ensemble: mean over annotators of each one's row-normalised scores (n, N, K) -> (n, K)."""
    return _normalise(_array3("scores", scores)).mean(axis=1)


def single(scores: Any, i: int) -> np.ndarray:
    """Annotator ``i`` alone: its row-normalised scores, (n, N, K) -> (n, K)."""
    scores = _array3("scores", scores)
    if not -scores.shape[1] <= i < scores.shape[1]:
        raise DataError(f"annotator index {i} out of range: there are {scores.shape[1]} annotators")
    return _normalise(scores[:, i])


def vote(consistency: Any, scores: Any = None) -> np.ndarray:
    """Vote ensemble: sum over annotators of consistency (n, N, K), normalised -> (n, K).

    With equal consistency the majority is the class of all annotators' samples pooled; ties
    go to the higher score average (``scores`` (n, N, K) if given, else uniform). A row with
    no valid sample at all gets the score average (or uniform).
    """
    c = _array3("consistency", consistency)
    total = c.sum(axis=1)
    if scores is not None:
        scores = _array3("scores", scores)
        if scores.shape != c.shape:
            raise DataError(f"scores {scores.shape} and consistency {c.shape} must have the same shape")
        tie = score_average(scores)
    else:
        tie = np.full(total.shape, 1.0 / total.shape[1])
    # tie-break below the smallest vote step (1/T with T <= 1e4 samples)
    votes = total + 1e-6 * tie
    return np.where(total.sum(axis=1, keepdims=True) > 0, _normalise(votes), tie)


def _soft_labels(labels: Any, k: int) -> np.ndarray:
    """Soft votes (n, N, K) from soft votes (n, N, K) or hard labels (n, N) with -1 for no answer."""
    arr = np.asarray(labels)
    if arr.ndim == 2:
        hard = arr.astype(np.int64)
        if np.any((hard < -1) | (hard >= k)):
            raise DataError(f"hard labels must be in [0, {k}) or -1 for no answer")
        soft = np.zeros(hard.shape + (k,))
        rows, anns = np.nonzero(hard >= 0)
        soft[rows, anns, hard[rows, anns]] = 1.0
        return soft
    soft = _array3("labels", arr)
    if soft.shape[2] != k:
        raise DataError(f"labels have {soft.shape[2]} classes on the last axis but n_classes is {k}")
    return soft


class DawidSkene:
    """Dawid-Skene EM label model; needs no seed labels.

    ``fit(labels)`` estimates class priors ``prior_`` (K,) and per-annotator confusion
    matrices ``confusion_`` (N, K true, K given) from soft votes (n, N, K) such as
    consistency shares, or hard labels (n, N) with -1 for "no answer"; ``predict_proba``
    gives class posteriors (n, K) for any rows. Initialised from the pooled vote; ``seed``
    only breaks exact ties in that start, so results are deterministic for a seed.
    ``evidence`` multiplies soft votes: 1 treats an annotator's shares as one vote (measured
    best on the paper's recorded outputs, though EM then drifts towards flatter confusion
    matrices); T, the number of samples behind consistency shares, makes the likelihood that
    of T independent answers.
    """

    def __init__(
        self, n_classes: int, iterations: int = 50, seed: int = 50, smoothing: float = 0.01, evidence: float = 1.0
    ) -> None:
        self.n_classes = n_classes
        self.evidence = evidence
        self.iterations = iterations
        self.seed = seed
        self.smoothing = smoothing

    def fit(self, labels: Any) -> DawidSkene:
        k = _check_classes(self.n_classes)
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if not self.evidence > 0:
            raise ConfigError(f"evidence must be > 0, got {self.evidence}")
        soft = _soft_labels(labels, k) * self.evidence
        rng = np.random.default_rng(self.seed)
        post = _normalise(soft.sum(axis=1) + 1e-9 * rng.random((soft.shape[0], k)))
        for _ in range(self.iterations):
            # M step: class priors and per-annotator confusion matrices conf[j, true, given]
            self.prior_ = (post.sum(axis=0) + self.smoothing) / (post.shape[0] + k * self.smoothing)
            conf = np.einsum("nt,njg->jtg", post, soft) + self.smoothing
            self.confusion_ = conf / conf.sum(axis=2, keepdims=True)
            new = self._posterior(soft)
            converged = np.max(np.abs(new - post)) < 1e-7
            post = new
            if converged:
                break
        return self

    def _posterior(self, soft: np.ndarray) -> np.ndarray:
        log_post = np.log(self.prior_)[None, :] + np.einsum("njg,jtg->nt", soft, np.log(self.confusion_))
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        return post / post.sum(axis=1, keepdims=True)

    def predict_proba(self, labels: Any) -> np.ndarray:
        """Class posteriors (n, K) for soft votes (n, N, K) or hard labels (n, N)."""
        if not hasattr(self, "confusion_"):
            raise ConfigError("this DawidSkene is not fitted yet: call fit(labels) first")
        soft = _soft_labels(labels, int(self.n_classes)) * self.evidence
        if soft.shape[1] != self.confusion_.shape[0]:
            raise DataError(f"labels come from {soft.shape[1]} annotators, the model was fitted on {self.confusion_.shape[0]}")
        return self._posterior(soft)


def dawid_skene(
    labels: Any, n_classes: int, iterations: int = 50, seed: int = 50, smoothing: float = 0.01
) -> np.ndarray:
    """Class posteriors (n, K) of :class:`DawidSkene` fitted on the same labels (n, N, K) or (n, N)."""
    return DawidSkene(n_classes, iterations, seed, smoothing).fit(labels).predict_proba(labels)


# ----------------------------------------------------------------------------- MoLAM
class MoLAM:
    """XGBoost ``multi:softprob`` annotation model with pseudo-labelling (paper Eq. 6).

    ``fit`` trains on the seed rows, then repeatedly adds unlabelled rows whose highest
    probability exceeds ``sigma`` (with their argmax label; a row keeps its first label),
    refitting from scratch, until no row is added or ``max_pseudo_rounds`` is reached.
    ``min_new_share`` > 0 stops earlier, when a round would add fewer than that share of the
    unlabelled rows: the tail rounds that add a handful of rows each cost a full refit
    (0 reproduces the paper's "until no row is added").
    ``nthread`` None: 1 thread below 2,000 training rows, else 2.
    A base margin (n, K), e.g. :func:`log_margin` of :func:`score_average`, makes boosting
    start from an ensemble; it must then also be given to :meth:`predict_proba`.

    Fitted attributes: ``booster_`` (xgboost.Booster), ``n_classes_``, ``n_features_in_``,
    ``pseudo_rows_`` (indices into the unlabelled rows, in the order added),
    ``pseudo_labels_`` (their labels), ``pseudo_counts_`` (rows added per round),
    ``uses_base_margin_``.
    """

    def __init__(
        self,
        *,
        learning_rate: float = 0.05,
        max_depth: int = 3,
        n_estimators: int = 300,
        sigma: float = 0.9,
        max_pseudo_rounds: int = 100,
        pseudo_label: bool = True,
        reg_lambda: float = 1.0,
        min_child_weight: float = 1.0,
        subsample: float = 1.0,
        seed: int = 50,
        min_new_share: float = 0.002,
        max_bin: int = 64,
        nthread: int | None = None,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.sigma = sigma
        self.max_pseudo_rounds = max_pseudo_rounds
        self.pseudo_label = pseudo_label
        self.reg_lambda = reg_lambda
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.seed = seed
        self.min_new_share = min_new_share
        self.max_bin = max_bin
        self.nthread = nthread

    def _validate_params(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (isinstance(self.max_depth, (int, np.integer)) and self.max_depth >= 1):
            raise ConfigError(f"max_depth must be an integer >= 1, got {self.max_depth}")
        if not (isinstance(self.n_estimators, (int, np.integer)) and self.n_estimators >= 1):
            raise ConfigError(f"n_estimators must be an integer >= 1, got {self.n_estimators}")
        if not 0 < self.sigma < 1:
            raise ConfigError(f"sigma must be in (0, 1), got {self.sigma}")
        if not (isinstance(self.max_pseudo_rounds, (int, np.integer)) and self.max_pseudo_rounds >= 0):
            raise ConfigError(f"max_pseudo_rounds must be an integer >= 0, got {self.max_pseudo_rounds}")
        if self.reg_lambda < 0 or self.min_child_weight < 0:
            raise ConfigError("reg_lambda and min_child_weight must be >= 0")
        if not 0 <= self.min_new_share < 1:
            raise ConfigError(f"min_new_share must be in [0, 1), got {self.min_new_share}")
        if not (isinstance(self.max_bin, (int, np.integer)) and self.max_bin >= 2):
            raise ConfigError(f"max_bin must be an integer >= 2, got {self.max_bin}")
        if self.nthread is not None and not (isinstance(self.nthread, (int, np.integer)) and self.nthread >= 1):
            raise ConfigError(f"nthread must be None (automatic) or an integer >= 1, got {self.nthread}")
        if not 0 < self.subsample <= 1:
            raise ConfigError(f"subsample must be in (0, 1], got {self.subsample}")

    def _threads(self, n_rows: int) -> int:
        if self.nthread is not None:
            return int(self.nthread)
        # one thread is fastest on seed-sized data; two pay off from a few thousand rows
        return 1 if n_rows < 2000 else min(2, usable_cpus())

    def _xgb_params(self, n_classes: int, n_rows: int) -> dict[str, Any]:
        return {
            "objective": "multi:softprob",
            "num_class": n_classes,
            "eta": float(self.learning_rate),
            "max_depth": int(self.max_depth),
            "lambda": float(self.reg_lambda),
            "min_child_weight": float(self.min_child_weight),
            "subsample": float(self.subsample),
            "tree_method": "hist",
            "max_bin": int(self.max_bin),
            "nthread": self._threads(n_rows),
            "seed": int(self.seed),
            "verbosity": 0,
        }

    def _train(self, x: np.ndarray, y: np.ndarray, margin: np.ndarray | None) -> Any:
        import xgboost as xgb

        dtrain = xgb.DMatrix(x, label=y, nthread=self._threads(x.shape[0]))
        if margin is not None:
            dtrain.set_base_margin(margin.reshape(-1))
        params = self._xgb_params(self.n_classes_, x.shape[0])
        if margin is not None:
            params["base_score"] = 0.5  # start exactly from the margin, no fitted intercept
        return xgb.train(params, dtrain, num_boost_round=int(self.n_estimators))

    def _proba(self, booster: Any, x: np.ndarray, margin: np.ndarray | None) -> np.ndarray:
        import xgboost as xgb

        d = xgb.DMatrix(x, nthread=self._threads(x.shape[0]))
        if margin is not None:
            d.set_base_margin(margin.reshape(-1))
        p = booster.predict(d).reshape(x.shape[0], self.n_classes_).astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def fit(
        self,
        features_seed: Any,
        y_seed: Any,
        features_unlabelled: Any = None,
        n_classes: int | None = None,
        base_margin_seed: Any = None,
        base_margin_unlabelled: Any = None,
    ) -> MoLAM:
        """Fit on seed rows (n_s, F) with labels (n_s,) in [0, K), pseudo-labelling (n_u, F).

        ``n_classes`` K defaults to max(y_seed) + 1; pass it when classes may be absent from
        the seeds. Base margins: (n_s, K) and (n_u, K), both or neither.
        """
        self._validate_params()
        xs = _features2("features_seed", features_seed)
        if n_classes is None:
            y_raw = np.asarray(y_seed)
            n_classes = int(y_raw.max()) + 1 if y_raw.size and np.issubdtype(y_raw.dtype, np.number) else 0
            n_classes = max(n_classes, 2)
        k = _check_classes(n_classes)
        ys = _labels("y_seed", y_seed, xs.shape[0], k)
        xu = None
        if features_unlabelled is not None:
            xu = _features2("features_unlabelled", features_unlabelled, xs.shape[1])
        ms = _margin("base_margin_seed", base_margin_seed, xs.shape[0], k)
        mu = None
        if xu is not None:
            mu = _margin("base_margin_unlabelled", base_margin_unlabelled, xu.shape[0], k)
        if (ms is None) != (mu is None) and xu is not None and self.pseudo_label:
            raise DataError("give base_margin_seed and base_margin_unlabelled together, or neither")
        self.n_classes_ = k
        self.n_features_in_ = xs.shape[1]
        self.uses_base_margin_ = ms is not None
        self.booster_ = self._train(xs, ys, ms)
        added = np.zeros(0, dtype=np.int64)
        labels = np.zeros(0, dtype=np.int64)
        counts: list[int] = []
        if self.pseudo_label and xu is not None and self.max_pseudo_rounds > 0:
            taken = np.zeros(xu.shape[0], dtype=bool)
            min_new = max(1, int(np.ceil(self.min_new_share * xu.shape[0])))
            for _ in range(int(self.max_pseudo_rounds)):
                p = self._proba(self.booster_, xu, mu)
                new = np.flatnonzero(~taken & (p.max(axis=1) > self.sigma))
                counts.append(int(new.size))
                if new.size < min_new:
                    break
                taken[new] = True
                added = np.concatenate([added, new])
                labels = np.concatenate([labels, p[new].argmax(axis=1)])
                x_all = np.concatenate([xs, xu[added]])
                y_all = np.concatenate([ys, labels])
                m_all = None if ms is None else np.concatenate([ms, mu[added]])
                self.booster_ = self._train(x_all, y_all, m_all)
        self.pseudo_rows_ = added
        self.pseudo_labels_ = labels
        self.pseudo_counts_ = counts
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ConfigError("this MoLAM is not fitted yet: call fit(...) first")

    def predict_proba(self, features: Any, base_margin: Any = None) -> np.ndarray:
        """Class probabilities (n, K) for features (n, F); each row sums to 1."""
        self._check_fitted()
        x = _features2("features", features, self.n_features_in_)
        m = _margin("base_margin", base_margin, x.shape[0], self.n_classes_)
        if self.uses_base_margin_ and m is None:
            raise DataError("this MoLAM was fitted with a base margin: pass base_margin for these rows too")
        if not self.uses_base_margin_ and m is not None:
            raise DataError("this MoLAM was fitted without a base margin: do not pass one to predict")
        return self._proba(self.booster_, x, m)

    def predict(self, features: Any, base_margin: Any = None) -> np.ndarray:
        """Most probable class (n,) for features (n, F)."""
        return self.predict_proba(features, base_margin).argmax(axis=1)


_PARAM_NAMES = (
    "learning_rate",
    "max_depth",
    "n_estimators",
    "sigma",
    "max_pseudo_rounds",
    "pseudo_label",
    "reg_lambda",
    "min_child_weight",
    "subsample",
    "seed",
    "min_new_share",
    "max_bin",
    "nthread",
)


# ----------------------------------------------------------------------------- selection
@dataclass
class SelectedMoLAM:
    """The result of :func:`select_molam`: the refitted winner and how to build its base margin.

    ``base`` names the ensemble the winner boosts from (None: no base margin), softened or
    sharpened by ``base_temperature`` fitted on the seed rows; ``temperature`` softens the
    output (calibration); ``cv_scores`` holds each candidate's cross-validated log-loss on
    the seed rows (lower is better).
    """

    model: MoLAM
    candidate: dict[str, Any]
    base: str | None
    base_temperature: float
    temperature: float
    cv_scores: list[float]

    def describe(self) -> list[dict[str, Any]]:
        """The one member: its base ensemble, trees and weight 1 (for the report)."""
        return [{"base": self.base, "trees": self.candidate.get("n_estimators"), "weight": 1.0}]

    def predict_proba(self, features: Any, ensembles: Mapping[str, Any] | None = None) -> np.ndarray:
        """Calibrated class probabilities (n, K); ``ensembles`` maps names to probabilities (n, K)."""
        p = self.model.predict_proba(features, _base_margin(self.base, ensembles, self.base_temperature))
        return temper(p, self.temperature)


@dataclass
class StackedMoLAM:
    """Several refitted candidates, their probabilities mixed with simplex ``weights`` fitted on
    their calibrated out-of-fold predictions on the seed rows (:func:`stack_weights`)."""

    members: list[SelectedMoLAM]
    weights: np.ndarray
    """(len(members),) non-negative, summing to 1."""
    cv_scores: list[float]
    """Every candidate's cross-validated log-loss on the seed rows (members or not)."""

    def predict_proba(self, features: Any, ensembles: Mapping[str, Any] | None = None) -> np.ndarray:
        """Class probabilities (n, K): the weighted mean of the members' probabilities."""
        return sum(w * m.predict_proba(features, ensembles) for w, m in zip(self.weights, self.members))

    def describe(self) -> list[dict[str, Any]]:
        """Each member's base ensemble, trees and weight (for the report)."""
        return [{"base": m.base, "trees": m.candidate.get("n_estimators"), "weight": round(float(w), 3)}
                for w, m in zip(self.weights, self.members)]


MIN_STACK_WEIGHT = 0.01
"""Candidates weighted less than this are dropped from a stack (the rest renormalised)."""


def stack_weights(probabilities: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights (C,) for C candidates' out-of-fold probabilities (each (n, K)) that
    minimise the mean log-loss of their weighted mixture on labels y (n,): a super learner
    (van der Laan, Polley and Hubbard 2007). Weights below :data:`MIN_STACK_WEIGHT` become 0."""
    from scipy.optimize import minimize

    right = np.stack([np.asarray(p)[np.arange(y.size), y] for p in probabilities], axis=1)

    def loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(v - v.max())
        w /= w.sum()
        mix = np.clip(right @ w, 1e-12, None)
        grad_w = -(right / mix[:, None]).mean(axis=0)
        return float(-np.log(mix).mean()), w * (grad_w - w @ grad_w)

    v = minimize(loss, np.zeros(right.shape[1]), jac=True, method="L-BFGS-B").x
    w = np.exp(v - v.max())
    w /= w.sum()
    w[w < MIN_STACK_WEIGHT] = 0.0
    return w / w.sum()


def _base_margin(base: str | None, ensembles: Mapping[str, Any] | None, temperature: float) -> np.ndarray | None:
    if base is None:
        return None
    if not ensembles or base not in ensembles:
        raise DataError(f"this model boosts from the {base!r} ensemble: pass its probabilities in ensembles")
    return log_margin(temper(ensembles[base], temperature))


def _split_candidate(candidate: Mapping[str, Any], seed: int) -> tuple[str | None, dict[str, Any]]:
    params = {key: value for key, value in candidate.items() if key != "base"}
    params.setdefault("seed", seed)
    return candidate.get("base"), params


def _row_log_losses(oof: np.ndarray, y: np.ndarray, temperature: float | None) -> np.ndarray:
    """Each seed row's log-loss (n,) under a candidate's out-of-fold predictions (n, K), after
    the softening ``temperature`` the winner gets anyway (None: uncalibrated): boosted candidates are
    overconfident, and without it the log-loss prefers a flat, uninformative one (IMDB with the
    starter models: a near-prior text annotator, 0.693, over MoLAM's 0.917)."""
    if temperature is not None:
        oof = temper(oof, temperature)
    return row_log_losses(oof, y)


def _clearly_best(losses: Sequence[np.ndarray]) -> int:
    """The first candidate (the default) unless another's mean log-loss is lower by more than one
    standard error of the paired per-row difference: 50 seed rows cannot tell close candidates
    apart (recorded TREC outputs: picking the lowest mean lost 1.5 points against the default)."""
    best = int(np.argmin([loss.mean() for loss in losses]))
    gain = losses[0] - losses[best]
    if best == 0 or gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)):
        return best
    return 0


def _ensemble_arrays(what: str, ensembles: Mapping[str, Any] | None, n: int, k: int) -> dict[str, np.ndarray]:
    return {name: _class_probabilities(f"{what}[{name!r}]", p, n, k) for name, p in (ensembles or {}).items()}


def _cv_unlabelled(xu: np.ndarray | None, ens_u: dict[str, np.ndarray], most: int | None,
                   seed: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The unlabelled rows (and their ensembles) pseudo-labelling uses during CV: at most ``most``, seeded."""
    if xu is None or most is None or xu.shape[0] <= most:
        return xu, ens_u
    rows = np.sort(np.random.default_rng(seed).choice(xu.shape[0], most, replace=False))
    return xu[rows], {name: p[rows] for name, p in ens_u.items()}


def _check_selection(candidates: Sequence[Mapping[str, Any]], combine: str, folds: Any, n_seed: int,
                     ens_s: Mapping[str, Any], ens_u: Mapping[str, Any] | None) -> None:
    """:func:`select_molam`'s settings, each wrong one named (``ens_u`` None: no unlabelled rows)."""
    if not candidates:
        raise ConfigError("candidates is empty: give at least one dict of MoLAM parameters")
    if combine not in ("best", "stack"):
        raise ConfigError(f"combine must be 'best' or 'stack', got {combine!r}")
    if not (isinstance(folds, int) and 2 <= folds <= n_seed):
        raise ConfigError(f"folds must be an integer in [2, {n_seed}] (the number of seed rows), got {folds}")
    for cand in candidates:
        unknown = set(cand) - set(_PARAM_NAMES) - {"base"}
        if unknown:
            raise ConfigError(f"unknown candidate key(s): {', '.join(sorted(unknown))}")
        base = cand.get("base")
        if base is not None and (base not in ens_s or (ens_u is not None and base not in ens_u)):
            raise DataError(f"a candidate boosts from {base!r}: pass it in ensembles_seed (and ensembles_unlabelled)")


def select_molam(
    features_seed: Any,
    y_seed: Any,
    features_unlabelled: Any,
    n_classes: int,
    candidates: Sequence[Mapping[str, Any]],
    *,
    ensembles_seed: Mapping[str, Any] | None = None,
    ensembles_unlabelled: Mapping[str, Any] | None = None,
    folds: int = 5,
    seed: int = 50,
    max_unlabelled_cv: int | None = 500,
    calibrate: bool = True,
    combine: str = "best",
) -> SelectedMoLAM | StackedMoLAM:
    """Choose among candidate settings by stratified k-fold CV on the SEED rows, then refit.

    ``combine="best"``: the candidate with the lowest CV log-loss, the first one (the default)
    kept unless another is better by a standard error (:func:`_clearly_best`); ``"stack"``:
    every candidate with a weight in :func:`stack_weights` over their calibrated out-of-fold
    predictions, refitted, probabilities mixed (:class:`StackedMoLAM`).

    features_seed (n_s, F), y_seed (n_s,), features_unlabelled (n_u, F) or None.
    candidates: dicts of :class:`MoLAM` parameters, optionally with ``"base": NAME`` to boost
    from the ensemble ``ensembles_seed[NAME]`` (n_s, K) / ``ensembles_unlabelled[NAME]``
    (n_u, K), whose temperature is fitted on the training seeds of each fold. Only seed
    labels are used: each candidate is scored by the log-loss of its out-of-fold
    predictions. During CV pseudo-labelling uses at most ``max_unlabelled_cv`` random
    unlabelled rows (None: all) to stay fast. The winner is refitted on all seeds (+ all
    unlabelled rows). With ``calibrate`` its output temperature is fitted on its
    out-of-fold predictions (softening only, T >= 1: 50 rows cannot justify sharpening).
    It is applied to the output only: used for the pseudo-label threshold as well, it
    stopped pseudo-labelling early and cost accuracy (TREC -1.7, PubMed -2.8 points).
    """
    k = _check_classes(n_classes)
    xs = _features2("features_seed", features_seed)
    ys = _labels("y_seed", y_seed, xs.shape[0], k)
    xu = None if features_unlabelled is None else _features2("features_unlabelled", features_unlabelled, xs.shape[1])
    ens_s = _ensemble_arrays("ensembles_seed", ensembles_seed, xs.shape[0], k)
    ens_u = {} if xu is None else _ensemble_arrays("ensembles_unlabelled", ensembles_unlabelled, xu.shape[0], k)
    _check_selection(candidates, combine, folds, xs.shape[0], ens_s, None if xu is None else ens_u)
    fold = fold_ids(ys, folds, seed)
    cv_u, cv_ens_u = _cv_unlabelled(xu, ens_u, max_unlabelled_cv, seed)

    def fit(params: dict[str, Any], base: str | None, rows: np.ndarray, x_u: Any, e_u: Mapping[str, Any]):
        temperature = 1.0 if base is None else fit_temperature(ens_s[base][rows], ys[rows], low=0.25)
        m_s = _base_margin(base, {} if base is None else {base: ens_s[base][rows]}, temperature)
        m_u = None if x_u is None else _base_margin(base, e_u, temperature)
        model = MoLAM(**params).fit(xs[rows], ys[rows], x_u, k, m_s, m_u)
        return model, temperature

    losses, out_of_fold, temperatures = [], [], []
    for cand in candidates:
        base, params = _split_candidate(cand, seed)
        oof = np.zeros((xs.shape[0], k))
        for f in range(folds):
            test = fold == f
            if not test.any():
                continue
            model, temperature = fit(params, base, np.flatnonzero(~test), cv_u, cv_ens_u)
            margin = _base_margin(base, {} if base is None else {base: ens_s[base][test]}, temperature)
            oof[test] = model.predict_proba(xs[test], margin)
        out_of_fold.append(oof)
        temperatures.append(fit_temperature(oof, ys, low=1.0) if calibrate else 1.0)
        losses.append(_row_log_losses(oof, ys, temperatures[-1] if calibrate else None))
    scores = [float(loss.mean()) for loss in losses]

    def refit(i: int) -> SelectedMoLAM:
        base, params = _split_candidate(candidates[i], seed)
        model, base_temperature = fit(params, base, np.arange(xs.shape[0]), xu, ens_u)
        return SelectedMoLAM(model, dict(candidates[i]), base, base_temperature, temperatures[i], scores)

    if combine == "stack" and len(candidates) > 1:
        weights = stack_weights([temper(oof, t) for oof, t in zip(out_of_fold, temperatures)], ys)
        chosen = np.flatnonzero(weights)
        return StackedMoLAM([refit(int(i)) for i in chosen], weights[chosen], scores)
    return refit(_clearly_best(losses))


# ----------------------------------------------------------------------------- annotation model
# Boosting from the Dawid-Skene posterior of the LLMs' sampled answers (its temperature fitted
# on the seeds), strongly regularised for 50 seed rows. Measured on the paper's recorded
# outputs (3 draws): offering the score average as a second base, chosen by CV on the seeds,
# lost 0.5-1 point on IMDB, TREC and PubMed; 50 seeds cannot tell the two apart.
DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"base": "dawid_skene", "learning_rate": 0.05, "max_depth": 2, "n_estimators": 100, "reg_lambda": 5.0},
)


def base_only(base: str) -> dict[str, Any]:
    """A candidate that is its base ensemble alone (tempered): one tree that learns nothing."""
    return {"base": base, "learning_rate": 0.001, "max_depth": 1, "n_estimators": 1, "pseudo_label": False}


ENSEMBLE_CANDIDATES: tuple[dict[str, Any], ...] = (base_only("score_avg"), base_only("dawid_skene"))
"""Weak LLMs on 50 seeds: trees over their signals can lose to their plain average (IMDB,
starter models: MoLAM .672, the score average .716); the CV on the seeds may choose it."""

TEXT_CANDIDATES: tuple[dict[str, Any], ...] = (
    *({**cand, "base": "text"} for cand in DEFAULT_CANDIDATES),
    base_only("text"),
)
"""With the text's own annotator among the annotators (:mod:`mollia_edge.text_annotator`), MoLAM
may also boost from its probabilities: where the LLMs are noise, trees over their signals
cannot beat it on 50 seeds (recorded TREC outputs with the LLMs replaced by noise: MoLAM over
noise and the text annotator .359, the text annotator alone .472), and the CV on the seeds
chooses between the two starting points."""


def _ensembles(label_model: DawidSkene, scores: Any, consistency: Any, text: int | None = None) -> dict[str, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    ensembles = {"score_avg": score_average(scores), "dawid_skene": label_model.predict_proba(consistency)}
    for j in range(scores.shape[1]):
        ensembles["text" if j == text else f"annotator {j}"] = _normalise(scores[:, j, :])
    return ensembles


def single_candidates(n_annotators: int, text: int | None) -> tuple[dict[str, Any], ...]:
    """One LLM alone, for each LLM: a strong model among weak ones is worth more than any mix
    of them on 50 seeds (Rotten Tomatoes with the starter models: Gemma-3 with 2 shots .862 on
    the sample, every mixture of it with SmolLM2 and the text annotator .80-.81)."""
    return tuple(base_only(f"annotator {j}") for j in range(n_annotators) if j != text)


@dataclass
class AnnotationModel:
    """MoLAM over N LLM annotators, ready to label rows from their signals.

    Built by :func:`fit_annotation_model`. ``label_model`` is the Dawid-Skene model fitted
    on all rows' consistency (no labels); ``selection`` the cross-validated MoLAM.
    """

    selection: SelectedMoLAM | StackedMoLAM
    label_model: DawidSkene
    config: MolamConfig
    text_annotator: int | None = None
    """Position of the text's own annotator among the annotators (None: all are LLMs)."""

    def ensembles(self, scores: Any, consistency: Any) -> dict[str, np.ndarray]:
        """The ensembles MoLAM may boost from, each (n, K), for scores and consistency (n, N, K)."""
        return _ensembles(self.label_model, scores, consistency, self.text_annotator)

    def predict_proba(self, scores: Any, consistency: Any) -> np.ndarray:
        """Class probabilities (n, K) from scores and consistency (n, N, K)."""
        return self.selection.predict_proba(molam_features(scores, consistency), self.ensembles(scores, consistency))

    def predict(self, scores: Any, consistency: Any) -> np.ndarray:
        """y+ (n,): the most probable class."""
        return self.predict_proba(scores, consistency).argmax(axis=1)

    def negative_labels(self, scores: Any) -> np.ndarray:
        """y- (n, K) bool by the configured rule and delta (paper Eq. 5), over the LLMs only."""
        scores = np.asarray(scores, np.float64)
        if self.text_annotator is not None:
            scores = np.delete(scores, self.text_annotator, axis=1)
        return negative_labels(scores, self.config.delta, self.config.negative_rule)


def fit_annotation_model(
    scores_seed: Any,
    consistency_seed: Any,
    y_seed: Any,
    scores_unlabelled: Any,
    consistency_unlabelled: Any,
    n_classes: int,
    *,
    config: MolamConfig | None = None,
    seed: int = 50,
    pseudo_label: bool = True,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    text_annotator: int | None = None,
) -> AnnotationModel:
    """Fit MoLAM on seed rows (scores and consistency (n_s, N, K), labels (n_s,)) and the
    unlabelled rows' signals (n_u, N, K), selecting among ``candidates`` by CV on the seeds.

    ``pseudo_label=False`` gives the paper's MoL (no pseudo-labels). With no unlabelled rows
    (shape (0, N, K)) MoLAM fits on the seeds alone. ``text_annotator``: the position of the
    text's own annotator (its scores are probabilities, out-of-fold on the seed rows); MoLAM may
    then boost from it (:data:`TEXT_CANDIDATES`) and leaves it out of the negative labels.
    ``candidates`` None: by ``config.candidates``, the default, the plain ensembles, each LLM
    alone and the text annotator's candidates (or the default alone).
    """
    cfg = config or MolamConfig()
    if candidates is None and cfg.candidates == "paper":
        candidates = DEFAULT_CANDIDATES
    if candidates is None:
        candidates = (DEFAULT_CANDIDATES + ENSEMBLE_CANDIDATES + (TEXT_CANDIDATES if text_annotator is not None else ())
                      + single_candidates(np.shape(scores_seed)[1], text_annotator))
    k = _check_classes(n_classes)
    z_s, c_s = _array3("scores_seed", scores_seed), _array3("consistency_seed", consistency_seed)
    unlabelled = np.shape(scores_unlabelled)[:1] != (0,)
    if unlabelled:
        z_u = _array3("scores_unlabelled", scores_unlabelled)
        c_u = _array3("consistency_unlabelled", consistency_unlabelled)
    else:
        z_u, c_u = z_s[:0], c_s[:0]
    if z_s.shape[1:] != z_u.shape[1:] or z_s.shape[2] != k:
        raise DataError(
            f"seed signals {z_s.shape[1:]} and unlabelled signals {z_u.shape[1:]} must both be "
            f"(annotators, {k} classes)"
        )
    label_model = DawidSkene(k, seed=seed).fit(np.concatenate([c_s, c_u]))
    shared = {
        "sigma": cfg.sigma,
        "max_pseudo_rounds": cfg.max_pseudo_rounds,
        "min_new_share": cfg.min_new_share,
        "pseudo_label": pseudo_label,
    }
    selection = select_molam(
        molam_features(z_s, c_s), y_seed, molam_features(z_u, c_u) if unlabelled else None, k,
        [{**shared, **cand} for cand in candidates],
        ensembles_seed=_ensembles(label_model, z_s, c_s, text_annotator),
        ensembles_unlabelled=_ensembles(label_model, z_u, c_u, text_annotator) if unlabelled else None,
        folds=min(cfg.cv_folds, len(z_s)), seed=seed, calibrate=cfg.calibrate, combine=cfg.combine,
    )
    return AnnotationModel(selection, label_model, cfg, text_annotator)
