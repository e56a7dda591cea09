"""Annotation on a local Ray runtime: the same output as in-process, resumable after a kill."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mollia_edge.cli import main
from mollia_edge.llm import cluster
from mollia_edge.llm.cluster import batches_of_groups
from jobs import args, write_input
from tiny_gguf import STANDARD_BOOST, write_tiny_gguf

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mollia-edge[cluster]'); CI installs it")

SMALL_GROUPS = "[llm]\nn_batch = 32\nn_seq_max = 8\n"
"""Groups of a few texts, so a call's texts go out to the actors in several batches."""


def test_batches_are_runs_of_whole_groups():
    assert batches_of_groups([3, 3, 3, 20, 1, 1], most=7) == [(0, 6), (6, 9), (9, 29), (29, 31)]
    assert batches_of_groups([]) == []


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    models = [write_tiny_gguf(folder / f"m{i}.gguf", seed=i, boost=STANDARD_BOOST) for i in range(2)]
    data = write_input(folder / "in.csv")
    (folder / "small.toml").write_text(SMALL_GROUPS, encoding="utf-8")
    reference = folder / "reference" / "out.csv"
    reference.parent.mkdir()
    assert main(_argv(folder, data, reference, models)) == 0
    return folder, data, models, reference.read_bytes()


def _argv(folder: Path, data: Path, out: Path, models: list[Path], *extra: str) -> list[str]:
    argv = args(data, out, models[0], "--config", str(folder / "small.toml"), *extra)
    argv[argv.index("--models") + 1] = ",".join(map(str, models))
    return argv


def _stored(session: Path) -> int:
    try:
        with sqlite3.connect(f"file:{session}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM llm_outputs").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


def test_a_killed_ray_job_resumes_on_ray_to_the_in_process_output(task, tmp_path, monkeypatch):
    """A ``--ray local`` job killed (-9) once its first results are stored, then resumed on Ray:
    the in-process job's output, byte for byte; the actors got runs of whole groups, as the
    engine cuts them (the tiny models' numbers do not move with their batch mates, the starter
    models' do), several runs per call; the runtime the job started is stopped with it. (One
    test, not two: each Ray runtime costs some 10 s to start.)"""
    folder, data, models, reference = task
    out = tmp_path / "out.csv"
    session = out.with_name(out.name + ".session.sqlite")
    argv = _argv(folder, data, out, models, "--ray", "local", "--ray-actors", "2")
    child = subprocess.Popen([sys.executable, "-m", "mollia_edge", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None and _stored(session) == 0:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    monkeypatch.setattr(cluster, "BATCH_TEXTS", 4)  # several batches per call, spread over both actors
    sent = []

    def spy(sizes, most=4):
        runs = batches_of_groups(sizes, most)
        sent.append((list(sizes), runs))
        return runs

    monkeypatch.setattr(cluster, "batches_of_groups", spy)
    assert main(argv) == 0
    assert not ray.is_initialized()
    assert out.read_bytes() == reference
    assert sent and max(len(runs) for _, runs in sent) > 1
    for sizes, runs in sent:
        boundaries = set(np.cumsum([0, *sizes]).tolist())
        assert all(start in boundaries and stop in boundaries for start, stop in runs)


def test_without_a_cluster_one_clear_line(task, tmp_path, capsys):
    folder, data, models, _ = task
    out = tmp_path / "out.csv"
    assert main(_argv(folder, data, out, models, "--ray", "127.0.0.1:1")) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Ray cluster" in err and not out.exists()
