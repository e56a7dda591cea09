"""`confidence` that means what it says: temperature scaling fitted on held-out predictions, a
temperature folded into a classifier, and a logistic regression run as a head classifier."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from mollia_edge.al.classifier import head_from_linear, with_temperature
from mollia_edge.calibration import (
    confidence_ece,
    expected_calibration_error,
    fit_temperature,
    temper,
)


def _overconfident(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, K) sharpened by T = 0.4 from calibrated ones, and labels drawn from the
    calibrated ones: rows stated .95 sure are right far less often."""
    rng = np.random.default_rng(seed)
    calibrated = rng.dirichlet(np.full(k, 0.7), n)
    y = np.array([rng.choice(k, p=p) for p in calibrated])
    return temper(calibrated, 0.4), y


def test_a_temperature_fitted_on_held_out_rows_calibrates_overconfident_probabilities():
    p_fit, y_fit = _overconfident(400, 4, 0)
    p_new, y_new = _overconfident(2000, 4, 1)
    temperature = fit_temperature(p_fit, y_fit)
    assert 2.0 < temperature < 3.2  # undoes the sharpening (1 / 0.4 = 2.5)
    assert expected_calibration_error(p_new, y_new, 10) > 0.15
    assert expected_calibration_error(temper(p_new, temperature), y_new, 10) <= 0.04


def test_confidence_ece_is_the_gap_between_stated_and_real_accuracy():
    assert confidence_ece([0.9] * 10, [True] * 9 + [False]) == 0.0
    assert abs(confidence_ece([0.9] * 10, [True] * 5 + [False] * 5) - 0.4) < 1e-12
    assert confidence_ece([], []) == 0.0


def test_a_temperature_folded_into_a_classifier_and_a_regression_as_a_head_are_exact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for k in (2, 3):
        y = rng.integers(0, k, 120)
        regression = LogisticRegression(max_iter=1000).fit(x, y)
        weight = regression.coef_ if k > 2 else np.vstack([np.zeros(16), regression.coef_[0]])
        bias = regression.intercept_ if k > 2 else np.array([0.0, regression.intercept_[0]])
        head = head_from_linear(weight, bias)
        np.testing.assert_allclose(head.predict_proba(x), regression.predict_proba(x), atol=1e-5)
        np.testing.assert_allclose(with_temperature(head, 2.0).predict_proba(x),
                                   temper(regression.predict_proba(x), 2.0), atol=1e-5)



def _twins_input(path, seeds=30):
    """Seed texts of nonsense words from one of two syllable sets, labelled by the set but a
    third of them the other way, and an unlabelled near-copy of each (one word added) carrying
    its label: a model that saw a seed row's label can tell its twin's, others only the set's."""
    import csv
    import random

    rng = random.Random(0)
    sets = (["ka", "zo", "mi", "ru", "te", "vo"], ["pa", "li", "nu", "se", "do", "fe"])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        which = [i % 2 for i in range(seeds)]
        texts = [" ".join("".join(rng.choice(sets[w]) for _ in range(3)) for _ in range(8)) for w in which]
        labels = [("pos", "neg")[w if i % 3 else 1 - w] for i, w in enumerate(which)]
        for text, label in zip(texts, labels):
            writer.writerow([text, label])
        for text in texts:
            writer.writerow([text + " indeed", ""])
    return path


def _cross_fitted(tmp_path, model, name, flipped=()):
    """The recorded cross-fitted seed probabilities of a job on the twins, seed rows ``flipped``
    given the other label."""
    import csv
    import json
    import sqlite3

    from mollia_edge.cli import main

    data = _twins_input(tmp_path / f"{name}.csv")
    rows = list(csv.reader(data.open(newline="", encoding="utf-8")))
    for i in flipped:
        rows[1 + i][1] = {"pos": "neg", "neg": "pos"}[rows[1 + i][1]]
    with data.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    config = tmp_path / "c.toml"
    config.write_text('[molam]\nabstain_below = 0.0\n[al]\nteacher = "label_model"\n', encoding="utf-8")
    session = tmp_path / f"{name}.sqlite"
    assert main(["label", str(data), "--labels", "pos,neg", "--models", str(model), "--chat-format", "chatml",
                 "--rounds", "0", "--llm-sample", "30", "--shots", "0", "--prune", "off", "--classifier", "head",
                 "--config", str(config), "--session", str(session), "--quiet", "-o", str(tmp_path / f"{name}.out.csv")]) == 0
    with sqlite3.connect(session) as db:
        (record,) = db.execute("SELECT result FROM session_stages WHERE stage = 'final_classifier'").fetchone()
    crossed = json.loads(record)["cross_fitted"]
    return np.asarray(crossed["mixture"]), np.asarray(crossed["classifier"])


def test_the_cross_fitted_predictions_of_a_fold_do_not_depend_on_its_labels(tmp_path, tiny_model_path, monkeypatch):
    """What the job says of a held-out seed row must not change when that row's label does:
    with the folds fixed, flipping the labels of fold 0's rows leaves their cross-fitted
    probabilities (label model and classifier) as they were. Each seed row has a twin in the LLM
    sample; a fold that kept the job's own text annotator (fitted on every seed row) labels the
    twins by the flipped labels and fails this."""
    from mollia_edge.label import crossfit

    folds = [(np.setdiff1d(np.arange(30), held), held) for held in np.array_split(np.arange(30), 5)]
    monkeypatch.setattr(crossfit, "stratified_splits", lambda y, k, seed: folds)
    held = folds[0][1]
    mixture, classifier = _cross_fitted(tmp_path, tiny_model_path, "given")
    mixture_flipped, classifier_flipped = _cross_fitted(tmp_path, tiny_model_path, "flipped", held)
    np.testing.assert_allclose(mixture_flipped[held], mixture[held], atol=1e-6)
    np.testing.assert_allclose(classifier_flipped[held], classifier[held], atol=1e-6)
    assert not np.allclose(mixture_flipped[folds[1][1]], mixture[folds[1][1]], atol=1e-6)  # the other folds did see it
