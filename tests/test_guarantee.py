"""Labels with a guarantee (:mod:`mollia_edge.guarantee`): the threshold chosen on calibration rows
keeps the error among accepted rows within the target, at the stated confidence, over many draws."""

from __future__ import annotations

import numpy as np
import pytest

from mollia_edge.guarantee import acceptance_threshold, rows_needed


def _rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confidences (n,) that overstate: a row stated c sure is right with probability c^2 (.9: .81)."""
    confidence = rng.uniform(0.5, 1.0, n)
    return confidence, rng.random(n) < confidence**2


@pytest.mark.parametrize("target", [0.05, 0.10])
def test_the_error_among_accepted_rows_exceeds_the_target_in_at_most_one_draw_in_ten(target):
    """300 draws of 1,000 calibration rows and 4,000 new rows of one distribution: the realised
    error among the new rows accepted exceeds the target in at most 10 % of the draws (plus
    binomial noise, 3 sd), and the thresholds accept a real share of the rows. Broken once (each
    threshold tested at level .5): exceeded in .21 and .38 of the draws."""
    rng = np.random.default_rng(0)
    exceeded, shares = 0, []
    for _ in range(300):
        threshold = acceptance_threshold(*_rows(1000, rng), target, 0.1).threshold
        confidence, correct = _rows(4000, rng)
        accepted = confidence >= (threshold if threshold is not None else np.inf)
        shares.append(accepted.mean())
        if accepted.any() and (~correct[accepted]).mean() > target:
            exceeded += 1
    assert exceeded / 300 <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 300), exceeded
    assert np.mean(shares) > 0.01  # not vacuous: at .05 about .02 of the rows accepted, at .10 about .07


def test_too_few_calibration_rows_accept_nothing_and_say_how_many_are_needed():
    """At 2 % with 90 % confidence at least 114 rows above the threshold, none wrong, are needed:
    50 perfect rows cannot show it."""
    assert rows_needed(0.02, 0.1) == 114
    chosen = acceptance_threshold(np.full(50, 0.99), np.ones(50, bool), 0.02, 0.1)
    assert chosen.threshold is None and chosen.needed == 114
    enough = acceptance_threshold(np.full(120, 0.99), np.ones(120, bool), 0.02, 0.1)
    assert enough.threshold is not None and enough.above == 120


def _job(tmp_path, model, *extra):
    import csv
    import json

    from jobs import args, write_input

    from mollia_edge.cli import main

    data = write_input(tmp_path / "in.csv", n=80, seeds=40)
    out = tmp_path / "out.csv"
    assert main([*args(data, out, model, "--rounds", "0", "--session", str(tmp_path / "s.sqlite")), *extra]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return json.loads((tmp_path / "out.csv.report.json").read_text()), rows, (tmp_path / "out.csv.report.txt").read_text()


def test_a_job_accepts_rows_above_the_thresholds_and_flags_the_rest(tmp_path, tiny_model_path, monkeypatch):
    """A lenient target (30 % error) on 40 seed rows: rows at or above their source's threshold are
    accepted, every other machine row needs review; the output, reviewed, goes back through
    ``label`` (:func:`_reviewed_round_trip`); asking 2 % of the same run (no model trained again)
    accepts nothing and says in one line how many calibration rows it would need. Four random
    checks head the queue (100 would take every row of this small file, and no doubtful row
    would be left to review)."""
    import mollia_edge.label.accept as accept

    monkeypatch.setattr(accept, "RANDOM_CHECKS", 4)
    report, rows, _ = _job(tmp_path, tiny_model_path, "--target-error", "0.3")
    guarantee = report["guarantee"]
    thresholds = {source: g["threshold"] for source, g in guarantee["by_source"].items()}
    machine = [r for r in rows if r["label_source"] in thresholds]
    accepted = [r for r in machine if r["accepted"] == "true"]
    assert guarantee["accepted"] == len(accepted) > 0
    for row in machine:
        threshold = thresholds[row["label_source"]]
        above = threshold is not None and float(row["confidence"]) >= threshold - 1e-4
        assert row["accepted"] == "true" or not above or row["label_source"] == "llm_mixture"
        assert (row["needs_review"] == "true") == (row["accepted"] == "false")
    assert all(r["accepted"] == "false" for r in rows if r["label_source"] == "seed")

    _reviewed_round_trip(tmp_path, tiny_model_path, report, rows)  # the same first job (one job less)

    report, rows, text = _job(tmp_path, tiny_model_path, "--target-error", "0.02")
    assert report["guarantee"]["accepted"] == 0 and {r["accepted"] for r in rows} == {"false"}
    lines = [line for line in text.splitlines() if line.startswith("guarantee:")]
    assert len(lines) == 1 and "accepted 0 of 40 rows" in lines[0] and "label or review more rows" in lines[0]
    assert "at least 114 above a threshold" in lines[0]  # 2 % at level .1: too few rows to split it


def test_a_bad_target_is_one_clear_error(tmp_path, tiny_model_path, capsys):
    from jobs import args, write_input

    from mollia_edge.cli import main

    data = write_input(tmp_path / "in.csv")
    assert main(args(data, tmp_path / "out.csv", tiny_model_path, "--target-error", "1.5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target_error must be in (0, 1)" in err[0], err
    assert not (tmp_path / "out.csv").exists()


def _job_on(tmp_path, model, data, *extra):
    import csv
    import json

    from jobs import args

    from mollia_edge.cli import main

    out = tmp_path / "again.csv"
    assert main([*args(data, out, model, "--rounds", "0", "--session", str(tmp_path / "s.sqlite")), *extra]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return json.loads((tmp_path / "again.csv.report.json").read_text()), rows, None


def test_a_rerun_reorders_the_open_review_queue_and_leaves_answered_rows_alone(tmp_path):
    """The review queue takes a re-run's reasons and priorities for open rows (a row that became a
    random check is shown as one), never for rows a person answered."""
    from mollia_edge.session import Session, open_session_store

    with open_session_store(tmp_path / "s.sqlite") as store:
        session = Session.open(store, {"x": 1}, "sha", 3, ("a", "b"))
        session.queue_for_review([(0, "low confidence", 0.2), (1, "low confidence", 0.3)])
        session.set_human_label(1, "a", "tester")
        session.queue_for_review([(0, "random check", 0.9), (1, "random check", 0.9)])
        assert session.review_queue("open") == [(0, "random check", 0.9)]
        assert session.review_queue("done") == [(1, "low confidence", 0.3)]


def test_the_level_is_split_among_as_many_sources_as_the_calibration_rows_can_serve():
    """Decided on counts alone: 50 calibration rows at 5 % serve one source (45 needed at .1, 59
    at .05 each), the one with more rows to accept; at 10 % both (29 each)."""
    from mollia_edge.label.accept import tested_sources

    rows = {"llm_mixture": 120, "classifier": 830}
    assert tested_sources(rows, 50, 0.05, 0.1) == ["classifier"]
    assert tested_sources(rows, 50, 0.10, 0.1) == ["classifier", "llm_mixture"]


def _reviewed_round_trip(tmp_path, tiny_model_path, report, rows):
    """The output, some rows marked ``reviewed`` (a label corrected), given back to ``label``: the
    reviewed rows become seed rows, the machine's other labels are not read; reviewed random checks
    (``calibration_row``) are calibration rows, a reviewed doubtful row is not."""
    import csv

    from jobs import write_csv

    checks = [i for i, r in enumerate(rows) if r["calibration_row"] == "true" and r["label_source"] != "seed"][:3]
    doubtful = next(i for i, r in enumerate(rows) if r["calibration_row"] == "false" and r["accepted"] == "false"
                    and r["label_source"] != "seed")
    for i in [*checks, doubtful]:
        rows[i]["reviewed"] = "true"
    rows[checks[0]]["label"] = {"pos": "neg", "neg": "pos"}[rows[checks[0]]["label"]]  # a correction
    given = write_csv(tmp_path / "reviewed.csv", rows)
    before = given.read_bytes()
    again, rows_again, _ = _job_on(tmp_path, tiny_model_path, given, "--target-error", "0.3")
    assert given.read_bytes() == before  # the input is never changed
    assert again["seed_rows"] == report["seed_rows"] + 4
    assert {g["calibration_rows"] for g in again["guarantee"]["by_source"].values()} == {report["seed_rows"] + 3}
    assert rows_again[checks[0]]["label"] == rows[checks[0]]["label"] and rows_again[checks[0]]["label_source"] == "seed"
    assert rows_again[doubtful]["calibration_row"] == "false"
    assert "replaced by the output's columns" not in " ".join(again["warnings"])
    with (tmp_path / "again.csv").open(newline="", encoding="utf-8") as f:
        assert list(csv.DictReader(f))[checks[1]]["reviewed"] == "true"
