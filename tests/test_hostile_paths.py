"""The last hostile-input defects (issue 30): links at the paths a job writes, a full disk,
numbers too long to read, settings that are probably mistakes, long user strings in messages,
what the store keeps of sampled answers. Each case ends in one `error:` line or a job that says
what it did; never a traceback, never a changed input."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
from pathlib import Path

import pytest

from mollia_edge import files
from mollia_edge.cli import main
from mollia_edge.data import load_table
from mollia_edge.errors import DataError
from mollia_edge.files import SessionLock
from jobs import args, write_input

VICTIM_TEXT = "the user's own file, which no job may change\n"


def one_error_line(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:] and all(line.startswith("warning:") for line in lines[:-1]), err
    for word in words:
        assert word in lines[-1], err
    return lines[-1]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


# ---------------------------------------------------------------------------- 1. links
REFUSED_LINKS = [".session.sqlite", ".session.sqlite.lock", ".session.sqlite-wal", ".session.sqlite-shm",
                 ".session.sqlite-journal", ".session.sqlite.embeddings"]


@pytest.mark.parametrize("suffix", REFUSED_LINKS)
def test_a_link_at_a_session_path_is_refused_and_its_target_untouched(tiny_model_path, tmp_path, capsys, victim,
                                                                      suffix):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    before = data.read_bytes()
    link = out.with_name(out.name + suffix)
    link.symlink_to(data if suffix == ".session.sqlite.lock" else victim)  # the case: the input itself
    line = one_error_line(capsys, main(args(data, out, tiny_model_path)), "symbolic link")
    assert str(link) in line
    assert data.read_bytes() == before and victim.read_text() == VICTIM_TEXT
    assert link.is_symlink() and not out.exists()


def test_a_link_at_the_lock_of_an_explicit_session_is_refused(tiny_model_path, tmp_path, capsys, victim):
    data = write_input(tmp_path / "in.csv")
    session = tmp_path / "my.sqlite"
    session.with_name("my.sqlite.lock").symlink_to(victim)
    code = main(args(data, tmp_path / "out.csv", tiny_model_path, "--session", str(session)))
    one_error_line(capsys, code, "symbolic link")
    assert victim.read_text() == VICTIM_TEXT


def test_the_lock_never_follows_a_link(tmp_path, victim):
    session = tmp_path / "s.sqlite"
    session.with_name("s.sqlite.lock").symlink_to(victim)
    with pytest.raises(DataError, match="symbolic link"), SessionLock(session):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_links_at_the_outputs_are_replaced_not_followed_and_a_new_session_folder_is_made(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    links = [out.with_name(out.name + s) for s in ("", ".classifier.onnx", ".classifier.tokenizer.json",
                                                   ".report.json", ".report.txt")]
    victims = [tmp_path / f"victim{i}.txt" for i in range(len(links))]  # one each: a shared one is refused
    for link, target in zip(links, victims):
        target.write_text(VICTIM_TEXT)
        link.symlink_to(target)
    session = tmp_path / "new" / "folder" / "s.sqlite"  # item 4: created as -o's would be
    assert main(args(data, out, tiny_model_path, "--session", str(session))) == 0
    assert all(target.read_text() == VICTIM_TEXT for target in victims)
    for link in links:
        assert not link.is_symlink() and link.is_file(), link
    assert session.is_file()


# ---------------------------------------------------------------------------- 2. internal errors
def test_a_json_integer_too_long_to_read_is_one_line(tiny_model_path, tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    rows = [{"text": f"row {i}", "label": "pos" if i % 2 else ""} for i in range(6)]
    lines = [json.dumps(r) for r in rows]
    lines[3] = '{"text": "a number", "id": ' + "7" * 5000 + "}"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 4 holds an integer of 5,000 digits"):
        load_table(data)
    out = tmp_path / "out.csv"
    one_error_line(capsys, main(args(data, out, tiny_model_path)), "5,000 digits")
    one_error_line(capsys, main(["annotate", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path),
                                 "--store", str(tmp_path / "s.sqlite")]), "5,000 digits")
    assert not out.exists()


def _full_disk_at(monkeypatch, name_part: str) -> None:
    """Every flush to disk of a file whose name holds ``name_part`` fails as on a full disk."""
    fsync = os.fsync

    def full(fd: int) -> None:
        if name_part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full)


def test_a_full_disk_at_the_outputs_leaves_none_and_the_rerun_resumes(tiny_model_path, tmp_path, capsys,
                                                                      monkeypatch):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        _full_disk_at(patch, ".out.csv.report.txt.")  # the third of the five files
        line = one_error_line(capsys, main(args(data, out, tiny_model_path)), "no space left on device")
    assert str(out.with_name("out.csv.report.txt")) in line
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("out.csv", ".out.csv")))
    assert left == ["out.csv.session.sqlite", "out.csv.session.sqlite.embeddings", "out.csv.session.sqlite.lock"]
    with sqlite3.connect(out.with_name("out.csv.session.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT COUNT(*) FROM llm_outputs").fetchone()[0]
    assert stored > 0
    assert main(args(data, out, tiny_model_path)) == 0  # space freed: the rerun ends the job
    assert out.is_file() and out.with_name("out.csv.report.txt").is_file()


def test_a_full_disk_under_predict_is_one_line(tiny_model_path, tmp_path, capsys, monkeypatch):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    assert main(args(data, out, tiny_model_path)) == 0
    capsys.readouterr()
    predicted = tmp_path / "predicted.csv"
    with monkeypatch.context() as patch:
        _full_disk_at(patch, ".predicted.csv.")
        one_error_line(capsys, main(["predict", str(out.with_name("out.csv.classifier.onnx")), str(data), "-o",
                                     str(predicted)]), "no space left on device", str(predicted))
    assert not predicted.exists() and not list(tmp_path.glob(".predicted.csv.*"))


# ---------------------------------------------------------------------------- 3. probable mistakes
@pytest.mark.parametrize("extra, words", [
    (["--models", ""], ["--models is empty"]),
    (["--models", " , ,"], ["--models is empty"]),
    (["--rounds", "1000000000"], ["--rounds must be in [0, 10000]"]),
    (["--batch", "0"], ["--batch must be in [1,"]),
])
def test_probable_mistakes_are_refused(tiny_model_path, tmp_path, capsys, extra, words):
    data = write_input(tmp_path / "in.csv")
    argv = args(data, tmp_path / "out.csv", tiny_model_path)
    at = argv.index("--models") if extra[0] == "--models" else len(argv)
    argv = argv[:at] + extra + argv[at + 2:] if extra[0] == "--models" else argv + extra
    one_error_line(capsys, main(argv), *words)


def test_annotate_n_zero_is_refused(capsys, tmp_path):
    code = main(["annotate", "--dataset", "rotten-tomatoes", "--n", "0", "--store", str(tmp_path / "s.sqlite")])
    one_error_line(capsys, code, "--n must be >= 1")


# ---------------------------------------------------------------------------- 5. task-file labels
@pytest.mark.parametrize("labels, words", [
    ('[labels."caf\\u00e9"]\n[labels."cafe\\u0301"]\n', ["same label after Unicode normalisation"]),
    ('[labels."pos\\u200b"]\n[labels.pos]\n', ["same label"]),
    ('[labels."po\\u0007s"]\n[labels.neg]\n', ["control character"]),
])
def test_task_file_labels_pass_the_label_checks(tiny_model_path, tmp_path, capsys, labels, words):
    data = write_input(tmp_path / "in.csv")
    task = tmp_path / "task.toml"
    task.write_text(labels, encoding="utf-8")
    argv = [a for a in args(data, tmp_path / "out.csv", tiny_model_path) if a != "pos,neg" and a != "--labels"]
    one_error_line(capsys, main([*argv, "--task", str(task)]), "task file", *words)


# ---------------------------------------------------------------------------- 6. long strings
def test_argparse_errors_cut_long_values(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["label", "in.csv", "-o", str(tmp_path / "o.csv"), "--rounds", "R" * 500])
    err = capsys.readouterr().err
    assert "R" * 41 not in err and "R" * 40 + "…" in err


def test_unknown_config_keys_and_sections_are_cut(tiny_model_path, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv")
    for text in (f"[{'s' * 120}]\nx = 1\n", f"[al]\n{'k' * 120} = 1\n", f'[models."{"m" * 120}"]\nn_ctx = 1024\nz = 1\n'):
        config = tmp_path / "c.toml"
        config.write_text(text)
        line = one_error_line(capsys, main(args(data, tmp_path / "out.csv", tiny_model_path, "--config", str(config))))
        assert max(len(word) for word in line.split()) < 60, line


def test_a_config_file_with_a_bom_is_read(tiny_model_path, tmp_path, capsys):
    from mollia_edge.config import load_config

    config = tmp_path / "c.toml"
    config.write_bytes("\ufeff[al]\nrounds = 3\n".encode())
    assert load_config(config).al.rounds == 3


# ---------------------------------------------------------------------------- 10. one output, one job
def test_a_second_job_on_the_same_output_with_another_session_is_refused(tiny_model_path, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    held = os.open(out.with_name("out.csv.session.sqlite.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(held, b"4242\n", 0)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first job, writing out.csv
        code = main(args(data, out, tiny_model_path, "--session", str(tmp_path / "other.sqlite")))
        one_error_line(capsys, code, "output", "being written by process 4242")
    finally:
        os.close(held)
    assert not out.exists()


def test_a_damaged_encoder_file_is_one_line_before_any_work(tiny_model_path, tmp_path, capsys, monkeypatch):
    from mollia_edge.al.encoder import SHIPPED_ENCODER_FILES, encoder_files_dir

    folder = tmp_path / "models" / "encoders" / encoder_files_dir().name
    folder.mkdir(parents=True)
    for name in (*SHIPPED_ENCODER_FILES, "manifest.json"):
        (folder / name).write_bytes((encoder_files_dir() / name).read_bytes())
    damaged = folder / "top_layers.npz"
    damaged.write_bytes(damaged.read_bytes()[:100_000])  # cut short, as a full disk or a killed copy leaves it
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    code = main(["--models-dir", str(tmp_path / "models"), *args(data, out, tiny_model_path)])
    one_error_line(capsys, code, "top_layers.npz is damaged", "mollia-edge setup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "models"]  # nothing made, not even a lock


def test_al_max_length_too_short_to_read_a_text_is_refused(tiny_model_path, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv")
    config = tmp_path / "c.toml"
    config.write_text("[al]\nmax_length = 2\n")
    code = main(args(data, tmp_path / "out.csv", tiny_model_path, "--config", str(config)))
    one_error_line(capsys, code, "al.max_length must be in [16, 512]")


def test_sampled_answers_are_stored_as_labels_never_as_text(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "in.csv", n=12)
    store = tmp_path / "s.sqlite"
    assert main(["annotate", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format",
                 "chatml", "--consistency", "sampled", "--store", str(store)]) == 0
    with sqlite3.connect(store) as db:
        stored = [json.loads(a) for (a,) in db.execute("SELECT answers FROM llm_outputs")]
    assert len(stored) == 12 and all(len(answers) > 1 for answers in stored)
    assert {a for answers in stored for a in answers} <= {"pos", "neg", ""}
