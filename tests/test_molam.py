"""MoLAM and its baselines on synthetic annotators with known accuracies."""

from __future__ import annotations

import numpy as np
import pytest

from mollia_edge.agreement import annotator_report, cohen_kappa, confusion_text
from mollia_edge.calibration import expected_calibration_error, fit_temperature, temper
from mollia_edge.errors import ConfigError, DataError
from mollia_edge.molam import (
    DawidSkene,
    MoLAM,
    dawid_skene,
    fit_annotation_model,
    log_margin,
    molam_features,
    negative_labels,
    score_average,
    StackedMoLAM,
    select_molam,
    single_candidates,
    stack_weights,
    single,
    vote,
)


def synthetic(n: int, k: int, accuracies: list[float], seed: int = 0, samples: int = 10):
    """Gold labels (n,), scores and consistency (n, N, K) of annotators with given accuracies.

    Each annotator answers its chosen class (gold with probability ``acc``, else a random other
    class) with confidence ~0.6-0.95 and spreads the rest; consistency is ``samples`` draws.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    scores = np.zeros((n, len(accuracies), k))
    consistency = np.zeros_like(scores)
    for j, acc in enumerate(accuracies):
        right = rng.random(n) < acc
        other = (y + rng.integers(1, k, n)) % k
        chosen = np.where(right, y, other)
        conf = rng.uniform(0.6, 0.95, n)
        rest = rng.dirichlet(np.ones(k), n) * (1 - conf)[:, None]
        rest[np.arange(n), chosen] = 0
        rest *= (1 - conf)[:, None] / np.maximum(rest.sum(axis=1, keepdims=True), 1e-12)
        rest[np.arange(n), chosen] = conf
        scores[:, j] = rest
        for i in range(n):
            consistency[i, j] = rng.multinomial(samples, rest[i]) / samples
    return y, scores, consistency


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


FAST = dict(n_estimators=60, learning_rate=0.1, max_depth=2)


def test_features_shape_and_order():
    s = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) / 100
    c = s + 1
    h = molam_features(s, c)
    assert h.shape == (2, 2 * 3 * 4)
    np.testing.assert_array_equal(h[0, :4], s[0, 0])
    np.testing.assert_array_equal(h[0, 4:8], c[0, 0])
    np.testing.assert_array_equal(h[1, 8:12], s[1, 1])
    extra = molam_features(s, c, invalid=np.full((2, 3), 0.25))
    assert extra.shape == (2, 24 + 6)
    np.testing.assert_array_equal(extra[:, :24], h)
    assert np.all(extra[:, 24::2] == 0.25)
    assert np.all(extra[:, 25::2] > 0)  # entropies


def test_molam_recovers_better_annotator():
    y, s, c = synthetic(1000, 4, [0.85, 0.55], seed=1)
    h = molam_features(s, c)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    seed_rows, rest = idx[:50], idx[50:]
    model = MoLAM(**FAST, seed=3).fit(h[seed_rows], y[seed_rows], h[rest], 4)
    acc = _acc(model.predict_proba(h[rest]), y[rest])
    good = _acc(single(s, 0)[rest], y[rest])
    bad = _acc(single(s, 1)[rest], y[rest])
    assert acc >= good - 0.03
    assert acc > bad + 0.15
    # with the ensemble as base margin too
    m = log_margin(score_average(s))
    model = MoLAM(**FAST).fit(h[seed_rows], y[seed_rows], h[rest], 4, m[seed_rows], m[rest])
    assert _acc(model.predict_proba(h[rest], m[rest]), y[rest]) >= good - 0.03


@pytest.mark.parametrize("missing", [0, 2, 4])
def test_missing_classes_in_seeds(missing):
    k = 5
    y, s, c = synthetic(400, k, [0.9, 0.8], seed=2)
    h = molam_features(s, c)
    keep = np.flatnonzero(y != missing)[:40]
    model = MoLAM(**FAST).fit(h[keep], y[keep], h, k)
    p = model.predict_proba(h)
    assert p.shape == (400, k)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert model.n_classes_ == k


@pytest.mark.parametrize("k", [2, 20])
def test_k2_and_k20(k):
    y, s, c = synthetic(600, k, [0.9, 0.7], seed=k)
    h = molam_features(s, c)
    # 50 seeds cannot teach trees 20 classes (2.5 rows each): start from the ensemble
    m = log_margin(score_average(s))
    model = MoLAM(**FAST, max_pseudo_rounds=3).fit(h[:50], y[:50], h[50:], k, m[:50], m[50:])
    p = model.predict_proba(h[50:], m[50:])
    assert p.shape == (550, k)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert _acc(p, y[50:]) >= _acc(score_average(s)[50:], y[50:]) - 0.03
    assert _acc(p, y[50:]) > 0.8
    assert model.predict(h[:3], m[:3]).shape == (3,)


def test_deterministic_with_seed():
    y, s, c = synthetic(500, 4, [0.8, 0.7], seed=4)
    h = molam_features(s, c)
    params = dict(FAST, subsample=0.8, seed=7)
    a = MoLAM(**params).fit(h[:50], y[:50], h[50:], 4)
    b = MoLAM(**params).fit(h[:50], y[:50], h[50:], 4)
    np.testing.assert_array_equal(a.predict_proba(h), b.predict_proba(h))
    np.testing.assert_array_equal(a.pseudo_rows_, b.pseudo_rows_)


def test_pseudo_labels_only_above_sigma():
    y, s, c = synthetic(500, 3, [0.9, 0.8], seed=5)
    h = molam_features(s, c)
    hu = h[50:]
    sigma = 0.9
    plain = MoLAM(**FAST, pseudo_label=False).fit(h[:50], y[:50], hu, 3)
    assert plain.pseudo_counts_ == [] and plain.pseudo_rows_.size == 0
    first = plain.predict_proba(hu)
    model = MoLAM(**FAST, sigma=sigma).fit(h[:50], y[:50], hu, 3)
    counts = model.pseudo_counts_
    assert counts[0] == int(np.sum(first.max(axis=1) > sigma))
    assert sum(counts) == model.pseudo_rows_.size
    assert len(set(model.pseudo_rows_.tolist())) == model.pseudo_rows_.size
    # first-round rows carry the seed-only model's argmax label
    np.testing.assert_array_equal(model.pseudo_labels_[: counts[0]], first[model.pseudo_rows_[: counts[0]]].argmax(1))
    assert counts[-1] < max(1, np.ceil(model.min_new_share * len(hu))) or len(counts) == model.max_pseudo_rounds
    capped = MoLAM(**FAST, max_pseudo_rounds=1).fit(h[:50], y[:50], hu, 3)
    assert len(capped.pseudo_counts_) == 1


def test_negative_label_rules():
    scores = np.array(
        [
            [[0.0005, 0.9, 0.0995], [0.0001, 0.5, 0.4999]],  # class 0 low everywhere
            [[0.0005, 0.9, 0.0995], [0.0015, 0.5, 0.4985]],  # class 0: mean 0.001, one above
        ]
    )
    every = negative_labels(scores, 0.001, "every")
    mean = negative_labels(scores, 0.001, "mean")
    np.testing.assert_array_equal(every, [[True, False, False], [False, False, False]])
    np.testing.assert_array_equal(mean, [[True, False, False], [True, False, False]])
    with pytest.raises(ConfigError, match="rule"):
        negative_labels(scores, rule="median")
    nowhere = np.full((1, 2, 3), 1e-5)  # no LLM puts mass on any label: nothing is ruled out
    assert not negative_labels(nowhere, 0.001).any()


def test_baselines_recover_easy_labels():
    y, s, c = synthetic(800, 4, [0.9, 0.85, 0.8], seed=6)
    assert _acc(vote(c, s), y) > 0.9
    assert _acc(score_average(s), y) > 0.9
    ds = dawid_skene(c, 4, seed=0)
    assert ds.shape == (800, 4)
    np.testing.assert_allclose(ds.sum(axis=1), 1.0)
    assert _acc(ds, y) > 0.9
    hard = s.argmax(axis=2)
    assert _acc(dawid_skene(hard, 4), y) > 0.9
    np.testing.assert_allclose(vote(c).sum(axis=1), 1.0)
    assert _acc(single(s, 0), y) > 0.85


def test_vote_tie_goes_to_higher_score():
    c = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    s = np.array([[[0.6, 0.4], [0.1, 0.9]]])
    assert vote(c, s).argmax() == 1


def test_select_molam_uses_seed_rows_only():
    y, s, c = synthetic(600, 3, [0.85, 0.6], seed=8)
    h = molam_features(s, c)
    avg = score_average(s)
    candidates = [
        dict(FAST, pseudo_label=False),
        dict(FAST, pseudo_label=True),
        dict(FAST, pseudo_label=False, base="score_avg"),
    ]
    chosen = select_molam(h[:50], y[:50], h[50:], 3, candidates, folds=3, seed=1,
                          ensembles_seed={"score_avg": avg[:50]}, ensembles_unlabelled={"score_avg": avg[50:]})
    assert len(chosen.cv_scores) == 3
    assert chosen.candidate == candidates[int(np.argmin(chosen.cv_scores))]
    p = chosen.predict_proba(h[50:], {"score_avg": avg[50:]})
    assert p.shape == (550, 3)
    # seeded: the same call gives the same probabilities (the pool's gold labels are no input at
    # all; the label job's test with a gold column checks that they change no label)
    again = select_molam(h[:50], y[:50], h[50:], 3, candidates, folds=3, seed=1,
                         ensembles_seed={"score_avg": avg[:50]}, ensembles_unlabelled={"score_avg": avg[50:]})
    np.testing.assert_array_equal(again.predict_proba(h[50:], {"score_avg": avg[50:]}), p)
    # ... and the seed labels are what it learns from: scrambled, its labels stop following the LLMs
    scrambled = select_molam(h[:50], np.random.default_rng(0).permutation(y[:50]), h[50:], 3, candidates, folds=3,
                             seed=1, ensembles_seed={"score_avg": avg[:50]},
                             ensembles_unlabelled={"score_avg": avg[50:]})
    assert _acc(p, y[50:]) > _acc(scrambled.predict_proba(h[50:], {"score_avg": avg[50:]}), y[50:]) + 0.2
    with pytest.raises(DataError, match="boosts from 'vote'"):
        select_molam(h[:50], y[:50], h[50:], 3, [dict(FAST, base="vote")], folds=3,
                     ensembles_seed={"score_avg": avg[:50]}, ensembles_unlabelled={"score_avg": avg[50:]})


def test_select_molam_calibration_softens_only():
    y, s, c = synthetic(600, 3, [0.7, 0.6], seed=10)
    h = molam_features(s, c)
    chosen = select_molam(h[:50], y[:50], h[50:], 3, [dict(FAST, pseudo_label=False)], folds=5, calibrate=True)
    assert chosen.temperature >= 1.0
    plain = select_molam(h[:50], y[:50], h[50:], 3, [dict(FAST, pseudo_label=False)], folds=5, calibrate=False)
    assert plain.temperature == 1.0
    raw = plain.predict_proba(h[50:])
    np.testing.assert_allclose(chosen.predict_proba(h[50:]), temper(raw, chosen.temperature))
    assert chosen.predict_proba(h[50:]).max(axis=1).mean() <= raw.max(axis=1).mean()


def test_dawid_skene_estimator_predicts_new_rows():
    y, s, c = synthetic(800, 4, [0.9, 0.7, 0.6], seed=11)
    model = DawidSkene(4, seed=0, evidence=10).fit(c[:600])  # consistency from 10 samples
    assert model.confusion_.shape == (3, 4, 4)
    np.testing.assert_allclose(model.confusion_.sum(axis=2), 1.0)
    # the best annotator's confusion matrix has the heaviest diagonal
    diagonals = np.trace(model.confusion_, axis1=1, axis2=2)
    assert diagonals.argmax() == 0
    assert _acc(model.predict_proba(c[600:]), y[600:]) >= _acc(vote(c, s)[600:], y[600:])
    with pytest.raises(DataError, match="annotators"):
        model.predict_proba(c[600:, :2])


def test_fit_annotation_model_end_to_end():
    y, s, c = synthetic(700, 4, [0.85, 0.65, 0.6], seed=12)
    model = fit_annotation_model(s[:50], c[:50], y[:50], s[50:], c[50:], 4, seed=3,
                                 candidates=[dict(FAST, base="score_avg"), dict(FAST, base="dawid_skene")])
    p = model.predict_proba(s[50:], c[50:])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert _acc(p, y[50:]) >= max(_acc(vote(c, s)[50:], y[50:]), _acc(score_average(s)[50:], y[50:])) - 0.01
    assert {m.base for m in model.selection.members} <= {"score_avg", "dawid_skene"}
    assert np.isclose(model.selection.weights.sum(), 1.0)
    assert model.negative_labels(s[50:]).shape == (650, 4)
    again = fit_annotation_model(s[:50], c[:50], y[:50], s[50:], c[50:], 4, seed=3,
                                 candidates=[dict(FAST, base="score_avg"), dict(FAST, base="dawid_skene")])
    np.testing.assert_array_equal(again.predict(s[50:], c[50:]), p.argmax(axis=1))
    with pytest.raises(DataError, match="classes"):
        fit_annotation_model(s[:50], c[:50], y[:50], s[50:, :, :3], c[50:, :, :3], 4)


def test_bad_inputs():
    y, s, c = synthetic(100, 3, [0.9], seed=9)
    h = molam_features(s, c)
    with pytest.raises(DataError, match="same shape"):
        molam_features(s, c[:, :, :2])
    with pytest.raises(DataError, match="2 classes"):
        molam_features(s[:, :, :1], c[:, :, :1])
    with pytest.raises(DataError, match="shape"):
        molam_features(s[0], c[0])
    with pytest.raises(DataError, match="out of range"):
        MoLAM(**FAST).fit(h[:50], np.full(50, 3), h[50:], 3)
    with pytest.raises(DataError, match="match the feature rows"):
        MoLAM(**FAST).fit(h[:50], y[:40], h[50:], 3)
    with pytest.raises(DataError, match="feature columns"):
        MoLAM(**FAST).fit(h[:50], y[:50], h[50:, :-1], 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        MoLAM(**FAST).fit(h[:50], np.zeros(50, int), h[50:], 1)
    with pytest.raises(ConfigError, match="sigma"):
        MoLAM(sigma=1.5).fit(h[:50], y[:50], h[50:], 3)
    with pytest.raises(ConfigError, match="not fitted"):
        MoLAM().predict(h)
    model = MoLAM(**FAST, pseudo_label=False).fit(h[:50], y[:50], None, 3)
    with pytest.raises(DataError, match="feature columns"):
        model.predict(h[:, :-1])
    with pytest.raises(DataError, match="without a base margin"):
        model.predict(h, np.zeros((100, 3)))
    with pytest.raises(ConfigError, match="candidates"):
        select_molam(h[:50], y[:50], h[50:], 3, [])


def test_temperature_scaling_and_ece():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 4000)
    # overconfident: always 0.95 on the chosen class, right only 70% of the time
    chosen = np.where(rng.random(4000) < 0.7, y, (y + 1) % 3)
    p = np.full((4000, 3), 0.025)
    p[np.arange(4000), chosen] = 0.95
    assert expected_calibration_error(p, y) == pytest.approx(0.25, abs=0.02)
    t = fit_temperature(p, y)
    assert t > 1.5
    calibrated = temper(p, t)
    assert calibrated.max(axis=1).mean() == pytest.approx(0.7, abs=0.02)
    assert expected_calibration_error(calibrated, y) < 0.03
    np.testing.assert_allclose(temper(p, 1.0), p)
    with pytest.raises(DataError, match="temperature"):
        temper(p, 0)


def test_annotator_report_and_kappa():
    y, s, c = synthetic(400, 3, [0.95, 0.6], seed=13)
    report = annotator_report(s, c, y, names=["good", "weak"])
    assert report.accuracy_scores[0] > 0.9 > report.accuracy_scores[1]
    assert report.accuracy_samples[0] > report.accuracy_samples[1]
    assert report.kappa.shape == (2, 2)
    np.testing.assert_allclose(np.diag(report.kappa), 1.0)
    assert report.kappa[0, 1] == report.kappa[1, 0]
    assert set(report.as_dict()["good"]["kappa"]) == {"weak"}
    # textbook example: 50 items, observed agreement 0.7, chance 0.5 -> kappa 0.4
    a = np.array([0] * 20 + [0] * 5 + [1] * 10 + [1] * 15)
    b = np.array([0] * 20 + [1] * 5 + [0] * 10 + [1] * 15)
    assert cohen_kappa(a, b, 2) == pytest.approx(0.4)
    assert cohen_kappa(np.zeros(5, int), np.zeros(5, int), 2) == 1.0


def test_annotator_report_names_the_label_pairs_each_model_confuses_most():
    y = np.array([0] * 10 + [1] * 10 + [2] * 10)
    answered = y.copy()
    answered[:6] = 2  # six "a" rows answered "c"
    answered[10:12] = 0  # two "b" rows answered "a"
    answered[20] = 1
    scores = np.full((30, 1, 3), 0.1)
    scores[np.arange(30), 0, answered] = 0.8
    report = annotator_report(scores, scores, y, names=["m"], labels=["a", "b", "c"])
    confused = report.as_dict()["m"]["confused"]
    assert confused == [{"label": "a", "answered": "c", "rows": 6, "of": 10},
                        {"label": "b", "answered": "a", "rows": 2, "of": 10},
                        {"label": "c", "answered": "b", "rows": 1, "of": 10}]
    assert confusion_text(confused[:1]) == "a as c 6/10"
    np.testing.assert_array_equal(report.confusion[0].sum(axis=1), [10, 10, 10])


def test_stack_weights_follow_the_candidates_that_predict_the_seeds():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 60)
    right = np.full((60, 3), 0.05)
    right[np.arange(60), y] = 0.9  # a candidate that is right, confidently
    flat = np.full((60, 3), 1 / 3)
    wrong = np.roll(right, 1, axis=1)
    w = stack_weights([flat, right, wrong], y)
    assert w[1] > 0.95 and np.isclose(w.sum(), 1) and w[2] == 0
    half = right.copy()
    half[30:] = wrong[30:]  # right on the first half only; `other` on the second only
    other = wrong.copy()
    other[30:] = right[30:]
    w = stack_weights([half, other], y)
    assert np.allclose(w, 0.5, atol=0.05)  # neither alone: the mix


def test_a_stacked_label_model_follows_a_strong_annotator_among_noise():
    y, s, c = synthetic(900, 4, [0.9, 0.3, 0.3], seed=21)  # one strong annotator, two near noise
    candidates = [dict(FAST, base="dawid_skene"), dict(FAST, base="score_avg"), *single_candidates(3, None)]
    stacked = fit_annotation_model(s[:50], c[:50], y[:50], s[50:], c[50:], 4, seed=3, candidates=candidates)
    assert isinstance(stacked.selection, StackedMoLAM)
    strong = _acc(s[50:, 0], y[50:])
    assert _acc(stacked.predict_proba(s[50:], c[50:]), y[50:]) >= strong - 0.02
    weights = {m.base: w for m, w in zip(stacked.selection.members, stacked.selection.weights)}
    assert weights.get("annotator 0", 0) >= max(weights.get("annotator 1", 0), weights.get("annotator 2", 0))
