"""The TUI on the tiny GGUF fixture: a full keyboard session (seed labels, undo, a run, review,
export, quit, reopen), a key handled while the job runs, and snapshots of each screen at 80x24."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

import tui.run
from mollia_edge.label import LabelJob, run_label_job, summary
from jobs import NO_PRUNE, write_input
from tui.app import LabelApp, tui_job
from tui.review import ReviewScreen
from tui.run import RunScreen
from tui.seed_rows import SeedScreen
from mollia_edge.task import load_task
from tui.setup import SetupScreen, descriptions_text, parse_descriptions

SIZE = (80, 24)
FIXED_REPORT = Path(__file__).parent / "data" / "tui_report.json"


def make_job(folder: Path, model: Path) -> LabelJob:
    """A tiny job with paths relative to ``folder`` (the current directory in the tests)."""
    write_input(folder / "in.csv", n=60, seeds=12)
    return LabelJob(input=Path("in.csv"), output=Path("out.csv"), labels=("pos", "neg"), models=(str(model),),
                    chat_format="chatml", rounds=2, batch=5, llm_sample=15, review_threshold=0.95,
                    classifier="head", config=NO_PRUNE)


def human_labels(app: LabelApp) -> dict[int, str]:
    return {r: lab.label for r, lab in app.opened.session.row_labels().items() if lab.source == "human"}


async def ready(pilot) -> None:
    """Wait for the seed order (encoding in a worker) and a refresh."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture
def job(tiny_model_path, tmp_path, monkeypatch) -> LabelJob:
    monkeypatch.chdir(tmp_path)
    return make_job(tmp_path, tiny_model_path)


def test_a_full_session_by_keys_is_restored_on_reopening(job, monkeypatch):
    asyncio.run(full_session(job, monkeypatch))


async def full_session(job: LabelJob, monkeypatch: pytest.MonkeyPatch) -> None:
    annotating, gate = threading.Event(), threading.Event()

    def job_held_while_annotating(job, progress, warn):
        def held(stage, done, total):
            if stage.startswith("llm ") and not gate.is_set():
                annotating.set()
                gate.wait(60)
            progress(stage, done, total)

        return run_label_job(job, held, warn)

    monkeypatch.setattr(tui.run, "run_label_job", job_held_while_annotating)
    app = LabelApp(job, author="tester")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        seed = app.screen
        assert isinstance(seed, SeedScreen)
        first = seed.row
        await pilot.press("1")
        second = seed.row
        await pilot.press("2")
        skipped = seed.row
        await pilot.press("s")
        assert human_labels(app) == {first: "pos", second: "neg"} and app.state.skipped == [skipped]
        await pilot.press("u")  # undo the label of the second row: it is shown again
        assert human_labels(app) == {first: "pos"} and seed.row == second
        await pilot.press("u", "1", "1")
        assert human_labels(app) == {first: "pos", second: "pos"}

        await pilot.press("f3", "r")
        run = app.screen
        assert isinstance(run, RunScreen) and run.running
        assert await asyncio.to_thread(annotating.wait, 60)
        await pilot.press("f2")  # handled while the job's worker is in the LLM stage
        assert isinstance(app.screen, SeedScreen) and run.running
        gate.set()
        await pilot.press("f3")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not run.running and "done" in str(run.query_one("#run-status").render())

        await pilot.press("f4")
        review = app.screen
        assert isinstance(review, ReviewScreen)
        row, _, _ = review.item
        wrong = app.opened.session.row_labels()[row].label
        right = "neg" if wrong == "pos" else "pos"
        await pilot.press(str(app.labels.index(right) + 1))
        assert human_labels(app)[row] == right
        assert [e.action for e in app.opened.session.audit(row)][-1] == "correct"

        await pilot.press("f6", "e")  # re-run: the correction goes into the output
        await app.workers.wait_for_complete()
        await pilot.pause()
        output = {i: r for i, r in enumerate(csv.DictReader(Path("out.csv").open(encoding="utf-8")))}
        assert (output[row]["label"], output[row]["label_source"]) == (right, "human")
        assert (output[first]["label"], output[first]["label_source"]) == ("pos", "human")
        labelled = human_labels(app)
        report = json.loads(Path("out.csv.report.json").read_text(encoding="utf-8"))
        assert report["seed_rows"] == 12 + len(labelled) and report["label_model"] == "molam"  # refit with them
        await pilot.press("f2", "q")
    order = app.state.order

    again = LabelApp(job, author="tester")
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert isinstance(again.screen, SeedScreen)
        assert again.state.order == order and again.state.skipped == [skipped]
        assert human_labels(again) == labelled
        assert again.screen.row not in labelled and again.screen.row != skipped
        await pilot.press("b")  # back to the latest row labelled or skipped before this one
        assert again.screen.row in (*labelled, skipped)


