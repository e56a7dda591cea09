"""The session store: one SQLite file (WAL) under everything, written as results are made.

This version holds the cache of LLM outputs and of model-file hashes; later versions add
sessions, labels and the audit trail through new entries in ``_MIGRATIONS``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
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
                    "SELECT text_sha256, label_logprob, consistency, invalid, answers, truncated "
                    "FROM llm_outputs WHERE model_sha256=? AND prompt_key=? "
                    f"AND text_sha256 IN ({','.join('?' * len(chunk))})",
                    (model_sha256, prompt_key, *chunk),
                ).fetchall()
                for text_sha, logprob, consistency, invalid, answers, truncated in rows:
                    found[text_sha] = TextSignals(
                        label_logprob=np.frombuffer(logprob, dtype=np.float64).copy(),
                        consistency=np.frombuffer(consistency, dtype=np.float64).copy(),
                        invalid=invalid,
                        answers=tuple(json.loads(answers)),
                        truncated=bool(truncated),
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
            )
            for text_sha, s in items
        ]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO llm_outputs "
                "(model_sha256, prompt_key, text_sha256, label_logprob, consistency, invalid, answers, truncated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._db.execute("COMMIT")

    def count_llm_outputs(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM llm_outputs").fetchone()[0]
