"""The active-learning loop, its annotators and the recorded-TREC replay loader."""

import dataclasses

import numpy as np
import pytest

from mollia_edge.al import loop as loop_module
from mollia_edge.al.annotators import (
    MolamAnnotator,
    OracleAnnotator,
    SingleLLMAnnotator,
    VoteAnnotator,
    abstaining_labels,
    confidence_floor,
)
from mollia_edge.al.loop import (
    ActiveLearningTask,
    discrepancy_weights,
    draw_seed_rows,
    f1_scores,
    negative_learning_weight,
    run_active_learning,
)
from mollia_edge.config import ActiveLearningConfig, MolamConfig
from mollia_edge.errors import ConfigError, DataError, StoreError
from mollia_edge.store import Store

from al_problems import K, N_ROWS, SMALL, RecordingAnnotator, _noisy, _run, make_problem  # noqa: F401 - K, N_ROWS for the tests below


@pytest.fixture(scope="module")
def problem():
    return make_problem()


# ------------------------------------------------------------------------------ the loop
def test_each_round_adds_b_distinct_new_pool_rows(problem):
    task, _, _ = problem
    annotator = RecordingAnnotator(task.gold)
    seen = []
    rounds = _run(task, annotator, progress=seen.append)
    assert [m.round for m in rounds] == [0, 1, 2, 3] and seen == rounds
    assert [m.labelled for m in rounds] == [20, 35, 50, 65]
    assert [m.queried for m in rounds] == [15, 15, 15, 0]
    added = np.concatenate(annotator.batches)
    seeds = draw_seed_rows(task.pool, SMALL.seed_size, 3)
    assert len(annotator.batches) == 3 and all(len(b) == 15 for b in annotator.batches)
    assert len(np.unique(np.concatenate([added, seeds]))) == 20 + 45
    assert np.all(np.isin(added, task.pool))
    assert all(m.micro_f1 is not None and 0 <= m.macro_f1 <= 1 for m in rounds)


def test_weights_are_alpha_exactly_where_the_model_disagreed(problem, tmp_path, monkeypatch):
    task, _, _ = problem
    predictions = []  # (rows' inputs, predicted classes) of every predict call

    class RecordingClassifier(loop_module.OnnxClassifier):
        def predict(self, x):
            predicted = super().predict(x)
            predictions.append((x.copy(), predicted))
            return predicted

    monkeypatch.setattr(loop_module, "OnnxClassifier", RecordingClassifier)
    with Store(tmp_path / "s.sqlite") as store:
        rounds = _run(task, _noisy(task.gold, 0.3), store=store, run_id="w")
        labels = store.al_labels("w")
    for metrics in rounds[:-1]:
        batch = [(row, label, weight) for row, r, label, weight, _ in labels if r == metrics.round]
        rows, annotated, weights = (np.array(column) for column in zip(*batch))
        x_batch = task.inputs[rows]
        predicted = next(p for x, p in predictions if x.shape == x_batch.shape and np.array_equal(x, x_batch))
        np.testing.assert_array_equal(weights, np.where(predicted != annotated, SMALL.alpha, 1.0))
        assert metrics.down_weighted == metrics.disagreed == np.sum(predicted != annotated)
    assert sum(m.disagreed for m in rounds) > 0
    np.testing.assert_array_equal(discrepancy_weights(np.array([0, 1, 2]), np.array([0, 2, 2]), 0.5), [1, 0.5, 1])


def test_weighting_and_negatives_can_be_switched_off(problem, tmp_path):
    task, _, _ = problem
    plain = dataclasses.replace(SMALL, discrepancy_weighting=False, negative_learning=False)
    with Store(tmp_path / "s.sqlite") as store:
        rounds = _run(task, _noisy(task.gold, 0.3), config=plain, store=store, run_id="plain")
        labels = store.al_labels("plain")
    assert all(w == 1.0 for _, _, _, w, _ in labels) and all(m.down_weighted == 0 for m in rounds)
    assert all(m.lambda_nl == 0.0 for m in rounds)


