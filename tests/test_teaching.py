"""Whether the label model's labels teach the final classifier, or only the seed rows do."""

from __future__ import annotations

import json

import numpy as np

from mollia_edge.cli import main
from mollia_edge.teaching import check_teaching
from jobs import args, write_input


def topic_data(n: int = 400, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    centres = rng.normal(size=(k, 16)) * 1.2
    x = centres[truth] + rng.normal(size=(n, 16))
    seeds = np.arange(40)
    extra = np.arange(40, 240)
    return x, truth, seeds, extra, rng


def test_labels_that_are_right_teach_and_noise_does_not():
    x, truth, seeds, extra, rng = topic_data()
    good = check_teaching(x, seeds, truth[seeds], extra, lambda own: truth[extra], 4, False)
    assert good.label_model_teaches and good.label_model_accuracy > good.seeds_accuracy
    noise = rng.integers(0, 4, len(extra))
    bad = check_teaching(x, seeds, truth[seeds], extra, lambda own: noise, 4, False)
    assert not bad.label_model_teaches and bad.as_dict()["teacher"] == "seed rows"
    abstaining = np.full(len(extra), -1)  # nothing the label model is sure of: the seeds alone
    assert not check_teaching(x, seeds, truth[seeds], extra, lambda own: abstaining, 4, False).label_model_teaches


def test_the_text_annotators_copy_of_the_held_out_seeds_does_not_leak_into_the_check():
    """A label model that only repeats the text annotator adds nothing to the seed rows. With the
    annotator fitted on every seed (held-out ones too) its labels would carry the held-out seeds'
    answers and look like a teacher; refitted per fold they do not."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 40))
    truth = rng.integers(0, 3, 300)  # nothing in x predicts it: only memorised seeds "teach"
    seeds, extra = np.arange(60), np.arange(60, 300)
    calls = []

    def repeat_the_text_annotator(own):
        calls.append(own)
        return own.argmax(axis=1)

    check = check_teaching(x, seeds, truth[seeds], extra, repeat_the_text_annotator, 3, True)
    assert check.label_model_accuracy < 0.55  # chance is 1/3; with the held-out seeds leaked, near 1
    assert len(calls) == 16 and all(c.shape == (240, 3) for c in calls)  # once per fold (3 x 5), once on all seeds


def test_the_job_reports_its_teacher_and_al_teacher_overrides(tmp_path, tiny_model_path):
    data = write_input(tmp_path / "in.csv", n=40)
    out = tmp_path / "out.csv"
    assert main([*args(data, out, tiny_model_path), "--rounds", "1"]) == 0
    teacher = json.loads(out.with_name(out.name + ".report.json").read_text())["classifier_teacher"]
    assert teacher["teacher"] in ("label model", "seed rows") and set(teacher["seed_accuracy"]) == {
        "seed rows", "seed rows + label model"}
    config = tmp_path / "c.toml"
    config.write_text('[al]\nteacher = "seeds"\n')
    out2 = tmp_path / "out2.csv"
    assert main([*args(data, out2, tiny_model_path), "--rounds", "1", "--config", str(config)]) == 0
    report = json.loads(out2.with_name(out2.name + ".report.json").read_text())
    assert report["classifier_teacher"] == {"teacher": "seed rows", "why": 'al.teacher = "seeds"'}
    assert "classifier learns from: seed rows" in out2.with_name(out2.name + ".report.txt").read_text()
