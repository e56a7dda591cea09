"""The SQLite session store (WAL, schema version, LLM-output cache, file hashes) and signal stacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from mollia_edge.errors import StoreError
from mollia_edge.llm.signals import AnnotationSignals, TextSignals
from mollia_edge.store import _MIGRATIONS, Store

MODEL = "m" * 64
PROMPT = "p" * 64


def _signals(seed: int, truncated: bool = False) -> TextSignals:
    rng = np.random.default_rng(seed)
    logprob = np.log(rng.dirichlet(np.ones(3))) - rng.random()
    consistency = rng.dirichlet(np.ones(4))[:3]
    return TextSignals(
        label_logprob=logprob,
        consistency=consistency,
        invalid=float(1.0 - consistency.sum()),
        answers=("positive", "négatif «x»", 'say "hi"', ""),
        truncated=truncated,
    )


def _assert_same(got: TextSignals, want: TextSignals) -> None:
    assert got.label_logprob.dtype == np.float64 and got.consistency.dtype == np.float64
    np.testing.assert_array_equal(got.label_logprob, want.label_logprob)
    np.testing.assert_array_equal(got.consistency, want.consistency)
    assert got.invalid == want.invalid
    assert got.answers == want.answers and isinstance(got.answers, tuple)
    assert got.truncated is want.truncated


def test_store_uses_wal_journal(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)


def test_llm_outputs_round_trip_exactly(tmp_path: Path) -> None:
    a, b = _signals(1), _signals(2, truncated=True)
    with Store(tmp_path / "s.db") as store:
        store.put_llm_outputs(MODEL, PROMPT, [("ta", a), ("tb", b)])
        found = store.llm_outputs(MODEL, PROMPT, ["ta", "tb", "tc", "ta"])
        assert store.count_llm_outputs() == 2
    assert set(found) == {"ta", "tb"}
    _assert_same(found["ta"], a)
    _assert_same(found["tb"], b)


def test_llm_outputs_only_match_their_model_and_prompt_key(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.put_llm_outputs(MODEL, PROMPT, [("ta", _signals(1))])
        assert store.llm_outputs("other-model", PROMPT, ["ta"]) == {}
        assert store.llm_outputs(MODEL, "other-prompt", ["ta"]) == {}
        assert set(store.llm_outputs(MODEL, PROMPT, ["ta"])) == {"ta"}


def test_llm_outputs_handles_more_hashes_than_one_query_chunk(tmp_path: Path) -> None:
    items = [(f"t{i}", TextSignals(np.full(2, -float(i)), np.array([0.5, 0.25]), 0.25)) for i in range(1200)]
    with Store(tmp_path / "s.db") as store:
        store.put_llm_outputs(MODEL, PROMPT, items)
        found = store.llm_outputs(MODEL, PROMPT, [key for key, _ in items])
    assert len(found) == 1200
    _assert_same(found["t1100"], items[1100][1])


def test_put_replaces_an_earlier_output_for_the_same_key(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.put_llm_outputs(MODEL, PROMPT, [("ta", _signals(1))])
        store.put_llm_outputs(MODEL, PROMPT, [("ta", _signals(2))])
        assert store.count_llm_outputs() == 1
        _assert_same(store.llm_outputs(MODEL, PROMPT, ["ta"])["ta"], _signals(2))


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.db"
    with Store(path) as store:
        store.put_llm_outputs(MODEL, PROMPT, [("ta", _signals(3, truncated=True))])
        store.remember_file_hash(Path("/models/x.gguf"), 10, 20, "abc")
    with Store(path) as store:
        _assert_same(store.llm_outputs(MODEL, PROMPT, ["ta"])["ta"], _signals(3, truncated=True))
        assert store.file_hash(Path("/models/x.gguf"), 10, 20) == "abc"


def test_newer_schema_raises_store_error_saying_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={len(_MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="upgrade"):
        Store(path)


def test_non_sqlite_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text that is long enough\n" * 50)
    with pytest.raises(StoreError, match="notes.db"):
        Store(path)


def test_file_hash_only_returned_when_size_and_mtime_match(tmp_path: Path) -> None:
    model = Path("/models/x.gguf")
    with Store(tmp_path / "s.db") as store:
        assert store.file_hash(model, 10, 20) is None
        store.remember_file_hash(model, 10, 20, "abc")
        assert store.file_hash(model, 10, 20) == "abc"
        assert store.file_hash(model, 11, 20) is None
        assert store.file_hash(model, 10, 21) is None
        assert store.file_hash(Path("/models/y.gguf"), 10, 20) is None
        store.remember_file_hash(model, 11, 22, "def")
        assert store.file_hash(model, 10, 20) is None
        assert store.file_hash(model, 11, 22) == "def"


# --- AnnotationSignals ---------------------------------------------------------------------


def test_stack_shapes_and_values() -> None:
    rows = [_signals(i, truncated=i == 1) for i in range(4)]
    stacked = AnnotationSignals.stack(("a", "b", "c"), rows)
    assert stacked.label_logprob.shape == (4, 3)
    assert stacked.consistency.shape == (4, 3)
    assert stacked.invalid.shape == (4,)
    assert stacked.truncated.tolist() == [False, True, False, False]
    assert len(stacked.answers) == 4 and stacked.answers[2] == rows[2].answers
    np.testing.assert_array_equal(stacked.label_logprob[2], rows[2].label_logprob)
    np.testing.assert_array_equal(stacked.invalid, [r.invalid for r in rows])


def test_stack_of_no_rows_has_k_columns() -> None:
    stacked = AnnotationSignals.stack(("a", "b"), [])
    assert stacked.label_logprob.shape == (0, 2)
    assert stacked.scores.shape == (0, 2)


def test_scores_are_the_softmax_of_label_logprobs() -> None:
    rng = np.random.default_rng(0)
    logprob = rng.normal(scale=20, size=(6, 4)) - 500.0  # far below 0: naive exp underflows
    rows = [TextSignals(label_logprob=r, consistency=np.zeros(4), invalid=1.0) for r in logprob]
    prob = AnnotationSignals.stack(("a", "b", "c", "d"), rows).scores
    expected = softmax(logprob, axis=1)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(prob, expected, rtol=1e-12, atol=1e-300)
    assert np.array_equal(prob.argmax(axis=1), logprob.argmax(axis=1))
