"""Multi-label tasks end to end: label sets in and out, every label's probability, the quality
figures against gold, a job killed in the LLM stage resuming to the same output, bad input in
one line (:mod:`mollia_edge.multilabel`)."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from test_file_safety import _llm_outputs, killed_once_stored, slow_job

from mollia_edge.cli import main
from mollia_edge.errors import DataError
from mollia_edge.llm.signals import AnnotationSignals
from mollia_edge.multilabel.labels import cell_labels, indicator, label_set_of, multilabel_quality
from mollia_edge.multilabel.prompts import label_probabilities

TOPICS = {"sport": "match goal team player win".split(), "politics": "vote minister election party law".split(),
          "tech": "computer phone software chip internet".split()}


def _input(path, n=40, seeds=16):
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "gold"])
        for i in range(n):
            topics = sorted(rng.sample(list(TOPICS), 1 + i % 2))
            words = [rng.choice(TOPICS[t]) for t in topics for _ in range(3)]
            gold = "|".join(topics)
            writer.writerow([" ".join(words) + f" #{i}", gold if i < seeds else "", gold])
    return path


def _args(data, out, model, *extra):
    """A tiny multi-label job: the LLMs read the 16 seed rows and a sample of 10, no loop (its test
    asks for rounds); ``--prune off``: the tiny random models add nothing, and these jobs test what
    their outputs become."""
    return ["label", str(data), "--multi-label", "--models", str(model), "--chat-format", "chatml",
            "--llm-sample", "10", "--rounds", "0", "--prune", "off", "--gold-column", "gold", "--quiet",
            "-o", str(out), *extra]


def test_label_cells_are_sets_in_any_spelling():
    assert cell_labels("a|b", "here") == ("a", "b") and cell_labels(' ["b", "a"] ', "here") == ("b", "a")
    assert cell_labels(["a", "a", " c "], "here") == ("a", "c")  # a JSONL/Parquet list
    assert cell_labels("", "here") is None and cell_labels(None, "here") is None and cell_labels("None", "here") == ()
    with pytest.raises(DataError, match="not one"):
        cell_labels("[a, b", "file.csv, row 3")
    with pytest.raises(DataError, match="JSON object"):
        cell_labels({"a": 1}, "file.jsonl, row 2")
    with pytest.raises(DataError, match="not text"):
        cell_labels(["a", 1], "file.jsonl, row 2")
    sets = [("a", "b"), None, (), ("c",)]
    assert label_set_of(sets, None) == ("a", "b", "c")
    with pytest.raises(DataError, match="not in --labels"):
        label_set_of(sets, ("a", "b"))
    y, seeded = indicator(sets, ("a", "b", "c"))
    assert y.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]] and seeded.tolist() == [1, 0, 1, 1]


def test_each_label_is_its_yes_answers_share_of_its_two_answers():
    logprob = np.log(np.array([[0.3, 0.1, 0.02, 0.18]]))  # a: yes .3 / no .1; b: yes .02 / no .18
    signals = AnnotationSignals(("a: yes", "a: no", "b: yes", "b: no"), logprob, np.array([[0.5, 0.0, 0.0, 0.5]]),
                                np.zeros(1), ((),), np.zeros(1, bool), np.ones(1, np.int64))
    p, c = label_probabilities(signals)
    np.testing.assert_allclose(p, [[0.75, 0.1]])
    np.testing.assert_allclose(c, [[1.0, 0.0]])


def test_the_quality_figures_are_scikit_learns():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], bool)
    predicted = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]], bool)
    q = multilabel_quality(predicted, gold)
    assert q["subset_accuracy"] == pytest.approx(1 / 3, abs=1e-4) and q["hamming_loss"] == pytest.approx(3 / 9, abs=1e-4)
    assert q["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2), abs=1e-4)  # tp 3, fp 1, fn 2


def test_a_multi_label_job_writes_label_sets_and_every_labels_probability(tmp_path, tiny_model_path):
    data, out = _input(tmp_path / "in.csv"), tmp_path / "out.csv"
    assert main(_args(data, out, tiny_model_path)) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 40 and {"label", "label_source", "confidence", "needs_review"} <= rows[0].keys()
    assert all(r["label"] == r["gold"] for r in rows[:16]) and {r["label_source"] for r in rows[:16]} == {"seed"}
    assert [r["label_source"] for r in rows[16:]].count("llm_mixture") == 10  # the sample
    for row in rows:
        probabilities = dict(cell.split(":") for cell in row["confidence"].split("|"))
        assert set(probabilities) == set(TOPICS)
        applies = {label for label, p in probabilities.items() if float(p) >= 0.5}
        assert row["label"] == ("|".join(sorted(applies)) or "none")
    report = json.loads((tmp_path / "out.csv.report.json").read_text())
    final = report["gold"]["final"]
    assert final["rows"] == 24 and {"micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"} <= final.keys()
    assert report["labels"] == sorted(TOPICS) and report["multi_label"] is True
    assert "micro-F1" in (tmp_path / "out.csv.report.txt").read_text()
    # the exported classifier labels texts on its own, with label sets
    assert main(["predict", str(tmp_path / "out.csv.classifier.onnx"), str(data), "-o", str(tmp_path / "p.csv")]) == 0
    predicted = list(csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8")))
    for row in predicted:
        applies = {label for label in TOPICS if float(row[f"p_{label}"]) >= 0.5}
        assert row["label"] == ("|".join(sorted(applies)) or "none")
    classifier_rows = [i for i, r in enumerate(rows) if r["label_source"] == "classifier"]
    assert all(predicted[i]["label"] == rows[i]["label"] for i in classifier_rows)


def test_a_multi_label_job_killed_in_the_llm_stage_resumes_to_the_same_output(tmp_path, tiny_model_path, monkeypatch):
    from mollia_edge.llm import engine

    monkeypatch.setattr(engine, "GROUP_WORK", 1)  # the runs group texts alike (as the killed one does)
    data = _input(tmp_path / "in.csv")
    reference = tmp_path / "reference" / "out.csv"
    reference.parent.mkdir()
    assert main(_args(data, reference, tiny_model_path)) == 0
    out = tmp_path / "out.csv"
    session = out.with_name(out.name + ".session.sqlite")
    kept = killed_once_stored(slow_job(_args(data, out, tiny_model_path), seconds=0.3, group_work=1), session)
    total = len(_llm_outputs(reference.with_name(reference.name + ".session.sqlite")))
    assert 3 <= len(kept) < total and not out.exists()
    assert main(_args(data, out, tiny_model_path)) == 0
    after = _llm_outputs(session)
    assert {h: after[h] for h in kept} == kept and len(after) == total  # kept, not computed again
    assert out.read_bytes() == reference.read_bytes()


def test_a_seed_label_outside_the_label_set_is_one_clear_line(tmp_path, tiny_model_path, capsys):
    data, out = _input(tmp_path / "in.csv"), tmp_path / "out.csv"
    assert main(_args(data, out, tiny_model_path, "--labels", "sport,tech")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'politics'" in err[0] and "not in --labels" in err[0], err
    assert not out.exists()


def test_demonstrations_alternate_yes_and_no_per_label_and_fewer_shots_keep_the_first():
    from mollia_edge.multilabel.job import _with_shots
    from mollia_edge.multilabel.prompts import demonstrations_from

    texts = [f"text {i}" for i in range(8)]
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 0]], bool)
    demos, used = demonstrations_from(texts, y, ("a", "b"), 2, np.random.default_rng(0))
    assert sorted(answer for _, answer in demos) == ["a: no", "a: yes", "b: no", "b: yes"] and len(used) == 4
    for text, answer in demos:
        row, (label, word) = texts.index(text), answer.split(": ")
        assert y[row, ("a", "b").index(label)] == (word == "yes")
    assert sorted(answer for _, answer in _with_shots(demos, 1)) == ["a: yes", "b: yes"]
    assert _with_shots(demos, 0) == ()


def test_a_jsonl_file_takes_and_gives_label_sets_as_lists(tmp_path, tiny_model_path):
    rows = list(csv.DictReader(_input(tmp_path / "in.csv").open(encoding="utf-8")))
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"], "label": r["label"].split("|") if r["label"] else None,
                                        "gold": r["gold"].split("|")}) + "\n" for r in rows), encoding="utf-8")
    assert main(_args(data, tmp_path / "out.jsonl", tiny_model_path)) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in out[:16]] == [r["gold"] for r in out[:16]]
    assert all(isinstance(r["label"], list) and set(r["confidence"]) == set(TOPICS) for r in out)
    assert all(sorted(r["label"]) == sorted(k for k, p in r["confidence"].items() if p >= 0.5) for r in out[16:])


def test_the_loop_queries_the_rows_the_classifier_is_least_sure_of():
    from mollia_edge.errors import ConfigError
    from mollia_edge.multilabel.loop import mean_binary_entropy, query, strategy_of

    proba = np.array([[0.5, 0.5], [0.99, 0.01], [0.6, 0.1], [0.5, 0.9], [0.0, 1.0]])
    entropy = mean_binary_entropy(proba)
    assert entropy[0] == pytest.approx(np.log(2)) and entropy[4] == pytest.approx(0, abs=1e-9)
    rng = np.random.default_rng(0)
    x = np.eye(5)
    assert query("entropy", proba, x, np.array([1]), np.array([0, 2, 3, 4]), 2, rng).tolist() == [0, 3]
    assert len(query("coreset", proba, x, np.array([1]), np.array([0, 2, 3, 4]), 3, rng)) == 3
    assert query("random", proba, x, np.array([1]), np.array([2]), 5, rng).tolist() == [2]
    assert strategy_of("bemps") == "entropy" and strategy_of("coreset") == "coreset"
    with pytest.raises(ConfigError, match="no multi-label form"):
        strategy_of("breaking-ties")


def test_a_multi_label_job_reads_its_queried_rows_and_reports_the_rounds(tmp_path, tiny_model_path, capsys):
    data, out = _input(tmp_path / "in.csv"), tmp_path / "out.csv"
    assert main(_args(data, out, tiny_model_path, "--rounds", "2", "--batch", "3", "--strategy", "coreset")) == 0
    report = json.loads((tmp_path / "out.csv.report.json").read_text())
    assert report["active_learning"]["strategy"] == "coreset"
    assert [r["queried"] for r in report["active_learning"]["rounds"]] == [3, 3] and report["llm_rows"] == 16 + 10 + 6
    assert main(_args(data, tmp_path / "other.csv", tiny_model_path, "--strategy", "noise-stability")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no multi-label form" in err[-1] and not (tmp_path / "other.csv").exists()


def test_a_task_file_makes_a_job_multi_label_and_words_its_prompt(tmp_path, tiny_model_path, monkeypatch):
    """`multi_label = true` in the task file: the job is multi-label without --multi-label; the
    item and the descriptions reach every model's prompt."""
    import mollia_edge.llm.annotator as annotator_module

    prompts = []
    real = annotator_module.LLMAnnotator.use_prompt

    def spy(self, prompt):
        prompts.append(prompt.render("TEXT"))
        return real(self, prompt)

    monkeypatch.setattr(annotator_module.LLMAnnotator, "use_prompt", spy)
    task = tmp_path / "task.toml"
    task.write_text('item = "headline"\nmulti_label = true\n[labels.politics]\ndescription = "government and votes"\n'
                    '[labels.sport]\n[labels.tech]\ndescription = "computers and phones"\n', encoding="utf-8")
    data, out = _input(tmp_path / "in.csv"), tmp_path / "out.csv"
    argv = [a for a in _args(data, out, tiny_model_path, "--task", str(task)) if a != "--multi-label"]
    assert main(argv) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[1]["label"] == rows[1]["gold"] and "|" in rows[1]["label"]  # a multi-label seed row
    assert prompts and all("politics (government and votes); sport; tech (computers and phones)" in p for p in prompts)
    assert all("headline" in p for p in prompts)
    bad = tmp_path / "bad.toml"
    bad.write_text('multi_label = "yes"\n[labels.a]\n[labels.b]\n', encoding="utf-8")
    assert main([*argv[:-2], "--task", str(bad), "-o", str(tmp_path / "o2.csv")]) == 2