def test_lambda_rises_linearly_from_start_to_end():
    config = ActiveLearningConfig()
    weights = [negative_learning_weight(r, config) for r in range(config.rounds + 1)]
    assert weights[0] == pytest.approx(0.4) and weights[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(weights), 0.06)
    assert negative_learning_weight(5, ActiveLearningConfig(negative_learning=False)) == 0.0


def test_same_seed_same_run_and_another_seed_differs(problem):
    task, _, _ = problem
    first, again = _run(task, _noisy(task.gold, 0.2)), _run(task, _noisy(task.gold, 0.2))
    strip = lambda rounds: [(m.micro_f1, m.disagreed, m.best_epoch, m.label_noise) for m in rounds]  # noqa: E731
    assert strip(first) == strip(again)
    other = run_active_learning(task, _noisy(task.gold, 0.2), "random", config=SMALL, seed=4)
    assert strip(other) != strip(first)


def test_rounds_are_stored_once_and_a_repeated_run_is_read_back(problem, tmp_path):
    task, _, _ = problem
    labels = _noisy(task.gold, 0.2).labels
    with Store(tmp_path / "s.sqlite") as store:
        full = _run(task, RecordingAnnotator(labels, "noisy"), store=store)  # run id: a hash of the settings
        repeated = RecordingAnnotator(labels, "noisy")
        assert _run(task, repeated, store=store) == full and repeated.batches == []
        other = RecordingAnnotator(labels, "other")  # another annotator: another run
        _run(task, other, store=store)
        assert len(other.batches) == SMALL.rounds
        _run(task, RecordingAnnotator(labels, "noisy"), store=store, run_id="named")
        _run(task, RecordingAnnotator(labels, "noisy"), store=store, run_id="named")
        assert [m["round"] for m in store.al_rounds("named")] == [0, 1, 2, 3]
        assert len(store.al_labels("named")) == SMALL.rounds * SMALL.query_size


def test_an_interrupted_run_resumes_to_the_same_result(problem, tmp_path):
    task, _, _ = problem
    reference = _run(task, _noisy(task.gold, 0.2))

    class Interrupt(Exception):
        pass

    def stop_after_round_one(metrics):
        if metrics.round == 1:
            raise Interrupt

    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(Interrupt):
            _run(task, _noisy(task.gold, 0.2), store=store, run_id="r", progress=stop_after_round_one)
        assert len(store.al_rounds("r")) == 2
        resumed = _run(task, _noisy(task.gold, 0.2), store=store, run_id="r")
        assert len(store.al_rounds("r")) == 4
    strip = lambda rounds: [(m.micro_f1, m.disagreed, m.best_epoch) for m in rounds]  # noqa: E731
    assert strip(resumed) == strip(reference)


def test_rows_the_annotator_abstains_on_are_set_aside_and_the_query_topped_up(problem, tmp_path):
    task, _, _ = problem
    labels = np.where(np.arange(N_ROWS) % 3 == 0, -1, task.gold)  # abstains on every third row
    annotator = RecordingAnnotator(labels, "abstaining")
    with Store(tmp_path / "s.sqlite") as store:
        rounds = _run(task, annotator, store=store, run_id="a")
        stored = store.al_labels("a")
        again = RecordingAnnotator(labels, "abstaining")
        assert _run(task, again, store=store, run_id="a") == rounds and again.batches == []
    asked = np.concatenate(annotator.batches)
    assert len(np.unique(asked)) == len(asked)  # a row set aside is never asked for again
    kept = [(row, label) for row, _, label, _, _ in stored if label >= 0]
    aside = [row for row, _, label, _, _ in stored if label < 0]
    assert len(kept) == SMALL.rounds * SMALL.query_size and all(label == task.gold[row] for row, label in kept)
    assert sorted(aside) == sorted(row for row in asked if row % 3 == 0) and len(aside) > 0
    assert [m.queried for m in rounds] == [15, 15, 15, 0]
    assert [m.labelled for m in rounds] == [20, 35, 50, 65]
    assert sum(m.abstained for m in rounds) == len(aside) and all(m.label_noise == 0 for m in rounds[:-1])

    never = dataclasses.replace(SMALL, top_up_queries=0)
    short = _run(task, RecordingAnnotator(labels, "abstaining"), config=never)
    assert all(m.queried + m.abstained == 15 for m in short[:-1]) and any(m.queried < 15 for m in short[:-1])


