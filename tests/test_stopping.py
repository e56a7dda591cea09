"""The loop's stopping rule: stabilising predictions (`--rounds auto`) and an LLM budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mollia_edge.al.stopping import StoppingRule, parse_llm_budget, stabilised, stop_set
from mollia_edge.errors import ConfigError
from mollia_edge.store import Store
from al_problems import SMALL, RecordingAnnotator, _noisy, _run, make_problem

LONG = dataclasses.replace(SMALL, rounds=12, query_size=20)


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def test_stable_means_the_last_window_of_kappas_all_reach_the_threshold():
    assert stabilised([None, 0.5, 0.995, 0.99, 1.0], 0.99, 3)
    assert not stabilised([None, 0.995, 0.98, 1.0], 0.99, 3)
    assert not stabilised([None, 1.0], 0.99, 2)  # the first round has no kappa
    assert not stabilised([1.0, 1.0], 0.99, 3)


def test_the_llm_budget_is_texts_or_minutes_and_anything_else_one_clear_error():
    assert parse_llm_budget("500") == (500, None) and parse_llm_budget("1.5m") == (None, 1.5)
    assert parse_llm_budget(None) == (None, None)
    for bad in ("-3", "0m", "ten", "5h", "nanm"):
        with pytest.raises(ConfigError, match="--llm-budget"):
            parse_llm_budget(bad)


def test_the_stop_set_is_seeded_and_at_most_its_size():
    pool = np.arange(5000)
    assert np.array_equal(stop_set(pool, 1), stop_set(pool, 1)) and len(stop_set(pool, 1)) == 2000
    assert np.array_equal(stop_set(np.arange(10), 1), np.arange(10))


def rule(task, **kwargs):
    return StoppingRule(rows=stop_set(task.pool, 0), n_classes=task.n_classes, **kwargs)


def test_the_loop_stops_when_its_predictions_stabilise_and_records_why(problem, tmp_path):  # noqa: F811
    task, _, _ = problem
    annotator = RecordingAnnotator(_noisy(task.gold, 0.1).labels, "noisy")
    with Store(tmp_path / "s.sqlite") as store:
        results = _run(task, annotator, config=LONG, store=store, run_id="auto",
                       stopping=rule(task, threshold=0.8, window=2))
        last = results[-1]
        assert last.stopped and "stable" in last.stopped and last.round < LONG.rounds
        assert last.queried == 0 and len(annotator.batches) == last.round
        kappas = [m.stop_kappa for m in results]
        assert kappas[0] is None and all(k >= 0.8 for k in kappas[-2:])
        assert not stabilised(kappas[:-1], 0.8, 2)  # it stopped at the first round it could
        again = RecordingAnnotator(annotator.labels, "noisy")  # a resumed, finished run asks nothing more
        assert _run(task, again, config=LONG, store=store, run_id="auto", stopping=rule(task)) == results
        assert again.batches == []


def test_without_the_rule_the_same_loop_runs_every_round(problem):  # noqa: F811
    task, _, _ = problem
    results = _run(task, _noisy(task.gold, 0.1), config=LONG)
    assert len(results) == LONG.rounds + 1 and not any(m.stopped for m in results)


def test_an_llm_time_budget_stops_the_loop(problem, monkeypatch):  # noqa: F811
    task, _, _ = problem
    stopping = rule(task, stable=False, minutes=0.5)
    original = RecordingAnnotator._annotate

    def slow(self, rows):  # each batch costs 20 s of "LLM time"
        stopping.spend(20.0)
        return original(self, rows)

    monkeypatch.setattr(RecordingAnnotator, "_annotate", slow)
    results = _run(task, RecordingAnnotator(task.gold, "gold"), config=LONG, stopping=stopping)
    assert "LLM budget" in results[-1].stopped and results[-1].round == 2  # 40 s >= 30 s after two batches
