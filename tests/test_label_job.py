"""`mollia-edge label` end to end on tiny GGUF models: output, resume, no network, the session."""

from __future__ import annotations

import csv
import json
import random
import socket
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest

from mollia_edge.cli import main
from mollia_edge.label import NEW_COLUMNS, LabelJob, run_label_job
from mollia_edge.session import Session, open_session_store
from jobs import NO_PRUNE, WORDS, args, write_input  # noqa: F401 - WORDS and args for the tests below

@pytest.fixture(scope="module")
def done(tiny_model_path, tmp_path_factory):
    """One uninterrupted run with every socket disabled (the job must never use the network)."""
    folder = tmp_path_factory.mktemp("label")
    data = write_input(folder / "in.csv")
    out = folder / "out.csv"
    with pytest.MonkeyPatch.context() as mp:
        def refuse(*a, **k):
            raise OSError("network access attempted")

        mp.setattr(socket, "socket", refuse)
        mp.setattr(socket, "create_connection", refuse)
        assert main(args(data, out, tiny_model_path)) == 0
    return data, out


def test_output_has_every_row_and_column_plus_the_new_ones(done):
    data, out = done
    original = list(csv.DictReader(data.open(encoding="utf-8")))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(original)
    assert list(rows[0]) == ["id", "text", "label", "note", *[c for c in NEW_COLUMNS if c != "label"]]
    for before, after in zip(original, rows):
        assert (after["id"], after["text"], after["note"]) == (before["id"], before["text"], before["note"])
        assert after["label"] in ("pos", "neg")
        if before["label"]:
            assert after["label"] == before["label"] and after["label_source"] == "seed"
        else:
            assert after["label_source"] in ("llm_mixture", "classifier")
        assert 0 <= float(after["confidence"]) <= 1 and after["needs_review"] in ("true", "false")
        if after["label_source"] == "llm_mixture":
            assert after["llm_votes"].startswith("tiny:")
    sources = {r["label_source"] for r in rows}
    assert sources == {"seed", "llm_mixture", "classifier"}  # the LLMs did not see every row


def test_files_beside_the_output(done):
    _, out = done
    session = out.with_name(out.name + ".session.sqlite")
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    model = onnx.load(str(out.with_name(out.name + ".classifier.onnx")))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == ["pos", "neg"]
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["rows"] == 60 and report["seed_rows"] == 12 and report["rounds"] == 2
    assert set(report["llm_accuracy_on_seeds"]) == {"tiny"} and "encoding" in report["seconds"]
    assert report["llm_speed"]["tiny"]["quant"] == "F32"  # a user's own file: what its header declares
    summary = out.with_name(out.name + ".report.txt").read_text()
    assert "60 rows" in summary
    assert "good" not in summary and "#1" not in json.dumps(report)  # no input text in reports


def test_session_records_labels_audit_review_and_undo(done):
    _, out = done
    with open_session_store(out.with_name(out.name + ".session.sqlite")) as store:
        (session_id, state, n_rows, _), = Session.all(store)
        assert state == "done" and n_rows == 60
        session = Session(store, session_id)
        labels = session.row_labels()
        assert len(labels) == 60
        queue = session.review_queue()
        assert all(labels[row].needs_review for row, _, _ in queue)
        row = next(r for r, lab in labels.items() if lab.source == "classifier")
        before = labels[row]
        session.set_human_label(row, "pos" if before.label == "neg" else "neg", "alice")
        assert session.row_labels()[row].source == "human"
        undone = session.undo("alice")
        assert undone is not None and session.row_labels()[row] == before
        actions = [e.action for e in session.audit(row)]
        assert actions == ["label", "correct", "undo"]


class Stop(Exception):
    pass


def test_an_interrupted_job_resumes_to_the_same_output(done, tiny_model_path, tmp_path):
    data, reference = done
    out = tmp_path / "out.csv"
    job = LabelJob(input=data, output=out, labels=("pos", "neg"), models=(str(tiny_model_path),),
                   chat_format="chatml", rounds=2, batch=5, llm_sample=15, classifier="head", config=NO_PRUNE)
    calls = {"n": 0, "stages": set()}

    def interrupt(stage: str, done_: int, total: int) -> None:
        calls["n"] += 1
        calls["stages"].add(stage)
        if stage == "rounds" and done_ == 2:  # round 1 of 2 is committed: stop here
            raise Stop

    with pytest.raises(Stop):
        run_label_job(job, interrupt)
    assert not out.exists()  # never a half-written output
    assert {"encoding", "llm tiny"} <= calls["stages"]
    result = run_label_job(job)
    assert out.read_bytes() == reference.read_bytes()
    assert result.session_id


