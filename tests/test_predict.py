"""The exported classifier works on its own: `mollia-edge predict` gives the job's classifier
labels and probabilities from texts alone (no LLMs, no session), in both classifier modes."""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mollia_edge.al.classifier import fitted_state, from_fitted_state
from mollia_edge.cli import main
from mollia_edge.label import LabelJob, run_label_job
from mollia_edge.predict import export_classifier
from jobs import write_input

LABELS = ["pos", "neg"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(row[f"p_{label}"]) for label in LABELS] for row in rows])


def predict(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(model), str(data), "-o", str(out), *extra])


@pytest.fixture(scope="module")
def job(tiny_model_path, tmp_path_factory):
    """A head-mode `label` job, and its final classifier's probabilities of every row."""
    folder = tmp_path_factory.mktemp("predict")
    data = write_input(folder / "in.csv")
    out = folder / "out.csv"
    result = run_label_job(LabelJob(input=data, output=out, labels=("pos", "neg"), models=(str(tiny_model_path),),
                                    chat_format="chatml", rounds=2, batch=5, llm_sample=15, classifier="head"))
    assert result.final_classifier.mode == "head"
    return data, out, result.classifier_proba


def test_predict_gives_the_job_classifier_labels_and_probabilities(job, tmp_path):
    data, out, p_job = job
    model = out.with_name(out.name + ".classifier.onnx")
    pred = tmp_path / "pred.csv"
    assert predict(model, data, pred) == 0
    labelled, predicted, original = rows_of(out), rows_of(pred), rows_of(data)
    assert list(predicted[0]) == ["id", "text", "label", "note", "confidence", "p_pos", "p_neg"]
    assert [(r["id"], r["text"], r["note"]) for r in predicted] == [(r["id"], r["text"], r["note"]) for r in original]
    by_classifier = [i for i, row in enumerate(labelled) if row["label_source"] == "classifier"]
    assert len(by_classifier) >= 10
    assert [predicted[i]["label"] for i in by_classifier] == [labelled[i]["label"] for i in by_classifier]
    confidence = np.array([[float(predicted[i]["confidence"]), float(labelled[i]["confidence"])] for i in by_classifier])
    assert np.abs(confidence[:, 0] - confidence[:, 1]).max() < 1e-4  # the job writes 4 decimals
    np.testing.assert_allclose(probabilities(predicted), p_job, atol=1e-4)  # every row, seed and LLM rows too
    assert [row["label"] for row in predicted] == [LABELS[y] for y in p_job.argmax(axis=1)]


def test_the_exported_files(job):
    _, out, _ = job
    model_path = out.with_name(out.name + ".classifier.onnx")
    tokenizer = out.with_name(out.name + ".classifier.tokenizer.json")
    for path in (model_path, tokenizer):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    model = onnx.load(str(model_path))
    inputs = {i.name: (i.type.tensor_type.elem_type, len(i.type.tensor_type.shape.dim)) for i in model.graph.input}
    assert inputs == {"input_ids": (TensorProto.INT64, 2), "attention_mask": (TensorProto.INT64, 2)}
    assert model.graph.output[0].name == "probabilities"
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == LABELS and meta["max_length"] == "128" and meta["mode"] == "head"
    assert meta["producer"] == "mollia-edge label" and len(meta["encoder_sha256"]) == 64
    assert json.loads(tokenizer.read_text())["model"]["type"] == "WordPiece"


def test_top_layers_export_predicts_as_the_classifier(tmp_path):
    """The mode comes from the classifier: top-layers (the top MiniLM layer trained) exported by
    the job's export function gives the classifier's probabilities from the texts alone."""
    from mollia_edge.al.classifier import OnnxClassifier
    from mollia_edge.al.encoder import Encoder, load_top_layers

    data = write_input(tmp_path / "in.csv")
    texts = [row["text"] for row in rows_of(data)]
    encoder = Encoder(max_length=128, intra_op_threads=1)
    states = encoder.hidden_states(texts, below_top=1)
    y = np.array([0 if "good" in text or "great" in text else 1 for text in texts])
    clf = OnnxClassifier("top-layers", n_classes=2, hidden=16, epochs=2, batch_size=20, learning_rate=1e-2,
                         encoder_learning_rate=2e-4, init_layers=load_top_layers(1)).fit(states, y)
    model = tmp_path / "job.csv.classifier.onnx"
    export_classifier(clf, encoder, model, LABELS)
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert meta["mode"] == "top-layers"
    assert predict(model, data, tmp_path / "pred.csv") == 0
    predicted = rows_of(tmp_path / "pred.csv")
    p_clf = clf.predict_proba(states)
    np.testing.assert_allclose(probabilities(predicted), p_clf, atol=1e-4)
    assert [row["label"] for row in predicted] == [LABELS[k] for k in p_clf.argmax(axis=1)]
    # as a resumed job takes it from the session: the same probabilities, the same exported file
    restored = from_fitted_state(*fitted_state(clf))
    np.testing.assert_array_equal(restored.predict_proba(states), p_clf)
    again = tmp_path / "again" / model.name  # the same name: the file's metadata names its tokenizer
    again.parent.mkdir()
    export_classifier(restored, encoder, again, LABELS)
    assert again.read_bytes() == model.read_bytes()


