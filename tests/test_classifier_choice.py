"""``--classifier auto``: a choice made from the texts and settings, the same on every run."""

from __future__ import annotations

import pytest

from mollia_edge.al.classifier import OnnxClassifier
from mollia_edge.al.classifier_choice import choose_classifier, top_layers_row_seconds
from mollia_edge.al.encoder import Encoder
from mollia_edge.config import ActiveLearningConfig

SHORT = ["a fine film", "dull", "not bad at all", "too long by half"] * 10
LONG = [" ".join(["the committee met again on tuesday to discuss the budget"] * 12)] * 40


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_auto_trains_nothing_and_gives_the_same_choice_every_time(encoder, monkeypatch):
    """A timed training step made two runs of one job choose differently (a busy machine);
    the estimate must not depend on the machine's load."""
    monkeypatch.setattr(OnnxClassifier, "fit", lambda *a, **k: pytest.fail("auto must not time a training"))
    config = ActiveLearningConfig()
    first = choose_classifier("auto", encoder, SHORT, 80, config, threads=1)
    assert first == choose_classifier("auto", encoder, SHORT, 80, config, threads=1)
    assert first["mode"] == "top-layers" and "al.round_seconds" in first["why"]
    assert choose_classifier("auto", encoder, LONG, 2000, config, threads=1)["mode"] == "head"


def test_the_estimate_grows_with_length_and_layers_and_shrinks_with_threads(encoder):
    short, long = (top_layers_row_seconds(encoder, texts, 2, 1) for texts in (SHORT, LONG))
    assert short < long
    assert top_layers_row_seconds(encoder, LONG, 1, 1) < long
    assert top_layers_row_seconds(encoder, LONG, 2, 2) == pytest.approx(long / 2)


def test_a_fixed_choice_is_kept(encoder):
    assert choose_classifier("head", encoder, SHORT, 80, ActiveLearningConfig(), 1) == {"mode": "head", "why": "asked for (head)"}


def test_auto_is_decided_on_the_rows_the_final_classifier_trains_on(tiny_model_path, tmp_path, monkeypatch):
    """The final classifier trains on every row (pseudo-labels fill the rest at al.pseudo_weight):
    a job of 60 rows with 12 seed rows and 2 rounds of 5 must be estimated on 60 rows, not 22
    (a 1,000-row job chose top-layers from 80 rows and then trained on 1,000 for two minutes)."""
    from jobs import args, write_input

    from mollia_edge.al import classifier_choice
    from mollia_edge.cli import main

    asked = []
    real = classifier_choice.choose_classifier
    monkeypatch.setattr(classifier_choice, "choose_classifier",
                        lambda setting, encoder, texts, rows, *a: asked.append(rows) or real(setting, encoder, texts, rows, *a))
    data = write_input(tmp_path / "in.csv", n=60, seeds=12)
    assert main(args(data, tmp_path / "out.csv", tiny_model_path)) == 0
    assert asked == [60]
    asked.clear()
    (tmp_path / "nopseudo.toml").write_text("[al]\npseudo_weight = 0\n", encoding="utf-8")
    assert main(args(data, tmp_path / "out2.csv", tiny_model_path, "--config", str(tmp_path / "nopseudo.toml"))) == 0
    assert asked and 12 + 2 * 5 <= asked[0] < 60  # the labelled rows and the sample's