def test_a_budget_that_cuts_the_batch_buys_fewer_rounds_not_smaller_ones():
    from mollia_edge.multilabel.job import MIN_BATCH, _fewer_rounds

    assert _fewer_rounds(10, 4) == (2, 20) and _fewer_rounds(10, 1) == (1, 10) and _fewer_rounds(3, MIN_BATCH) == (3, 20)


def test_a_useful_model_is_kept_and_a_random_one_released_before_the_sample(tmp_path, tiny_model_path, monkeypatch):
    """Value before spend, per label: an oracle model (its yes answers follow the topic words) is
    kept, a random-weight one is released after the seed rows; without --prune off."""
    import dataclasses

    from tiny_gguf import write_tiny_gguf

    import mollia_edge.llm.annotator as annotator_module

    calls: dict[str, int] = {}
    real = annotator_module.LLMAnnotator.annotate

    def annotate(self, texts, progress=None):
        calls[self.model_path.stem] = calls.get(self.model_path.stem, 0) + len(texts)
        signals = real(self, texts, progress)
        if self.model_path.stem != "oracle":
            return signals
        labels = [answer.split(": ")[0] for answer in self.prompt.labels[::2]]
        applies = np.array([[any(w in t.split() for w in TOPICS[k]) for k in labels] for t in texts])
        yes = np.where(applies, 0.9, 0.1)
        logprob = np.log(np.stack([yes, 1 - yes], axis=2).reshape(len(texts), -1) / len(labels))
        return dataclasses.replace(signals, label_logprob=logprob, consistency=np.exp(logprob))

    monkeypatch.setattr(annotator_module.LLMAnnotator, "annotate", annotate)
    oracle, noise = write_tiny_gguf(tmp_path / "oracle.gguf", seed=4), write_tiny_gguf(tmp_path / "noise.gguf", seed=3)
    data, out = _input(tmp_path / "in.csv"), tmp_path / "out.csv"
    argv = [a for a in _args(data, out, tiny_model_path, "--shots", "0") if a not in ("--prune", "off")]
    argv[argv.index("--models") + 1] = f"{noise},{oracle}"
    assert main(argv) == 0
    report = json.loads((tmp_path / "out.csv.report.json").read_text())
    assert report["llm_value"]["noise"]["decision"] == "released" and report["llm_value"]["oracle"]["decision"] == "kept"
    assert report["models"] == ["oracle"] and calls["noise"] == 16 and calls["oracle"] > 16
