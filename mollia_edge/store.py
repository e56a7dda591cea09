"""The session store: one SQLite file (WAL) under everything, written as results are made.

Schema 1 holds the cache of LLM outputs and of model-file hashes; schema 2 adds active-learning
runs (settings), their per-round metrics and the rows each round annotated, committed together
so that a run never loses a finished round and can resume after it. Schema 3 adds labelling
sessions (:mod:`mollia_edge.session`): their settings, finished stages, the current label of
each row with its source and author, an append-only audit trail (which also makes undo
possible) and a review queue. Later versions add tables through new entries in ``_MIGRATIONS``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import StoreError
from .llm.signals import TextSignals

_MIGRATIONS: list[str] = [
    """
    CREATE TABLE file_hashes (
        path      TEXT PRIMARY KEY,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha256    TEXT NOT NULL
    );
    CREATE TABLE llm_outputs (
        model_sha256  TEXT NOT NULL,
        prompt_key    TEXT NOT NULL,
        text_sha256   TEXT NOT NULL,
        label_logprob BLOB NOT NULL,
        consistency   BLOB NOT NULL,
        invalid       REAL NOT NULL,
        answers       TEXT NOT NULL,
        truncated     INTEGER NOT NULL,
        created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (model_sha256, prompt_key, text_sha256)
    );
    """,
    """
    CREATE TABLE al_runs (
        run_id     TEXT PRIMARY KEY,
        settings   TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE al_rounds (
        run_id     TEXT NOT NULL REFERENCES al_runs (run_id),
        round      INTEGER NOT NULL,
        metrics    TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (run_id, round)
    );
    CREATE TABLE al_labels (
        run_id    TEXT NOT NULL REFERENCES al_runs (run_id),
        position  INTEGER NOT NULL,
        row_index INTEGER NOT NULL,
        round     INTEGER NOT NULL,
        label     INTEGER NOT NULL,
        weight    REAL NOT NULL,
        negatives BLOB NOT NULL,
        PRIMARY KEY (run_id, position),
        UNIQUE (run_id, row_index)
    );
    """,
    """
    CREATE TABLE sessions (
        session_id   TEXT PRIMARY KEY,
        settings     TEXT NOT NULL,
        input_sha256 TEXT NOT NULL,
        n_rows       INTEGER NOT NULL,
        labels       TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'created',
        created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE session_stages (
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        stage      TEXT NOT NULL,
        result     TEXT NOT NULL,
        seconds    REAL NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (session_id, stage)
    );
    CREATE TABLE session_labels (
        session_id   TEXT NOT NULL REFERENCES sessions (session_id),
        row_index    INTEGER NOT NULL,
        label        TEXT NOT NULL,
        source       TEXT NOT NULL CHECK (source IN ('seed', 'llm_mixture', 'classifier', 'human')),
        author       TEXT NOT NULL,
        confidence   REAL,
        negatives    TEXT NOT NULL DEFAULT '',
        votes        TEXT NOT NULL DEFAULT '',
        needs_review INTEGER NOT NULL DEFAULT 0,
        updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (session_id, row_index)
    );
    CREATE TABLE session_audit (
        audit_id   INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions (session_id),
        at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        actor      TEXT NOT NULL CHECK (actor IN ('seed', 'llm_mixture', 'classifier', 'human', 'system')),
        author     TEXT NOT NULL,
        action     TEXT NOT NULL,
        row_index  INTEGER,
        before     TEXT,
        after      TEXT,
        undone_by  INTEGER REFERENCES session_audit (audit_id)
    );
    CREATE INDEX session_audit_rows ON session_audit (session_id, row_index);
    CREATE TABLE session_review (
        session_id  TEXT NOT NULL REFERENCES sessions (session_id),
        row_index   INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        priority    REAL NOT NULL,
        status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'skipped')),
        created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        resolved_at TEXT,
        PRIMARY KEY (session_id, row_index)
    );
    """,
    """
    ALTER TABLE llm_outputs ADD COLUMN chunks INTEGER NOT NULL DEFAULT 1;
    """,
]


class Store:
    """A SQLite session store; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"cannot open session store {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._migrate()  # refuses a newer schema before changing anything
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"cannot open session store {self.path}: {exc}") from None
        except StoreError:
            self._db.close()
            raise

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(_MIGRATIONS):
            raise StoreError(
                f"session store {self.path} was written by a newer mollia-edge "
                f"(schema {version}); upgrade mollia-edge to open it"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            with self._lock:
                self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    def close(self) -> None:
        self._db.close()

    # -- generic access (for modules that own their tables, e.g. mollia_edge.session) ---------
    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        """All rows of one read statement."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction: committed on success, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- model files -------------------------------------------------------------------------
    def file_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """The sha256 recorded for this file if its size and mtime are unchanged."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?",
                (str(path), size, mtime_ns),
            ).fetchone()
        return row[0] if row else None

    def remember_file_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                (str(path), size, mtime_ns, sha256),
            )

    # -- LLM outputs -------------------------------------------------------------------------
    def llm_outputs(
        self, model_sha256: str, prompt_key: str, text_sha256s: Sequence[str]
    ) -> dict[str, TextSignals]:
        """Cached signals for those texts that have them, keyed by text hash."""
        found: dict[str, TextSignals] = {}
        wanted = list(dict.fromkeys(text_sha256s))
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = self._db.execute(
                    "SELECT text_sha256, label_logprob, consistency, invalid, answers, truncated, chunks "
                    "FROM llm_outputs WHERE model_sha256=? AND prompt_key=? "
                    f"AND text_sha256 IN ({','.join('?' * len(chunk))})",
                    (model_sha256, prompt_key, *chunk),
                ).fetchall()
                for text_sha, logprob, consistency, invalid, answers, truncated, chunks in rows:
                    found[text_sha] = TextSignals(
                        label_logprob=np.frombuffer(logprob, dtype=np.float64).copy(),
                        consistency=np.frombuffer(consistency, dtype=np.float64).copy(),
                        invalid=invalid,
                        answers=tuple(json.loads(answers)),
                        truncated=bool(truncated),
                        chunks=int(chunks),
                    )
        return found

    def put_llm_outputs(
        self, model_sha256: str, prompt_key: str, items: Iterable[tuple[str, TextSignals]]
    ) -> None:
        """Record signals for (text hash, signals) pairs in one transaction."""
        rows = [
            (
                model_sha256,
                prompt_key,
                text_sha,
                np.asarray(s.label_logprob, dtype=np.float64).tobytes(),
                np.asarray(s.consistency, dtype=np.float64).tobytes(),
                float(s.invalid),
                json.dumps(list(s.answers)),
                int(s.truncated),
                int(s.chunks),
            )
            for text_sha, s in items
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO llm_outputs "
                "(model_sha256, prompt_key, text_sha256, label_logprob, consistency, invalid, answers, truncated, "
                "chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")

    def count_llm_outputs(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM llm_outputs").fetchone()[0]

    # -- active-learning runs ------------------------------------------------------------------
    def begin_al_run(self, run_id: str, settings: dict) -> None:
        """Record a run's settings (JSON-able), or check them against those already recorded."""
        text = json.dumps(settings, sort_keys=True)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO al_runs (run_id, settings) VALUES (?, ?)", (run_id, text))
            stored = self._db.execute("SELECT settings FROM al_runs WHERE run_id=?", (run_id,)).fetchone()[0]
        if stored != text:
            raise StoreError(
                f"active-learning run {run_id!r} is already recorded with other settings: "
                "give this run another id, or repeat the recorded settings to resume it"
            )

    def al_rounds(self, run_id: str) -> list[dict]:
        """The metrics of each finished round of a run, in round order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT metrics FROM al_rounds WHERE run_id=? ORDER BY round", (run_id,)
            ).fetchall()
        return [json.loads(metrics) for (metrics,) in rows]

    def al_labels(self, run_id: str) -> list[tuple[int, int, int, float, np.ndarray]]:
        """(row index, round that queried it, label, weight, negatives (K,) bool) of each annotated
        row of a run, in the order the rows were added."""
        with self._lock:
            rows = self._db.execute(
                "SELECT row_index, round, label, weight, negatives FROM al_labels WHERE run_id=? ORDER BY position",
                (run_id,),
            ).fetchall()
        return [(i, r, y, w, np.frombuffer(neg, dtype=np.uint8).astype(bool)) for i, r, y, w, neg in rows]

    def put_al_round(
        self,
        run_id: str,
        round_number: int,
        metrics: dict,
        labels: Iterable[tuple[int, int, float, np.ndarray]] = (),
    ) -> None:
        """Record one finished round: its ``metrics`` and the rows it annotated, as (row index,
        label, weight, negatives (K,) bool), in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                start = self._db.execute("SELECT COUNT(*) FROM al_labels WHERE run_id=?", (run_id,)).fetchone()[0]
                self._db.execute(
                    "INSERT INTO al_rounds (run_id, round, metrics) VALUES (?, ?, ?)",
                    (run_id, round_number, json.dumps(metrics, sort_keys=True)),
                )
                self._db.executemany(
                    "INSERT INTO al_labels (run_id, position, row_index, round, label, weight, negatives) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, start + offset, int(row), round_number, int(label), float(weight),
                         np.asarray(negatives, dtype=np.uint8).tobytes())
                        for offset, (row, label, weight, negatives) in enumerate(labels)
                    ],
                )
            except sqlite3.DatabaseError as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot record round {round_number} of run {run_id!r}: {exc}") from None
            self._db.execute("COMMIT")