@pytest.mark.parametrize("strategy, output", [("coreset", "hidden"), ("bemps", "hidden"), ("noise-stability", "noisy_proba")])
def test_top_up_queries_reuse_the_rounds_model_outputs(problem, monkeypatch, strategy, output):
    task, _, _ = problem
    computed = []  # (model, rows computed); the models are kept, so their ids stay distinct
    original = getattr(loop_module.OnnxClassifier, output)

    def counting(self, x, *args):
        computed.append((self, len(x)))
        return original(self, x, *args)

    monkeypatch.setattr(loop_module.OnnxClassifier, output, counting)
    labels = np.where(np.arange(N_ROWS) % 3 == 0, -1, task.gold)  # abstains on every third row
    rounds = run_active_learning(task, RecordingAnnotator(labels, "abstaining"), strategy, config=SMALL, seed=3)
    assert sum(m.abstained for m in rounds) > 0 and [m.queried for m in rounds] == [15, 15, 15, 0]
    per_model: dict[int, int] = {}
    for model, n_rows in computed:
        per_model[id(model)] = per_model.get(id(model), 0) + n_rows
    assert len(per_model) == SMALL.rounds and all(n <= len(task.pool) for n in per_model.values())


def test_molam_abstains_below_its_threshold_on_at_most_a_share(problem):
    task, scores, consistency = problem
    seeds = np.arange(60, 110)
    rows = np.arange(110, N_ROWS)
    always = MolamAnnotator(scores, consistency, seeds, task.gold[seeds], K, unlabelled_rows=rows,
                            config=MolamConfig(abstain_below=0))
    picky = MolamAnnotator(scores, consistency, seeds, task.gold[seeds], K, unlabelled_rows=rows,
                           config=MolamConfig(abstain_below=0.9999, max_abstain_share=0.3))
    confidence = always.model.predict_proba(scores[rows], consistency[rows]).max(axis=1)
    assert always.abstain_below_ == 0 and picky.abstain_below_ == pytest.approx(np.quantile(confidence, 0.3))
    default = MolamAnnotator(scores, consistency, seeds, task.gold[seeds], K, unlabelled_rows=rows)
    assert default.abstain_below_ == 0.9  # fewer than 30 % of the rows lie below 0.9
    y_always, _ = always.annotate(rows)
    y_picky, _ = picky.annotate(rows)
    np.testing.assert_array_equal(y_picky, np.where(confidence >= picky.abstain_below_, y_always, -1))
    assert 0.2 < np.mean(y_picky < 0) <= 0.3
    assert np.mean(y_picky[y_picky >= 0] == task.gold[rows][y_picky >= 0]) >= np.mean(y_always == task.gold[rows])
    np.testing.assert_array_equal(abstaining_labels(np.array([[0.5, 0.3, 0.2], [0.1, 0.9, 0.0]]), 0.6), [-1, 1])
    probabilities = np.array([[0.5, 0.5], [0.9, 0.1], [0.7, 0.3]])
    assert confidence_floor(probabilities, 0.99, 0.5) == pytest.approx(0.7)  # at most half abstain
    assert confidence_floor(probabilities, 0.6, 0.5) == 0.6  # a third lies below 0.6
    assert confidence_floor(probabilities, 0.0, 0.5) == 0.0


def test_a_run_id_with_other_settings_is_refused(problem, tmp_path):
    task, _, _ = problem
    with Store(tmp_path / "s.sqlite") as store:
        _run(task, OracleAnnotator(task.gold, K), store=store, run_id="x")
        with pytest.raises(StoreError, match="other settings"):
            _run(task, _noisy(task.gold, 0.2), store=store, run_id="x")


def test_oracle_beats_a_noisy_annotator_and_noise_is_measured(problem):
    task, _, _ = problem
    config = dataclasses.replace(SMALL, rounds=4, query_size=25)
    oracle = _run(task, OracleAnnotator(task.gold, K), config=config)
    noisy = _run(task, _noisy(task.gold, 0.6), config=config)
    assert all(m.label_noise == 0 for m in oracle[:-1])
    assert np.mean([m.label_noise for m in noisy[:-1]]) > 0.4
    assert oracle[-1].micro_f1 > noisy[-1].micro_f1