def _stored(session: Path) -> dict[str, int]:
    """Rows of the tables that hold the job's work (read-only; zeros before the store exists)."""
    import sqlite3

    counts = dict.fromkeys(("llm_outputs", "al_rounds", "session_stages"), 0)
    if session.exists():
        try:
            with sqlite3.connect(f"file:{session}?mode=ro", uri=True, timeout=1) as db:
                for table in counts:
                    counts[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        except sqlite3.DatabaseError:  # the schema is still being created
            pass
    return counts


def test_a_job_killed_several_times_loses_no_stored_work(done, tiny_model_path, tmp_path):
    """SIGKILL the command at seeded random points (once LLM outputs, then AL rounds are being
    committed), resume each time: stored work only ever grows, and the output equals an
    uninterrupted run's."""
    import signal
    import subprocess
    import sys
    import time

    data, reference = done
    out = tmp_path / "out.csv"
    session = out.with_name(out.name + ".session.sqlite")
    rng = random.Random(7)
    before = _stored(session)
    kills = 0
    for table, at_least in (("llm_outputs", 1), ("llm_outputs", 30), ("al_rounds", 1), ("al_rounds", 2)):
        child = subprocess.Popen([sys.executable, "-m", "mollia_edge", *args(data, out, tiny_model_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None and _stored(session)[table] < at_least:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.2))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        if child.returncode != -signal.SIGKILL:  # finished before the kill: nothing left to resume
            break
        kills += 1
        assert not out.exists()  # never a half-written output
        now = _stored(session)
        assert all(now[t] >= before[t] for t in now), (before, now)  # nothing committed was lost
        before = now
    assert kills >= 2, "the job ended before it could be killed twice"
    assert before["llm_outputs"] > 0
    assert main(args(data, out, tiny_model_path)) == 0
    assert all(n >= before[t] for t, n in _stored(session).items())
    assert out.read_bytes() == reference.read_bytes()


def test_rows_the_label_model_abstains_on_are_reviewed_not_trained_on(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "in.csv")
    config = tmp_path / "picky.toml"
    # without self-training: on this tiny data every confidence is within 1e-4 of 0.5, the floor
    # is their median, and whether a queried row falls below it turns on the fifth decimal (with
    # self-training none did: floor 0.500002, 0 rows aside; without it 0.500012, 3 rows)
    config.write_text("[molam]\nabstain_below = 0.99\nmax_abstain_share = 0.5\n[al]\nself_training_rounds = 0\n",
                      encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(args(data, out, tiny_model_path, "--config", str(config))) == 0
    rows = {int(r["id"]): r for r in csv.DictReader(out.open(encoding="utf-8"))}
    with open_session_store(out.with_name(out.name + ".session.sqlite")) as store:
        (run_id,) = [r for (r,) in store.query("SELECT run_id FROM al_runs")]
        stored = store.al_labels(run_id)
        rounds = store.al_rounds(run_id)
    aside = [row for row, _, label, _, _ in stored if label < 0]
    assert aside and sum(m["abstained"] for m in rounds) == len(aside)
    sample = [float(r["confidence"]) for i, r in rows.items() if r["label_source"] == "llm_mixture" and i not in aside]
    assert max(float(rows[i]["confidence"]) for i in aside) <= sorted(sample)[len(sample) // 2]
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["abstained_rows"] == len(aside) and report["abstain_below"] < 0.99
    assert all(rows[i]["label_source"] == "llm_mixture" and rows[i]["needs_review"] == "true" for i in aside)


def test_gold_column_reports_quality_without_changing_the_labels(tiny_model_path, tmp_path):
    data = write_input(tmp_path / "plain.csv")
    rows = list(csv.DictReader(data.open(encoding="utf-8")))
    truth = ["pos" if i % 3 else "neg" for i in range(len(rows))]
    with (tmp_path / "in.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "gold"])
        writer.writeheader()
        writer.writerows({**row, "gold": g} for row, g in zip(rows, truth))
    reference, out = tmp_path / "reference.csv", tmp_path / "out.csv"
    # no loop rounds: every row the LLMs see is in their random sample
    assert main(args(data, reference, tiny_model_path, "--rounds", "0")) == 0
    assert main(args(tmp_path / "in.csv", out, tiny_model_path, "--rounds", "0", "--gold-column", "gold")) == 0
    labelled = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["label"] for r in labelled] == [r["label"] for r in csv.DictReader(reference.open(encoding="utf-8"))]
    report = json.loads(out.with_name(out.name + ".report.json").read_text())["gold"]
    scored = [i for i, r in enumerate(labelled) if r["label_source"] != "seed"]
    accuracy = sum(labelled[i]["label"] == truth[i] for i in scored) / len(scored)
    assert report["final"]["rows"] == len(scored) and abs(report["final"]["accuracy"] - accuracy) < 1e-4
    assert set(report["by_source"]) == {"llm_mixture", "classifier"} and set(report["by_llm"]) == {"tiny"}
    mixture = [i for i in scored if labelled[i]["label_source"] == "llm_mixture"]
    votes = sum(labelled[i]["llm_votes"] == f"tiny:{truth[i]}" for i in mixture) / len(mixture)
    assert report["by_llm"]["tiny"]["rows"] == len(mixture) == 15
    assert abs(report["by_llm"]["tiny"]["accuracy"] - votes) < 1e-4
    assert "against gold" in out.with_name(out.name + ".report.txt").read_text()


def test_negative_labels_are_the_labels_every_llm_gives_almost_no_mass(tiny_model_path, tmp_path):
    """Paper Eq. 5 on each LLM's raw probability of the label's answer (not renormalised over the
    K labels: with two labels that would need the other above .999); never the label given, none
    where every label is out; empty on classifier rows. The tiny model gives "b" about .11 and
    "c" about .0005 of its mass."""
    from mollia_edge.config import LLMConfig
    from mollia_edge.llm.annotator import LLMAnnotator
    from mollia_edge.llm.prompts import PromptSpec

    plain = list(csv.DictReader(write_input(tmp_path / "plain.csv").open(encoding="utf-8")))
    data = tmp_path / "in.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(plain[0]))
        writer.writeheader()
        writer.writerows({**r, "label": {"pos": "b", "neg": "c"}.get(r["label"], "")} for r in plain)
    out = tmp_path / "out.csv"
    argv = args(data, out, tiny_model_path, "--shots", "0")
    argv[argv.index("--labels") + 1] = "b,c"
    assert main(argv) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    mixture = [r for r in rows if r["label_source"] == "llm_mixture"]
    assert all(r["negative_labels"] == "" for r in rows if r["label_source"] == "classifier")
    spec = PromptSpec(labels=("b", "c"), item="text", chat_format="chatml")
    with LLMAnnotator(tiny_model_path, spec, LLMConfig()) as annotator:
        mass = np.exp(annotator.annotate([r["text"] for r in mixture]).label_logprob)
    out_of = [[m < 0.001 for m in row] for row in mass]
    expected = ["" if all(low) else "|".join(label for label, ruled in zip(("b", "c"), low)
                                             if ruled and label != r["label"]) for low, r in zip(out_of, mixture)]
    assert [r["negative_labels"] for r in mixture] == expected
    assert expected.count("c") >= 5  # raw mass about .0005 (out); renormalised about .005 (not out)



def test_a_rerun_takes_the_recorded_final_classifier(tiny_model_path, tmp_path, monkeypatch):
    """The final classifier is recorded in the session with the digest of what it was trained
    on: a rerun (after a kill, or a full disk at the outputs) trains nothing again and writes the
    same files; other training rows (a human label from the TUI) train a new one."""
    from mollia_edge.label import final as final_stage

    data = write_input(tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    classifier = out.with_name(out.name + ".classifier.onnx")
    calls = []
    real = final_stage.train_classifier

    def spy(*args_, **kwargs):
        calls.append(1)
        return real(*args_, **kwargs)

    monkeypatch.setattr(final_stage, "train_classifier", spy)
    assert main(args(data, out, tiny_model_path)) == 0
    assert calls
    first = out.read_bytes(), classifier.read_bytes()
    out.unlink()
    classifier.unlink()
    calls.clear()
    assert main(args(data, out, tiny_model_path)) == 0
    assert calls == [] and (out.read_bytes(), classifier.read_bytes()) == first
    session = Session(open_session_store(out.with_name(out.name + ".session.sqlite")),
                      json.loads(out.with_name(out.name + ".report.json").read_text())["session"])
    session.set_human_label(20, "pos", author="tester")
    session.store.close()
    assert main(args(data, out, tiny_model_path)) == 0
    assert calls  # the human label changed the training rows: a new classifier
