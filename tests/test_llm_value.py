"""Value before spend: an LLM that adds nothing to the text annotator on the seed rows is
released before it annotates anything else; a useful one is kept (:mod:`mollia_edge.llm_value`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import re

import numpy as np
import pytest
from tiny_gguf import write_tiny_gguf

from mollia_edge.cli import main
from mollia_edge.llm_value import model_values

LABELS = ("even", "odd")


def _noisy(y: np.ndarray, k: int, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Scores (m, K) whose top label is ``y`` on about ``accuracy`` of the rows."""
    p = rng.dirichlet(np.ones(k), len(y))
    right = rng.random(len(y)) < accuracy
    top = np.where(right, y, rng.integers(0, k, len(y)))
    p[np.arange(len(y)), top] += 2.0
    return p / p.sum(axis=1, keepdims=True)


def test_a_useful_model_is_kept_and_a_random_one_released():
    rng = np.random.default_rng(0)
    k, y = 4, np.random.default_rng(1).integers(0, 4, 50)
    values = model_values(["random", "useful", "constant"],
                          [rng.dirichlet(np.ones(k), 50), _noisy(y, k, 0.9, rng), np.full((50, k), 0.25)],
                          _noisy(y, k, 0.5, rng), y, k)
    assert [v.kept for v in values] == [False, True, False]
    assert values[1].gain > 0.1 and values[1].seed_accuracy > 0.8
    assert "add nothing to the text annotator" in values[0].why


def test_two_good_models_that_agree_are_both_kept_whatever_their_order():
    """Each model is judged against the text annotator alone: the second of two models that agree
    adds little to the first on the seed rows, yet the seed rows cannot tell which is better."""
    rng = np.random.default_rng(2)
    k, y = 2, np.random.default_rng(3).integers(0, 2, 50)
    first = _noisy(y, k, 0.85, rng)
    twin = np.clip(first + rng.normal(0, 0.02, first.shape), 1e-3, None)
    twin /= twin.sum(axis=1, keepdims=True)
    text = _noisy(y, k, 0.6, rng)
    for names, scores in ((["first", "twin"], [first, twin]), (["twin", "first"], [twin, first])):
        values = model_values(names, scores, text, y, k)
        assert [v.kept for v in values] == [True, True]
        assert abs(values[0].gain - values[1].gain) < 0.05  # the same value in either place


def _parity_input(path, n=60, seeds=30):
    """Texts whose label is the parity of their number: the sentence embeddings cannot tell it,
    an oracle LLM can."""
    rng = random.Random(0)
    words = ["good", "bad", "great", "awful", "fine", "terrible", "lovely", "poor"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(4)) + f" number {i}"
            writer.writerow([text, LABELS[i % 2] if i < seeds else ""])
    return path


@pytest.fixture
def oracle_and_random(tmp_path, monkeypatch):
    """Two tiny GGUFs: ``oracle.gguf`` answers each text's parity (its annotator's scores are
    replaced), ``random.gguf`` is a random-weight model; returns their paths and the calls made."""
    import mollia_edge.llm.panel as panel_module

    calls: dict[str, int] = {}
    real = panel_module.LLMAnnotator

    class Oracle(real):
        def annotate(self, texts, progress=None):
            calls[self.model_path.stem] = calls.get(self.model_path.stem, 0) + len(texts)
            signals = super().annotate(texts, progress)
            if self.model_path.stem != "oracle":
                return signals
            odd = np.array([int(re.search(r"number (\d+)", t).group(1)) % 2 for t in texts])
            logprob = np.log(np.where(np.arange(2)[None, :] == odd[:, None], 0.9, 0.1))
            return dataclasses.replace(signals, label_logprob=logprob, consistency=np.exp(logprob))

    monkeypatch.setattr(panel_module, "LLMAnnotator", Oracle)
    random_model = write_tiny_gguf(tmp_path / "random.gguf", seed=3)
    oracle = write_tiny_gguf(tmp_path / "oracle.gguf", seed=4)
    return oracle, random_model, calls


def _config(tmp_path, lines=""):
    """A config without the final classifier's cross-fitting (5 more trainings, a third of
    these jobs' time): the value check does not depend on it (tests/test_confidence.py tests it)."""
    path = tmp_path / "c.toml"
    path.write_text(f"[al]\ncalibrate = false\n{lines}")
    return str(path)


def _job(tmp_path, models, *extra, config=""):
    data = _parity_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    argv = ["label", str(data), "--labels", ",".join(LABELS), "--models", ",".join(map(str, models)),
            "--chat-format", "chatml", "--rounds", "2", "--batch", "5", "--llm-sample", "10", "--shots", "0",
            "--classifier", "head", "--config", _config(tmp_path, config), "--quiet", "-o", str(out), *extra]
    assert main(argv) == 0
    return json.loads((tmp_path / "out.csv.report.json").read_text())


def test_a_job_releases_the_random_model_and_keeps_the_useful_one(tmp_path, oracle_and_random):
    oracle, random_model, calls = oracle_and_random
    report = _job(tmp_path, [random_model, oracle])
    value = report["llm_value"]
    assert value["random"]["decision"] == "released" and value["oracle"]["decision"] == "kept"
    assert report["models"] == ["oracle"]
    assert calls["random"] == 30  # the seed rows only: released before the sample and the loop
    assert calls["oracle"] > 30
    assert report["gold" if "gold" in report else "llm_value"]


def test_a_job_where_no_model_helps_makes_no_llm_call_after_the_check(tmp_path, oracle_and_random):
    _, random_model, calls = oracle_and_random
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=5)
    report = _job(tmp_path, [random_model, other])
    assert {v["decision"] for v in report["llm_value"].values()} == {"released"}
    assert calls == {"random": 30, "other": 30} and report["models"] == []
    assert any("no LLM adds to the text annotator" in w for w in report["warnings"])
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out.csv.classifier.onnx").is_file()


def test_prune_off_keeps_every_model(tmp_path, oracle_and_random):
    _, random_model, calls = oracle_and_random
    report = _job(tmp_path, [random_model], config='[llm]\nprune = "off"\n')
    assert report["models"] == ["random"] and report["llm_value"] is None and calls["random"] > 30


def test_a_model_that_adds_nothing_zero_shot_is_released_before_the_choice_of_demonstrations(tmp_path,
                                                                                            oracle_and_random):
    """With the number of shots chosen per model, the value check looks first at the seed rows
    under the cheapest prompt: the random model reads each seed row once, and no demonstrations
    are tried (without the first look it reads them under 0, 1 and 2 shots and once more: 120)."""
    _, random_model, calls = oracle_and_random
    data = _parity_input(tmp_path / "in.csv")
    argv = ["label", str(data), "--labels", ",".join(LABELS), "--models", str(random_model),
            "--chat-format", "chatml", "--rounds", "0", "--llm-sample", "10", "--classifier", "head", "--config", _config(tmp_path), "--quiet",
            "-o", str(tmp_path / "out.csv")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out.csv.report.json").read_text())
    assert calls == {"random": 30}, calls
    assert report["llm_value"]["random"]["why"].startswith("zero-shot") and report["models"] == []
