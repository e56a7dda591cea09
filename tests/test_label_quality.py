"""The label job's quality parts: demonstrations (covering, cross-fitted), the number of shots
per model, the text's own annotator, the LLM word budget, the classifier choice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mollia_edge.cli import main
from mollia_edge.config import LLMConfig
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.budget import LABEL_WORDS, PROMPT_WORDS, WordBudget, text_costs
from mollia_edge.llm.demonstrations import (RETRIEVED, PromptPlan, RetrievedPlan, clip_words, demonstration_sets,
                                           nearest_rows, retrieved_words)
from mollia_edge.llm.panel import LLMPanel, PanelModel, clearly_better
from mollia_edge.llm.prompts import PromptSpec
from mollia_edge.molam import _clearly_best
from mollia_edge.text_annotator import embedding_model_proba, self_trained_rows, text_annotator_proba
from jobs import args, write_input

BASE = PromptSpec(labels=("pos", "neg"), item="review", chat_format="chatml")


def seed_data(n_per_label: int = 6, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, dim))
    rows = np.arange(2 * n_per_label)
    y = rows % 2
    texts = [f"text {i} " + "word " * (i % 7) for i in range(40)]
    return x, rows, y, texts


def test_demonstration_sets_are_disjoint_cover_each_label_and_alternate():
    x, rows, y, _ = seed_data()
    a, b = demonstration_sets(x, rows, y, shots=2)
    assert len(a) == len(b) == 4 and not set(a) & set(b) and set(a) | set(b) <= set(rows)
    assert [int(y[r]) for r in a] == [0, 1, 0, 1]  # round-robin over the labels
    members = rows[y == 0]
    centre = x[members].mean(axis=0)
    nearest = members[np.argmin(((x[members] - centre) ** 2).sum(axis=1))]
    assert a[0] == nearest  # the first demonstration of a label is its most typical seed


def test_a_seed_row_is_never_scored_with_its_own_answer_in_the_prompt():
    x, rows, y, texts = seed_data()
    plan = PromptPlan.with_demonstrations(BASE, 2, texts, x, rows, y, words=60)
    for prompt, positions in plan.split(np.arange(40)):
        shown = {text for text, _ in prompt.demonstrations}
        assert not any(clip_words(texts[i], 60) in shown for i in positions)
    assert plan.held is not None and len(plan.held_rows) == 4


def test_demonstrations_are_clipped():
    assert clip_words("one two  three\nfour", 2) == "one two …"
    assert clip_words("one two", 5) == "one two"


class FakePanel(LLMPanel):
    """Accuracy on the seeds falls with every shot for 'worse', rises for 'better'."""

    def model_signals(self, model, rows, plan):
        y = self.truth[rows]
        self.calls.append((model.name, plan, rows.copy()))
        if model.name == "more":  # every shot helps
            right = 0.5 + 0.2 * plan.shots
        else:
            right = np.where({"better": plan.shots >= 1, "worse": plan.shots == 0}[model.name], 0.9, 0.3)
        z = np.where(np.arange(2)[None, :] == y[:, None], right[:, None] if np.ndim(right) else right, 1 - right)
        return z, z, z

    def _fits(self, model, plan):
        return plan.shots <= getattr(self, "longest", 99)


def test_each_model_gets_the_number_of_shots_that_scores_its_seed_rows_best(tmp_path):
    x, rows, y, texts = seed_data()
    models = [PanelModel("better", tmp_path / "a.gguf", BASE), PanelModel("worse", tmp_path / "b.gguf", BASE)]
    panel = FakePanel(models, texts, None, None)
    panel.truth, panel.calls = np.zeros(40, np.int64), []
    panel.truth[rows] = y
    choices = panel.choose_shots([0, 1, 2], x, rows, y, words=60)
    assert choices["better"].chosen == 1 and choices["worse"].chosen == 0
    assert panel.plans["better"].shots == 1 and panel.plans["worse"].shots == 0
    assert choices["worse"].accuracy[0] > choices["worse"].accuracy[2]


def test_retrieved_demonstrations_are_the_nearest_seed_rows_of_each_label_never_the_row_itself():
    x, rows, y, texts = seed_data()
    for row in (0, 3, 30):
        chosen = nearest_rows(x, rows, y, row, shots=2)
        assert row not in chosen and sorted(int(y[r]) for r in chosen) == [0, 0, 1, 1]
        cosine = x[rows] @ x[row] / (np.linalg.norm(x[rows], axis=1) * np.linalg.norm(x[row]))
        for label in (0, 1):
            others = [r for r in rows[y == label] if r != row]
            best = sorted(others, key=lambda r: -cosine[r])[:2]
            assert set(best) == {r for r in chosen if y[r] == label}
        assert cosine[chosen[-1]] == max(cosine[r] for r in chosen)  # the nearest next to the text
    plan = RetrievedPlan(BASE, 2, texts, x, rows, y, words=60)
    parts = plan.split(np.arange(40))
    assert sum(len(positions) for _, positions in parts) == 40 and len(parts) > 2  # a prompt per text
    for prompt, positions in parts:
        shown = {text for text, _ in prompt.demonstrations}
        assert not any(clip_words(texts[i], 60) in shown for i in positions if i in rows)
    longest = plan.prompts[0]
    assert len(longest.demonstrations) == 4
    assert retrieved_words(texts, rows, 2, 2, 60) == round(4 * (np.mean([len(texts[r].split()) for r in rows]) + 2))


class RetrievalPanel(LLMPanel):
    """Right on the seed rows listed per model and plan ("shared": any shared number of shots)."""

    def model_signals(self, model, rows, plan):
        right = np.isin(rows, self.right[model.name][plan.name if plan.name == RETRIEVED else "shared"])
        y = self.truth[rows]
        p = np.where(right, 0.9, 0.1)[:, None]
        z = np.where(np.arange(2)[None, :] == y[:, None], p, 1 - p)
        return z, z, z

    def _fits(self, model, plan):
        return True


def test_retrieved_demonstrations_are_taken_only_where_clearly_better_than_shared_ones(tmp_path):
    x, rows, y, texts = seed_data(n_per_label=20)
    models = [PanelModel(name, tmp_path / f"{name}.gguf", BASE) for name in ("near", "slight", "worse")]
    panel = RetrievalPanel(models, texts, None, None)
    panel.truth = np.zeros(40, np.int64)
    panel.truth[rows] = y
    panel.right = {"near": {"shared": rows[:24], RETRIEVED: rows[:38]},  # +14 of 40 rows
                   "slight": {"shared": rows[:24], RETRIEVED: np.r_[rows[:23], rows[24:26]]},  # +1 of 40
                   "worse": {"shared": rows[:30], RETRIEVED: rows[:20]}}
    choices = panel.choose_shots([0, 1, 2], x, rows, y, words=60, retrieved=2)
    assert choices["near"].chosen == RETRIEVED and isinstance(panel.plans["near"], RetrievedPlan)
    assert choices["slight"].chosen == 0 and choices["worse"].chosen == 0
    assert choices["slight"].accuracy[RETRIEVED] > choices["slight"].accuracy[0]
    assert RETRIEVED not in panel.choose_shots([0, 1, 2], x, rows, y, words=60)["near"].accuracy  # not asked
    assert panel.choose_shots([2], x, rows, y, words=60, retrieved=2)["near"].chosen == 2  # --shots 2: as asked
    assert clearly_better(np.ones(40, bool), np.zeros(40, bool)) and not clearly_better(np.ones(1, bool), np.zeros(1, bool))


def test_the_word_budget_pays_for_retrieved_demonstrations_before_they_are_tried():
    costs = text_costs(["a b c d e"] * 100, 0)  # 15 words a row
    seeds = np.arange(20)
    budget = WordBudget(1200, costs)  # half: 600 = 300 for every seed row + 20 rows x (15 + 15 + 15 + 15 more)
    candidates, rows = budget.shot_choice([0, 1, 2], seeds, retrieved_words=15)
    assert candidates == []  # 5 rows: too few to choose
    budget = WordBudget(2400, costs)
    candidates, rows = budget.shot_choice([0, 1, 2], seeds, retrieved_words=15)
    assert len(rows) == 15 and budget.spent["seed rows"] == 300 + 15 * (2 * 15 + 30)  # (1200 - 300) // 60
    assert budget.affords(10, 15) and not budget.affords(10_000, 15)
    budget.sample(np.arange(20, 100), most=10)
    budget.charge_retrieved(10, 15)
    assert budget.spent["retrieved demonstrations"] == 150 and budget.costs[50] == 30  # the loop's rows cost more
    assert WordBudget(0, costs).affords(10**9, 15)  # no limit
    fresh = WordBudget(2400, costs)  # rows of 15 words: demonstrations of 15 more at most
    assert fresh.retrieval_fits(15, np.arange(20, 100)) and not fresh.retrieval_fits(16, np.arange(20, 100))
    assert WordBudget(0, costs).retrieval_fits(10**6, np.arange(20, 100))


def test_the_text_annotator_is_out_of_fold_on_the_seed_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 30))
    rows = np.arange(60)
    y = rng.integers(0, 2, 60)  # labels that nothing predicts: only memorising fits them
    p = text_annotator_proba(x, rows, y, 2)
    assert p.shape == (200, 2) and np.allclose(p.sum(axis=1), 1)
    assert np.mean(p[rows].argmax(axis=1) == y) < 0.75  # in-sample it would be near 1


def test_the_text_annotator_learns_what_the_embeddings_tell():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 10))
    truth = (x[:, 0] > 0).astype(np.int64)
    rows = np.arange(50)
    p = text_annotator_proba(x, rows, truth[rows], 3)  # a third label without seeds gets probability 0
    assert np.mean(p[50:].argmax(axis=1) == truth[50:]) > 0.85 and np.all(p[:, 2] == 0)


def _clusters(k: int = 4, per: int = 100, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (k * per, d) unit rows in k Gaussian clusters, y (k * per,) their cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d)) * 1.2
    x = np.concatenate([c + rng.normal(0, 1, (per, d)) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(k), per)


def test_self_training_adds_as_many_rows_per_label_each_round():
    x, y = _clusters()
    rows = np.array([0, 1, 100, 101])  # seeds of labels 0 and 1 only, of 4 clusters
    added_rows, added_y = self_trained_rows(x, rows, y[rows], 4, 1.0, (3, 5))
    assert len(added_rows) == 4 + 3 * 2 * 5 and len(set(added_rows.tolist())) == len(added_rows)
    assert set(added_y[4:].tolist()) == {0, 1} and np.bincount(added_y[4:]).tolist() == [15, 15]
    same_rows, _ = self_trained_rows(x, rows, y[rows], 4, 1.0, (0, 5))
    np.testing.assert_array_equal(same_rows, rows)  # 0 rounds: off


def test_self_training_learns_from_the_rows_no_one_labelled():
    """Two seeds per cluster: the regression on the seeds alone misses the clusters' shape;
    self-trained on the other rows it finds them (.959 -> .997 here)."""
    x, y = _clusters()
    rows = np.concatenate([np.flatnonzero(y == j)[:2] for j in range(4)])
    rest = np.setdiff1d(np.arange(len(x)), rows)
    accuracy = {}
    for setting in ((0, 10), (5, 10)):
        p, _ = embedding_model_proba(x, rows, y[rows], 4, self_training=setting)
        accuracy[setting] = np.mean(p[rest].argmax(axis=1) == y[rest])
    assert accuracy[(5, 10)] > accuracy[(0, 10)] + 0.02 and accuracy[(5, 10)] > 0.99


def test_the_word_budget_plans_seeds_sample_and_loop():
    assert text_costs(["a b c d e"], 10)[0] == 5 + PROMPT_WORDS + 10 * LABEL_WORDS
    texts = ["a b c d e"] * 100  # 5 words + the prompt around each
    costs = text_costs(texts, 0)
    assert costs[0] == 5 + PROMPT_WORDS
    seeds = np.arange(20)  # 300 words each time they are scored
    assert WordBudget(0, costs).shot_choice([0, 1, 2], seeds)[1].tolist() == seeds.tolist()  # no limit
    budget = WordBudget(1200, costs)  # half of it: 600 = all seeds once + 10 of them twice more
    candidates, rows = budget.shot_choice([0, 1, 2], seeds)
    assert candidates == [0, 1, 2] and rows.tolist() == list(range(10)) and budget.spent["seed rows"] == 600
    assert WordBudget(900, costs).shot_choice([0, 1, 2], seeds)[0] == []  # 5 rows: too few to choose
    assert WordBudget(900, costs).shot_choice([0, 1, 2], np.arange(0))[0] == []  # no seed rows at all
    sample = budget.sample(np.arange(20, 100), most=50)
    assert len(sample) == 20 and budget.spent["sample"] == 300  # half of the 600 left
    assert budget.rounds(10, 5, np.arange(40, 100)) == (10, 2)  # 300 words: 20 rows
    del budget.spent["loop"]
    assert budget.rounds(10, 5, np.arange(40, 100), keep_batch=True) == (4, 5)  # --rounds auto: fewer rounds
    assert WordBudget(0, costs).rounds(10, 5, np.arange(100)) == (10, 5)  # no limit
    spent = WordBudget(100, costs)  # the seed rows alone cost more than the budget: no rounds
    spent.spent["seed rows"] = 300
    assert spent.rounds(10, 5, np.arange(40, 100)) == (0, 5)
    assert spent.rounds(10, 5, np.arange(40, 100), keep_batch=True) == (0, 5)


def test_the_default_candidate_wins_unless_another_is_clearly_better():
    rng = np.random.default_rng(3)
    default = rng.uniform(0.2, 0.8, 50)
    noise = rng.normal(0, 0.3, 50)
    assert _clearly_best([default, default - 0.01 + noise - noise.mean()]) == 0  # within the noise
    assert _clearly_best([default, default - 0.2]) == 1


@pytest.mark.parametrize("classifier", ["top-layers", "auto"])
def test_the_classifier_is_a_choice_of_the_job(tiny_model_path, tmp_path, classifier):
    data = write_input(tmp_path / "in.csv", n=40)
    out = tmp_path / "out.csv"
    unlimited = tmp_path / "unlimited.toml"  # no word budget: retrieved demonstrations are tried too
    unlimited.write_text("[llm]\nbudget_words = 0\n")
    extra = ["--config", str(unlimited)] if classifier == "top-layers" else []
    assert main([*args(data, out, tiny_model_path), "--classifier", classifier, "--rounds", "1", *extra]) == 0
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    choice = report["classifier"]
    assert choice["mode"] in ("head", "top-layers") and choice["why"]
    if classifier == "auto":
        assert "al.round_seconds" in choice["why"] and choice["estimated_round_seconds"] > 0
    else:
        assert choice["mode"] == "top-layers"
    tried = {"0", "1", "2", RETRIEVED} if extra else {"0", "1", "2"}  # 6-word texts: 36 words of them would not fit
    assert set(report["shots"]["tiny"]["seed_accuracy"]) == tried


def test_without_a_choice_base_models_take_demonstrations_and_chat_models_none(tmp_path):
    x, rows, y, texts = seed_data()
    base = PromptSpec(labels=("pos", "neg"), item="review", chat_format="none")
    models = [PanelModel("better", tmp_path / "a.gguf", base), PanelModel("worse", tmp_path / "b.gguf", BASE)]
    panel = FakePanel(models, texts, None, None)
    panel.truth, panel.calls = np.zeros(40, np.int64), []
    choices = panel.choose_shots([], x, rows, y, words=60, fallback=2)
    assert (choices["better"].chosen, choices["worse"].chosen) == (2, 0) and panel.calls == []


def test_demonstrations_too_long_for_the_context_are_passed_over(tmp_path, tiny_model_path):
    x, rows, y, texts = seed_data()
    models = [PanelModel("more", tmp_path / "a.gguf", BASE)]
    panel = FakePanel(models, texts, None, None)
    panel.truth, panel.calls = np.zeros(40, np.int64), []
    panel.truth[rows] = y
    assert panel.choose_shots([0, 1, 2], x, rows, y, words=60)["more"].chosen == 2
    panel.longest = 1
    assert panel.choose_shots([0, 1, 2], x, rows, y, words=60)["more"].chosen == 1  # 2 shots do not fit
    panel.longest = 0
    assert panel.choose_shots([], x, rows, y, words=60, fallback=2)["more"].chosen == 0
    llm = LLMConfig(n_ctx=1024)
    with LLMAnnotator(tiny_model_path, BASE, llm, None) as annotator:
        long_demos = PromptSpec(labels=BASE.labels, item="review", chat_format=BASE.chat_format,
                                demonstrations=(("word " * 2000, "pos"),))
        assert annotator.prefix_fits(BASE) and not annotator.prefix_fits(long_demos)


def test_the_loop_refreshes_the_text_annotator_honestly(tiny_model_path, tmp_path, monkeypatch):
    """molam.refresh_text_annotator: each round's queried rows get the text annotator refitted
    on the seed rows and the earlier rounds' labels; no row's value comes from a model fitted on
    its own label, and the values rebuilt after the loop (what a resumed job uses) are the ones
    the loop saw."""
    from mollia_edge.label import loop as label_module  # the loop stage refits the text annotator

    calls = []
    real = label_module.refitted_proba

    def spy(x, rows, y, k, strength, targets, self_training):
        out = real(x, rows, y, k, strength, targets, self_training)
        calls.append((set(rows.tolist()), tuple(targets.tolist()), out))
        return out

    monkeypatch.setattr(label_module, "refitted_proba", spy)
    data = write_input(tmp_path / "in.csv", n=60)
    (tmp_path / "c.toml").write_text("[molam]\nrefresh_text_annotator = true\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main([*args(data, out, tiny_model_path, "--config", str(tmp_path / "c.toml"), "--rounds", "3")]) == 0
    assert calls and all(not (fitted & set(targets)) for fitted, targets, _ in calls)
    assert max(len(fitted) for fitted, _, _ in calls) > 12  # later rounds learn from the loop's labels
    seen = {}
    for _, targets, out_proba in calls:
        if targets in seen:  # the rebuild after the loop: the same values
            np.testing.assert_array_equal(seen[targets], out_proba)
        seen[targets] = out_proba
    assert len(seen) < len(calls)  # the rebuild happened


def test_a_classifier_no_better_than_the_seed_only_regression_gives_its_rows_to_it(tmp_path, tiny_model_path):
    """A head that cannot learn (learning rate 1e-9) loses to the plain regression on the seed
    rows, cross-fitted: the regression labels the classifier's rows and is the exported classifier."""
    import csv

    data = write_input(tmp_path / "in.csv", n=80, seeds=40)
    config = tmp_path / "c.toml"
    config.write_text("[al]\nhead_learning_rate = 1e-9\nfinal_heads = 1\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["label", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format", "chatml",
                 "--rounds", "0", "--llm-sample", "10",
                 "--classifier", "head", "--config", str(config), "--quiet", "-o", str(out)]) == 0
    report = json.loads((tmp_path / "out.csv.report.json").read_text())
    choice = report["classifier_rows_from"]
    assert choice["chosen"] == "seed-only regression", choice
    assert choice["seed_accuracy"]["seed-only regression"] > choice["seed_accuracy"]["classifier"]
    assert report["calibration"]["classifier"]["temperature"] > 0
    assert main(["predict", str(tmp_path / "out.csv.classifier.onnx"), str(data), "-o", str(tmp_path / "p.csv")]) == 0
    with out.open(newline="") as a, (tmp_path / "p.csv").open(newline="") as b:
        labelled, predicted = list(csv.DictReader(a)), list(csv.DictReader(b))
    rows = [i for i, r in enumerate(labelled) if r["label_source"] == "classifier"]
    assert len(rows) >= 30
    assert [predicted[i]["label"] for i in rows] == [labelled[i]["label"] for i in rows]
    np.testing.assert_allclose([float(predicted[i]["confidence"]) for i in rows],
                               [float(labelled[i]["confidence"]) for i in rows], atol=1e-4)
