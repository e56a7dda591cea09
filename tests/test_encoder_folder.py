"""``al.encoder``: a job reads its texts with an exported encoder folder when it is given one."""

from __future__ import annotations

import hashlib
import json
import shutil

import onnx
import pytest
from jobs import args, write_input

from mollia_edge.al.encoder import CONFIG_FILE, TOKENIZER_FILE, TOP_LAYERS_FILE, default_model_path, encoder_files_dir
from mollia_edge.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A folder laid out as scripts/export_encoder.py writes it: the shipped encoder with one
    metadata entry added, so its file (and sha256) differs from the shipped one."""
    folder = tmp_path_factory.mktemp("my-encoder")
    model = onnx.load(str(default_model_path()))
    onnx.helper.set_model_props(model, {"exported_by": "a test"})
    onnx.save(model, str(folder / "model.onnx"))
    for name in (TOKENIZER_FILE, CONFIG_FILE, TOP_LAYERS_FILE):
        shutil.copyfile(encoder_files_dir() / name, folder / name)
    return folder, hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["head", "top-layers"])
def test_a_job_reads_its_texts_with_the_encoder_folder_it_is_given(tiny_model_path, tmp_path, exported, mode):
    folder, sha = exported
    (tmp_path / "encoder.toml").write_text(f"[al]\nencoder = {json.dumps(str(folder))}\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    argv = args(write_input(tmp_path / "in.csv"), out, tiny_model_path, "--config", str(tmp_path / "encoder.toml"))
    argv[argv.index("--classifier") + 1] = mode
    assert main(argv) == 0
    report = json.loads(out.with_name("out.csv.report.json").read_text())
    assert report["encoder"] == {"folder": str(folder), "sha256": sha}
    classifier = onnx.load(str(out.with_name("out.csv.classifier.onnx")))
    assert {p.key: p.value for p in classifier.metadata_props}["encoder_sha256"] == sha


def test_an_encoder_folder_that_is_not_there_stops_the_job_before_anything_runs(tiny_model_path, tmp_path, capsys):
    (tmp_path / "encoder.toml").write_text('[al]\nencoder = "no-such-encoder"\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(args(write_input(tmp_path / "in.csv"), out, tiny_model_path, "--config", str(tmp_path / "encoder.toml"))) != 0
    err = capsys.readouterr().err
    assert "al.encoder" in err and "export_encoder.py" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists() and not out.with_name("out.csv.session.sqlite").exists()