# ---------------------------------------------------------------------------- bad inputs
def _not_onnx(folder: Path, model: Path) -> Path:
    path = folder / "x.classifier.onnx"
    path.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    shutil.copy(model.with_name(model.name.replace(".onnx", ".tokenizer.json")), folder / "x.classifier.tokenizer.json")
    return path


def _tiny_onnx(path: Path, op: str, x: str, elem_type: int, metadata: dict[str, str]) -> Path:
    """A one-node ONNX model ``x`` -> ``probabilities`` with the given metadata."""
    graph = helper.make_graph([helper.make_node(op, [x], ["probabilities"])], "tiny",
                              [helper.make_tensor_value_info(x, elem_type, ["b", 2])],
                              [helper.make_tensor_value_info("probabilities", elem_type, ["b", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _no_metadata(folder: Path, model: Path) -> Path:
    shutil.copy(model.with_name(model.name.replace(".onnx", ".tokenizer.json")), folder / "plain.tokenizer.json")
    return _tiny_onnx(folder / "plain.onnx", "Identity", "input_ids", TensorProto.INT64, {})


def _embeddings_only(folder: Path, model: Path) -> Path:
    """What `label` exported before: the head alone, on sentence embeddings, with labels."""
    metadata = {"labels": json.dumps(LABELS), "producer": "mollia-edge label"}
    return _tiny_onnx(folder / "old.classifier.onnx", "Softmax", "x", TensorProto.FLOAT, metadata)


def _no_tokenizer(folder: Path, model: Path) -> Path:
    path = folder / "moved.classifier.onnx"
    shutil.copy(model, path)
    return path


def _wrong_tokenizer(folder: Path, model: Path) -> Path:
    path = _no_tokenizer(folder, model)
    tokenizer = json.loads(model.with_name(model.name.replace(".onnx", ".tokenizer.json")).read_text())
    tokenizer["truncation"] = None
    (folder / "moved.classifier.tokenizer.json").write_text(json.dumps(tokenizer))
    return path


@pytest.mark.parametrize("make, words", [
    (_not_onnx, ("x.classifier.onnx", "not an ONNX model")),
    (_no_metadata, ("plain.onnx", "not a mollia-edge classifier")),
    (_embeddings_only, ("old.classifier.onnx", "instead of token ids")),
    (_no_tokenizer, ("moved.classifier.tokenizer.json", "not found")),
    (_wrong_tokenizer, ("moved.classifier.tokenizer.json", "not the tokenizer exported")),
])
def test_a_file_that_is_not_an_exported_classifier_is_one_error_line(job, tmp_path, capsys, make, words):
    data, out, _ = job
    model = make(tmp_path, out.with_name(out.name + ".classifier.onnx"))
    pred = tmp_path / "pred.csv"
    refused(predict(model, data, pred), capsys, *words)
    assert not pred.exists()


def test_output_over_the_input_or_the_model_is_refused(job, tmp_path, capsys):
    data, out, _ = job
    model = out.with_name(out.name + ".classifier.onnx")
    copy = tmp_path / "in.csv"
    shutil.copy(data, copy)
    before = copy.read_bytes()
    refused(predict(model, copy, copy), capsys, "would overwrite the input")
    assert copy.read_bytes() == before
    pred = tmp_path / "pred.csv"
    refused(predict(model, copy, pred, "--text-column", "body"), capsys, "no column 'body'")
    assert not pred.exists()
    tokenizer = out.with_name(out.name + ".classifier.tokenizer.json")
    refused(main(["predict", str(model), str(copy), "-o", str(tokenizer)]), capsys, "would overwrite the tokenizer")
    assert json.loads(tokenizer.read_text())["model"]["type"] == "WordPiece"


def refused(code: int, capsys, *words: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], err


def test_rows_longer_than_the_classifier_reads_are_counted_aloud(job, tmp_path, capsys):
    _, out, _ = job
    model = out.with_name(out.name + ".classifier.onnx")
    data = tmp_path / "long.csv"
    data.write_text("text\nshort one\n" + " ".join(["a long review"] * 200) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert predict(model, data, tmp_path / "pred.csv") == 0
    err = capsys.readouterr().err
    assert "1 row(s) longer than the classifier reads at once" in err