def test_cancel_stops_the_job(job, monkeypatch):
    asyncio.run(cancel_run(job, monkeypatch))


async def cancel_run(job: LabelJob, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()

    def job_held_at_its_first_progress(job_, progress, warn):
        def held(*args) -> None:
            gate.wait(60)
            progress(*args)

        return run_label_job(job_, held, warn)

    monkeypatch.setattr(tui.run, "run_label_job", job_held_at_its_first_progress)
    app = LabelApp(job, author="tester")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f3", "r", "c")  # cancelled before the job reports any progress
        gate.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = str(app.screen.query_one("#run-status").render())
        assert "cancelled" in status and not Path("out.csv").exists()


# -- snapshots -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ran(tiny_model_path, tmp_path_factory) -> tuple[Path, LabelJob]:
    """A folder where a person labelled two rows and ran the job once from the TUI."""
    folder = tmp_path_factory.mktemp("tui-snap")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        job = make_job(folder, tiny_model_path)
        asyncio.run(label_two_rows_and_run(job))
    report_path = folder / job.beside_output(".report.json")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    # the screens are snapshotted on a fixed report (tests/data/tui_report.json), so a change in
    # the algorithms moves the numbers where they are computed (and asserted), not the snapshots;
    # only the run's own ids are kept, so the screens find its rounds and rows
    fixed = json.loads(FIXED_REPORT.read_text(encoding="utf-8"))
    assert set(fixed) == set(report), "the report's keys changed: update tests/data/tui_report.json"
    fixed.update(session=report["session"], al_run=report["al_run"])
    report_path.write_text(json.dumps(fixed), encoding="utf-8")
    (folder / job.beside_output(".report.txt")).write_text(summary(fixed), encoding="utf-8")
    _fix_machine_outputs(folder / (job.session or job.beside_output(".session.sqlite")), report["session"], report["al_run"])
    return folder, job


def _fix_machine_outputs(store: Path, session_id: str, run_id: str) -> None:
    """What the machines decided, overwritten with fixed values (the Run screen's rounds, the
    Seed and Review screens' machine labels and queue): the snapshots show the layout on fixed
    data, and the algorithms' numbers are asserted where they are computed."""
    with sqlite3.connect(store) as db:
        labels = json.loads(db.execute("SELECT labels FROM sessions WHERE session_id=?", (session_id,)).fetchone()[0])
        k = len(labels)
        for number, metrics in db.execute("SELECT round, metrics FROM al_rounds WHERE run_id=?", (run_id,)).fetchall():
            fixed = dict(json.loads(metrics), queried=10 * (number < 3), disagreed=number + 1, abstained=0,
                         stop_kappa=None, micro_f1=None, macro_f1=None)
            db.execute("UPDATE al_rounds SET metrics=? WHERE run_id=? AND round=?", (json.dumps(fixed), run_id, number))
        # the loop's labels, fixed: 14 rows in round 0, 5 in each later round (a round's top-up
        # queries vary with the algorithms), labels in turn
        rounds = sorted(r for (r,) in db.execute("SELECT round FROM al_rounds WHERE run_id=?", (run_id,)))
        (blob,) = db.execute("SELECT negatives FROM al_labels WHERE run_id=? LIMIT 1", (run_id,)).fetchone()
        db.execute("DELETE FROM al_labels WHERE run_id=?", (run_id,))
        plan = [0] * 14 + [r for r in rounds if r > 0 for _ in range(5)]
        db.executemany("INSERT INTO al_labels (run_id, position, row_index, round, label, weight, negatives) "
                       "VALUES (?, ?, ?, ?, ?, 1.0, ?)", [(run_id, i, i, r, i % k, blob) for i, r in enumerate(plan)])
        machine = [r for (r,) in db.execute("SELECT row_index FROM session_labels WHERE session_id=? AND "
                                            "source IN ('llm_mixture', 'classifier')", (session_id,))]
        for row in machine:
            db.execute("UPDATE session_labels SET label=?, source=?, confidence=?, negatives='', votes=?, needs_review=? "
                       "WHERE session_id=? AND row_index=?",
                       (labels[row % k], "llm_mixture" if row % 3 == 0 else "classifier", 0.5 + (row % 5) / 10,
                        "|".join(labels[(row + j) % k] for j in range(2)) if row % 3 == 0 else "", int(row % 4 == 0),
                        session_id, row))
        db.execute("DELETE FROM session_review WHERE session_id=?", (session_id,))
        db.executemany("INSERT INTO session_review (session_id, row_index, reason, priority) VALUES (?, ?, ?, ?)",
                       [(session_id, row, "low confidence (fixed test data)", row / 100) for row in machine if row % 4 == 0])


async def label_two_rows_and_run(job: LabelJob) -> None:
    app = LabelApp(job, author="tester")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("1", "2", "f3", "r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert Path("out.csv").exists()


@pytest.mark.parametrize("keys", [["f2"], ["f3"], ["f4"], ["f5"], ["f6"], ["f2", "h"]],
                         ids=["seed", "run", "review", "models", "export", "seed-hint"])
def test_screen_snapshots(ran, keys, snap_compare, monkeypatch):
    folder, job = ran
    monkeypatch.chdir(folder)
    assert snap_compare(LabelApp(job, author="tester"), terminal_size=SIZE, press=keys, run_before=ready)


def test_a_new_session_from_the_form_is_reopened_from_its_session_file(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = make_job(tmp_path, tiny_model_path)
    draft = dataclasses.replace(job, input=Path(""), output=Path(""))
    opened, setup = tui_job(None, draft)
    assert setup and opened == draft
    asyncio.run(fill_the_form(draft))
    reopened, setup = tui_job(Path("in.labelled.csv.session.sqlite"), draft)
    assert not setup and reopened.input == Path("in.csv").resolve() and reopened.rounds == 3
    assert tui_job(Path("in.csv"), draft) == (reopened, False)


async def fill_the_form(draft: LabelJob) -> None:
    app = LabelApp(draft, author="tester", setup=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, SetupScreen)
        await pilot.press("ctrl+o")
        assert "give an input file" in str(app.screen.query_one("#setup-status").render())
        await pilot.press(*"nope.csv", "ctrl+o")
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = str(app.screen.query_one("#setup-status").render())
        assert status.startswith("error: ") and "nope.csv" in status and "\n" not in status
        await pilot.press("ctrl+u", *"in.csv", "tab", "tab", "tab", "tab", "tab", "backspace", "3", "ctrl+o")
        await app.workers.wait_for_complete()
        await ready(pilot)
        assert isinstance(app.screen, SeedScreen) and app.job.rounds == 3
        assert app.job.output == Path("in.labelled.csv") and app.job.models == draft.models
        await pilot.press("1", "q")


TEST_CATALOG = """
[defaults]
starter = ["small-chat"]

[models."small-chat"]
display_name = "Small chat"
chat_format = "chatml"
source = "a test"
files.Q8_0 = { file = "small-chat-Q8_0.gguf" }

[models."large-chat"]
display_name = "Large chat"
chat_format = "chatml"
source = "a test"
files.Q4_K_M = { file = "large-chat-Q4_K_M.gguf" }
"""


def test_setup_snapshot(models, tiny_model_path, tmp_path, snap_compare, monkeypatch):
    """The form over a test catalog (one model present, one missing), the fixture model chosen."""
    (models / "catalog.toml").write_text(TEST_CATALOG, encoding="utf-8")
    shutil.copyfile(tiny_model_path, models / "small-chat-Q8_0.gguf")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("mollia_edge.llm.engine.backend_info", lambda: "CPU")
    draft = dataclasses.replace(make_job(tmp_path, tiny_model_path), input=Path(""), output=Path(""))
    async def type_in(pilot) -> None:  # settled before the shot: under load it was once taken mid-render
        await pilot.press("i", "n")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(LabelApp(draft, author="tester", setup=True), terminal_size=SIZE, run_before=type_in)


def test_the_form_chooses_annotating_ahead(tiny_model_path, tmp_path):
    draft = make_job(tmp_path, tiny_model_path)

    async def choose() -> tuple[bool, bool]:
        app = LabelApp(draft, author="tester", setup=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, SetupScreen)
            before = screen.job().annotate_ahead
            await pilot.click("#setup-annotation")
            await pilot.press("down", "enter")
            await pilot.pause()
            return before, screen.job().annotate_ahead

    assert asyncio.run(choose()) == (False, True)


def test_the_form_writes_the_label_descriptions_to_the_task_file_the_job_uses(job):
    async def describe() -> LabelJob:
        app = LabelApp(job, author="tester", setup=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            app.screen.query_one("#setup-descriptions").focus()
            await pilot.press(*"pos: liked it; neg: did not like it", "ctrl+o")
            await ready(pilot)
            assert isinstance(app.screen, SeedScreen)
            return app.job

    opened = asyncio.run(describe())
    assert opened.task_file == Path("out.csv.task.toml")
    task = load_task(opened.task_file)
    assert task.labels == ("pos", "neg") and task.descriptions == ("liked it", "did not like it")
    assert descriptions_text(opened.task_file) == "pos: liked it; neg: did not like it"
    assert parse_descriptions("a: x;; b:") == [("a", "x"), ("b", "")]
    with pytest.raises(ValueError, match="label: description"):
        parse_descriptions("no colon here")


def test_the_form_takes_rounds_auto_and_an_llm_budget(job):
    async def fill(budget: str) -> tuple[LabelJob | None, str]:
        app = LabelApp(job, author="tester", setup=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            screen = app.screen
            screen.query_one("#setup-rounds").value = "auto"
            screen.query_one("#setup-llm_budget").value = budget
            await pilot.press("ctrl+o")
            await ready(pilot)
            status = str(app.screen.query_one("#setup-status").render()) if isinstance(app.screen, SetupScreen) else ""
            return (app.job if isinstance(app.screen, SeedScreen) else None), status

    opened, _ = asyncio.run(fill("5m"))
    assert opened is not None and opened.rounds == "auto" and opened.llm_budget == "5m"
    refused, status = asyncio.run(fill("ten"))
    assert refused is None and status.startswith("error: --llm-budget") and "\n" not in status


def test_the_form_sets_the_error_guarantee(job):
    """Typed into the form: the target error and confidence level reach the job's configuration;
    a level of 1.5 is one error line on the form."""
    async def fill(target: str, level: str) -> tuple[LabelJob | None, str]:
        app = LabelApp(job, author="tester", setup=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            app.screen.query_one("#setup-target-error").focus()
            await pilot.press(*target)
            app.screen.query_one("#setup-confidence-level").value = level
            await pilot.press("ctrl+o")
            await ready(pilot)
            status = str(app.screen.query_one("#setup-status").render()) if isinstance(app.screen, SetupScreen) else ""
            return (app.job if isinstance(app.screen, SeedScreen) else None), status

    opened, _ = asyncio.run(fill("0.05", "0.95"))
    assert opened is not None and opened.config.guarantee.target_error == 0.05
    assert opened.config.guarantee.confidence_level == 0.95
    refused, status = asyncio.run(fill("0.05", "1.5"))
    assert refused is None and "confidence_level must be in (0, 1)" in status and "\n" not in status


def test_a_multi_label_session_toggles_label_sets_by_keys(tiny_model_path, tmp_path, monkeypatch):
    """Seeds: 1..K toggle labels, Enter confirms the set (none toggled: `none`), u undoes; the run
    takes the sets as seeds; Review: keys toggle a label of the machine's set, Enter confirms."""
    from test_multilabel_job import _input

    monkeypatch.chdir(tmp_path)
    _input(tmp_path / "in.csv")
    job = LabelJob(input=Path("in.csv"), output=Path("out.csv"), models=(str(tiny_model_path),), chat_format="chatml",
                   llm_sample=10, rounds=1, batch=4, review_threshold=0.999, multi_label=True, config=NO_PRUNE)

    async def session() -> None:
        app = LabelApp(job, author="tester")
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            seed = app.screen
            assert isinstance(seed, SeedScreen) and app.labels == ("politics", "sport", "tech")
            first = seed.row
            await pilot.press("1", "3", "2", "2")  # politics, tech, sport on and off again
            assert seed.chosen == {0, 2} and human_labels(app) == {}
            await pilot.press("enter")
            second = seed.row
            await pilot.press("enter")  # nothing toggled: the text carries none of the labels
            assert human_labels(app) == {first: "politics|tech", second: "none"}
            await pilot.press("u")
            assert human_labels(app) == {first: "politics|tech"} and seed.row == second
            assert app.seed_counts()["politics"] == 1 + sum("politics" in r["label"] for r in _seed_rows())

            await pilot.press("f3", "r")
            await app.workers.wait_for_complete()
            await pilot.pause()
            output = list(csv.DictReader(Path("out.csv").open(encoding="utf-8")))
            assert (output[first]["label"], output[first]["label_source"]) == ("politics|tech", "human")

            await pilot.press("f4")
            review = app.screen
            assert isinstance(review, ReviewScreen)
            row, _, _ = review.item
            machine = app.opened.session.row_labels()[row].label
            await pilot.press("2", "enter")  # sport toggled on the machine's set
            expected = set(machine.split("|")) ^ {"sport"} - {"none"}
            assert set(human_labels(app)[row].split("|")) - {"none"} == expected
            await pilot.press("q")

    asyncio.run(session())


def _seed_rows() -> list[dict]:
    return [r for r in csv.DictReader(Path("in.csv").open(encoding="utf-8")) if r["label"]]