def test_llm_annotators_label_from_the_signals(problem):
    task, scores, consistency = problem
    rows = np.arange(60, 90)
    y, negatives = VoteAnnotator(scores, consistency).annotate(rows)
    assert y.dtype == np.int64 and negatives.shape == (30, K) and not negatives.any()
    single, _ = SingleLLMAnnotator(scores, consistency, 1, "second").annotate(rows)
    np.testing.assert_array_equal(single, consistency[rows, 1].argmax(axis=1))
    with pytest.raises(DataError, match="out of range"):
        SingleLLMAnnotator(scores, consistency, 3, "fourth")
    with pytest.raises(DataError, match="0..419"):
        OracleAnnotator(task.gold, K).annotate(np.array([N_ROWS]))


def test_molam_annotator_gives_labels_and_negatives(problem):
    task, scores, consistency = problem
    seeds = np.arange(60, 110)
    annotator = MolamAnnotator(scores, consistency, seeds, task.gold[seeds], K, unlabelled_rows=np.arange(110, N_ROWS))
    y, negatives = annotator.annotate(np.arange(110, N_ROWS))
    gold = task.gold[110:]
    assert np.mean(y == gold) > 0.8
    assert negatives[np.arange(len(gold)), (gold + 1) % K].all() and not negatives[np.arange(len(gold)), gold].any()
    rounds = _run(task, annotator)
    assert all(m.negative_share == pytest.approx(1 / K) for m in rounds[:-1])
    assert all(m.false_negative_share == 0 for m in rounds[:-1])


def test_unusable_settings_are_refused_up_front(problem):
    task, _, _ = problem
    too_many = ActiveLearningConfig(seed_size=20, query_size=200, rounds=3)
    with pytest.raises(ConfigError, match="need a pool"):
        run_active_learning(task, OracleAnnotator(task.gold, K), "random", config=too_many)
    with pytest.raises(DataError, match="test rows must not be in the pool"):
        bad = ActiveLearningTask(task.inputs, task.pool, K, task.gold, task.pool[:5])
        run_active_learning(bad, OracleAnnotator(task.gold, K), "random", config=SMALL)
    with pytest.raises(ConfigError, match="unknown query strategy"):
        run_active_learning(task, OracleAnnotator(task.gold, K), "psychic", config=SMALL)


def test_config_and_classifier_options_reach_the_classifier_and_the_run_id(problem, tmp_path):
    task, _, _ = problem
    seen = []
    original = loop_module.OnnxClassifier.fit

    def spy(self, *args, **kwargs):
        seen.append((self.early_stopping, self.dropout, self.patience))
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_module.OnnxClassifier, "fit", spy)
        store = Store(tmp_path / "al.sqlite")
        _run(task, OracleAnnotator(task.gold, K), store=store, run_id="plain")
        _run(task, OracleAnnotator(task.gold, K), classifier_options={"dropout": 0.3}, store=store)
        _run(task, OracleAnnotator(task.gold, K), config=dataclasses.replace(SMALL, early_stopping="loss"), store=store)
    assert seen == [("accuracy", 0.1, 4)] * 4 + [("accuracy", 0.3, 4)] * 4 + [("loss", 0.1, 4)] * 4  # head_patience
    for option in ({"epochs": 3}, {"early_stopping": "loss"}):
        with pytest.raises(ConfigError, match="classifier_options"):
            _run(task, OracleAnnotator(task.gold, K), classifier_options=option)


def test_f1_scores():
    micro, macro = f1_scores(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert micro == 0.75 and macro == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


# ------------------------------------------------------------------------------ replay
def test_the_loss_terms_default_per_classifier_mode():
    config = ActiveLearningConfig()
    assert (config.negative_learning, config.discrepancy_weighting) == ("auto", "auto")
    head, top = config.for_mode("head"), config.for_mode("top-layers")
    assert (head.negative_learning, head.discrepancy_weighting) == (False, False)
    assert (top.negative_learning, top.discrepancy_weighting) == (True, True)
    fixed = dataclasses.replace(config, negative_learning=True).for_mode("head")
    assert (fixed.negative_learning, fixed.discrepancy_weighting) == (True, False)
