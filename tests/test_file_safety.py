"""Nothing lost, nothing overwritten: refused paths, private files, stale temporaries, one job
per session, and LLM outputs kept across a kill in the LLM stage."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mollia_edge.cli import main
from mollia_edge.files import SessionLock
from mollia_edge.llm import engine
from jobs import args, write_input

SLOW_DRIVER = """
import sys, time
from mollia_edge.llm import engine
engine.GROUP_WORK = {group_work}  # as for a big model: few texts share a group
run_group = engine.LlamaEngine._run_group

def slow(self, jobs, *rest):
    time.sleep({seconds} * len(jobs))  # and every text costs time
    return run_group(self, jobs, *rest)

engine.LlamaEngine._run_group = slow
from mollia_edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def slow_job(argv: list[str], seconds: float, group_work: float = 5e11) -> subprocess.Popen:
    driver = SLOW_DRIVER.format(seconds=seconds, group_work=group_work)
    return subprocess.Popen([sys.executable, "-c", driver, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)


def refused(argv: list[str], capsys, *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def test_annotate_refuses_to_write_over_its_input(tiny_model_path, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv")
    before = snapshot(data)
    argv = ["annotate", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format", "chatml",
            "--store", str(tmp_path / "store.sqlite")]
    refused([*argv, "--out", str(data)], capsys, "overwrite the input")
    refused([*argv[:-2], "--store", str(data)], capsys, "overwrite the input")
    refused([*argv, "--out", str(tmp_path)], capsys, "folder")
    refused([*argv, "--out", str(tmp_path / "store.sqlite")], capsys, "both")
    assert snapshot(data) == before


@pytest.mark.parametrize("where", ["input", "folder", "output", "table"])
def test_label_refuses_a_session_path_that_is_not_a_session_store(tiny_model_path, tmp_path, capsys, where):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    other = tmp_path / "other.csv"
    other.write_text("text\nsome row\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    session = {"input": data, "folder": folder, "output": out, "table": other}[where]
    before = {p: snapshot(p) for p in (data, other)}
    refused(args(data, out, tiny_model_path, "--session", str(session)), capsys)
    assert {p: snapshot(p) for p in (data, other)} == before
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert not out.exists()


def test_outputs_are_private_and_stale_temporaries_are_removed(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    stale = [tmp_path / ".out.csv.k3j2h1.tmp", tmp_path / ".out.csv.report.json.4242.tmp"]
    for path in stale:
        path.write_text("text of a killed writer")
    keep = tmp_path / ".in.csv.k3j2h1.tmp"  # not one of this job's outputs
    keep.write_text("someone else's")
    old_umask = os.umask(0o022)
    try:
        assert main(args(data, out, tiny_model_path)) == 0
    finally:
        os.umask(old_umask)
    assert not any(path.exists() for path in stale) and keep.exists()
    for suffix in ("", ".report.json", ".report.txt", ".classifier.onnx", ".session.sqlite"):
        path = out.with_name(out.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    embeddings = out.with_name(out.name + ".session.sqlite.embeddings")
    assert stat.S_IMODE(embeddings.stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [keep.name]


def test_annotate_files_are_private(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "in.csv")
    store, out = tmp_path / "cache" / "store.sqlite", tmp_path / "signals.csv"
    assert main(["annotate", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path), "--chat-format",
                 "chatml", "--store", str(store), "--out", str(out)]) == 0
    assert stat.S_IMODE(store.stat().st_mode) == 0o600 and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700


def test_a_second_job_on_the_same_session_refuses_at_once(tiny_model_path, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv", n=120)
    out = tmp_path / "out.csv"
    first = slow_job(args(data, out, tiny_model_path, "--llm-sample", "100"), seconds=0.2)
    lock = out.with_name(out.name + ".session.sqlite.lock")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None, "the first job ended before the second one started"
            time.sleep(0.05)
        started = time.monotonic()
        message = refused(args(data, out, tiny_model_path), capsys, "in use by process", str(first.pid))
        assert time.monotonic() - started < 1.0, message
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    with SessionLock(out.with_name(out.name + ".session.sqlite")):  # the kill released the lock
        pass


def _llm_outputs(session: Path) -> dict[tuple[str, str], str]:
    """(prompt key, text hash) -> created_at of every stored LLM output (read-only)."""
    if not session.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{session}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute("SELECT prompt_key, text_sha256, created_at FROM llm_outputs")
            return {(prompt, text): at for prompt, text, at in rows}
    except sqlite3.DatabaseError:  # the schema is still being created
        return {}


def killed_once_stored(child: subprocess.Popen, session: Path, outputs: int = 3, seconds: float = 60) -> dict:
    """Kill ``child`` (-9) once ``outputs`` LLM outputs are in ``session`` (or after ``seconds``):
    the outputs stored then."""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and child.poll() is None and len(_llm_outputs(session)) < outputs:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return _llm_outputs(session)


def test_a_kill_in_the_llm_stage_keeps_the_outputs_made_before_it(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "GROUP_WORK", 1)  # every run here groups texts as for a big model
    data = write_input(tmp_path / "in.csv")
    reference = tmp_path / "reference" / "out.csv"
    reference.parent.mkdir()
    assert main(args(data, reference, tiny_model_path)) == 0

    out = tmp_path / "out.csv"
    session = out.with_name(out.name + ".session.sqlite")
    child = slow_job(args(data, out, tiny_model_path), seconds=0.3, group_work=1)  # groups of 64 KV cells
    kept = killed_once_stored(child, session)
    # the LLMs first score the 12 seed rows under three prompts (0, 1, 2 shots), then 15 sampled rows:
    # stored a few at a time, not a whole call at once
    assert 3 <= len(kept) <= 10, f"{len(kept)} LLM output(s) stored when the job was killed"
    assert not out.exists()

    assert main(args(data, out, tiny_model_path)) == 0
    after = _llm_outputs(session)
    assert {h: after[h] for h in kept} == kept  # kept, not computed again
    assert out.read_bytes() == reference.read_bytes()
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 60
