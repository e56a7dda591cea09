"""A labelling session: the store-backed state of one labelling job, for batch runs and the TUI.

One session labels the rows of one input table (identified by its sha256) with one label set
and one set of settings; its id is a hash of those. It lives in the session store (schema 3,
see :mod:`mollia_edge.store`) and holds, besides the cached LLM outputs and active-learning
rounds the store keeps anyway:

* ``session_stages``: each finished stage of the job (JSON result and seconds), committed as
  the stage ends, so a re-run skips it;
* ``session_labels``: the current label of every row with its ``source`` (seed | llm_mixture
  | classifier | human), ``author``, confidence, negative labels, per-LLM votes and
  ``needs_review``;
* ``session_audit``: an append-only trail of who changed which label, when, from what to
  what (``before``/``after`` as JSON); :meth:`Session.undo` reverts the latest human change
  by writing a new entry, never by deleting one;
* ``session_review``: rows queued for a person to look at, with the reason and a priority.

Rows are 0-based indices of the input's data rows. No text is ever stored here: rows are
referred to by index, and texts by the sha256 the LLM cache keys them with.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import StoreError, quoted, quoted_list
from .files import check_session_file, make_private_folder
from .store import Store

SOURCES = ("seed", "llm_mixture", "classifier", "human")
"""Who gave a row its label; ``human`` labels are never overwritten by a machine."""


@dataclass(frozen=True)
class RowLabel:
    """The label of one row (0-based ``row``) and where it came from."""

    row: int
    label: str
    source: str
    author: str
    confidence: float | None = None
    negatives: tuple[str, ...] = ()
    votes: str = ""
    needs_review: bool = False

    def record(self) -> dict[str, Any]:
        """JSON-able form, as kept in the audit trail."""
        data = asdict(self)
        data["negatives"] = list(self.negatives)
        return data


@dataclass(frozen=True)
class AuditEntry:
    audit_id: int
    at: str
    actor: str
    author: str
    action: str
    row: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    undone_by: int | None


def open_session_store(path: str | Path) -> Store:
    """The store at ``path``, created readable and writable by the user only (mode 0600), in a
    folder that is created readable by the user only if it does not exist.

    A folder, a special file or an existing file that is not SQLite (a table given as
    ``--session`` by mistake) is refused before anything is changed. SQLite gives the WAL and
    shared-memory files the database file's permissions.
    """
    path = Path(path)
    try:
        if not path.parent.exists():
            make_private_folder(path.parent)
        check_session_file(path)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(path, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create session store {path}: {exc.strerror}") from None
    return Store(path)


def session_id_for(settings: Mapping[str, Any]) -> str:
    """The id of the session with these (JSON-able) settings."""
    text = json.dumps(settings, sort_keys=True)
    return "s-" + hashlib.sha256(text.encode()).hexdigest()[:16]


class Session:
    """One labelling session in a :class:`Store`; create or reopen it with :meth:`open`."""

    def __init__(self, store: Store, session_id: str) -> None:
        rows = store.query("SELECT labels, n_rows, input_sha256, settings FROM sessions WHERE session_id=?", (session_id,))
        if not rows:
            raise StoreError(f"no session {session_id!r} in {store.path}")
        labels, n_rows, input_sha256, settings = rows[0]
        self.store = store
        self.session_id = session_id
        self.labels: tuple[str, ...] = tuple(json.loads(labels))
        self.n_rows: int = n_rows
        self.input_sha256: str = input_sha256
        self.settings: dict[str, Any] = json.loads(settings)

    @classmethod
    def open(
        cls, store: Store, settings: Mapping[str, Any], input_sha256: str, n_rows: int, labels: Sequence[str]
    ) -> Session:
        """The session for these settings and input: created, or reopened to resume it."""
        full = {**settings, "input_sha256": input_sha256, "n_rows": n_rows, "labels": list(labels)}
        session_id = session_id_for(full)
        with store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO sessions (session_id, settings, input_sha256, n_rows, labels) VALUES (?, ?, ?, ?, ?)",
                (session_id, json.dumps(full, sort_keys=True), input_sha256, n_rows, json.dumps(list(labels))),
            )
        return cls(store, session_id)

    @staticmethod
    def all(store: Store) -> list[tuple[str, str, int, str]]:
        """(session id, state, rows, created at) of every session in the store, oldest first."""
        return [tuple(r) for r in store.query("SELECT session_id, state, n_rows, created_at FROM sessions ORDER BY created_at")]

    # -- state and stages -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.store.query("SELECT state FROM sessions WHERE session_id=?", (self.session_id,))[0][0]

    def set_state(self, state: str) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE sessions SET state=?, updated_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE session_id=?",
                (state, self.session_id),
            )

    def stage(self, name: str) -> dict[str, Any] | None:
        """The recorded result of a finished stage, or None."""
        rows = self.store.query(
            "SELECT result FROM session_stages WHERE session_id=? AND stage=?", (self.session_id, name)
        )
        return json.loads(rows[0][0]) if rows else None

    def stage_seconds(self) -> dict[str, float]:
        rows = self.store.query(
            "SELECT stage, seconds FROM session_stages WHERE session_id=? ORDER BY created_at", (self.session_id,)
        )
        return {name: seconds for name, seconds in rows}

    def put_stage(self, name: str, result: Mapping[str, Any], seconds: float) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO session_stages (session_id, stage, result, seconds) VALUES (?, ?, ?, ?)",
                (self.session_id, name, json.dumps(result, sort_keys=True), float(seconds)),
            )
            self._audit(db, "system", "mollia-edge", f"stage:{name}", None, None, None)

    # -- labels -----------------------------------------------------------------------------------
    def _check(self, label: RowLabel) -> None:
        if not 0 <= label.row < self.n_rows:
            raise StoreError(f"row {label.row} is outside this session's 0..{self.n_rows - 1}")
        if label.label not in self.labels and not self._is_label_set(label.label):
            raise StoreError(
                f"label {quoted(label.label)} is not in the session's label set ({quoted_list(self.labels)})"
            )
        if label.source not in SOURCES:
            raise StoreError(f"label source must be one of {', '.join(SOURCES)}, got {label.source!r}")

    @property
    def multi_label(self) -> bool:
        """A session of a multi-label job: a row's label is a set, ``a|b`` (``none``: no label)."""
        return bool(self.settings.get("multi_label", False))

    def _is_label_set(self, cell: str) -> bool:
        return self.multi_label and (cell == "none" or all(part in self.labels for part in cell.split("|")))

    def _current(self, db: Any, row: int) -> RowLabel | None:
        found = db.execute(
            "SELECT row_index, label, source, author, confidence, negatives, votes, needs_review "
            "FROM session_labels WHERE session_id=? AND row_index=?",
            (self.session_id, row),
        ).fetchone()
        return _row_label(found) if found else None

    def _write(self, db: Any, label: RowLabel) -> None:
        db.execute(
            "INSERT OR REPLACE INTO session_labels "
            "(session_id, row_index, label, source, author, confidence, negatives, votes, needs_review) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.session_id, label.row, label.label, label.source, label.author, label.confidence,
             "|".join(label.negatives), label.votes, int(label.needs_review)),
        )

    def _audit(self, db: Any, actor: str, author: str, action: str, row: int | None,
               before: RowLabel | None, after: RowLabel | None) -> int:
        cursor = db.execute(
            "INSERT INTO session_audit (session_id, actor, author, action, row_index, before, after) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.session_id, actor, author, action, row,
             None if before is None else json.dumps(before.record()),
             None if after is None else json.dumps(after.record())),
        )
        return int(cursor.lastrowid)

    def put_machine_labels(self, labels: Iterable[RowLabel]) -> int:
        """Record machine labels (seed, llm_mixture, classifier) in one transaction, with an
        audit entry for each change; rows a person labelled keep their label. Returns the
        number of rows changed."""
        changed = 0
        with self.store.transaction() as db:
            for label in labels:
                self._check(label)
                if label.source == "human":
                    raise StoreError("human labels go through set_human_label, one by one")
                before = self._current(db, label.row)
                if before is not None and before.source == "human":
                    continue
                if before == label:
                    continue
                self._write(db, label)
                self._audit(db, label.source, label.author, "label", label.row, before, label)
                changed += 1
        return changed

    def set_human_label(self, row: int, label: str, author: str) -> int:
        """A person labels or corrects ``row``; returns the audit id (for :meth:`undo`).
        The row leaves the review queue."""
        new = RowLabel(row=row, label=label, source="human", author=author, confidence=1.0)
        self._check(new)
        with self.store.transaction() as db:
            before = self._current(db, row)
            self._write(db, new)
            db.execute(
                "UPDATE session_review SET status='done', resolved_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE session_id=? AND row_index=?",
                (self.session_id, row),
            )
            return self._audit(db, "human", author, "correct" if before else "label", row, before, new)

    def undo(self, author: str | None = None) -> AuditEntry | None:
        """Revert the latest human change not yet undone (by ``author``, if given); the
        reversal is itself an audit entry. Returns the entry undone, or None if none is left."""
        with self.store.transaction() as db:
            sql = (
                "SELECT audit_id FROM session_audit WHERE session_id=? AND actor='human' "
                "AND action IN ('label', 'correct') AND undone_by IS NULL"
            )
            params: list[Any] = [self.session_id]
            if author is not None:
                sql += " AND author=?"
                params.append(author)
            found = db.execute(sql + " ORDER BY audit_id DESC LIMIT 1", params).fetchone()
            if not found:
                return None
            entry = self._entry(db.execute(_AUDIT_SELECT + " WHERE audit_id=?", (found[0],)).fetchone())
            assert entry.row is not None
            current = self._current(db, entry.row)
            previous = RowLabel(**{**entry.before, "negatives": tuple(entry.before["negatives"])}) if entry.before else None
            if previous is None:
                db.execute("DELETE FROM session_labels WHERE session_id=? AND row_index=?", (self.session_id, entry.row))
                db.execute(
                    "UPDATE session_review SET status='open', resolved_at=NULL WHERE session_id=? AND row_index=?",
                    (self.session_id, entry.row),
                )
            else:
                self._write(db, previous)
                if previous.needs_review:
                    db.execute(
                        "UPDATE session_review SET status='open', resolved_at=NULL WHERE session_id=? AND row_index=?",
                        (self.session_id, entry.row),
                    )
            undo_id = self._audit(db, "human", author or entry.author, "undo", entry.row, current, previous)
            db.execute("UPDATE session_audit SET undone_by=? WHERE audit_id=?", (undo_id, entry.audit_id))
        return entry

    def row_labels(self) -> dict[int, RowLabel]:
        """The current label of every labelled row."""
        rows = self.store.query(
            "SELECT row_index, label, source, author, confidence, negatives, votes, needs_review "
            "FROM session_labels WHERE session_id=? ORDER BY row_index",
            (self.session_id,),
        )
        return {r[0]: _row_label(r) for r in rows}

    def human_labels(self) -> dict[int, str]:
        """The label of every row a person labelled (the seeds a next run adds)."""
        return {row: lab.label for row, lab in self.row_labels().items() if lab.source == "human"}

    # -- audit and review -----------------------------------------------------------------------
    def _entry(self, r: tuple) -> AuditEntry:
        return AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5],
                          json.loads(r[6]) if r[6] else None, json.loads(r[7]) if r[7] else None, r[8])

    def audit(self, row: int | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (only ``row``'s entries if given)."""
        sql, params = _AUDIT_SELECT + " WHERE session_id=?", [self.session_id]
        if row is not None:
            sql += " AND row_index=?"
            params.append(row)
        return [self._entry(r) for r in self.store.query(sql + " ORDER BY audit_id", params)]

    def queue_for_review(self, items: Iterable[tuple[int, str, float]]) -> None:
        """Queue (row, reason, priority) items; a row already queued keeps its status, and takes
        the new reason and priority while it is open (a re-run orders the queue anew)."""
        with self.store.transaction() as db:
            db.executemany(
                "INSERT INTO session_review (session_id, row_index, reason, priority) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id, row_index) DO UPDATE SET reason=excluded.reason, priority=excluded.priority "
                "WHERE session_review.status='open'",
                [(self.session_id, int(row), reason, float(priority)) for row, reason, priority in items],
            )

    def review_queue(self, status: str = "open") -> list[tuple[int, str, float]]:
        """(row, reason, priority) of the queued rows with ``status``, highest priority first."""
        rows = self.store.query(
            "SELECT row_index, reason, priority FROM session_review WHERE session_id=? AND status=? "
            "ORDER BY priority DESC, row_index",
            (self.session_id, status),
        )
        return [(r, reason, p) for r, reason, p in rows]

    def skip_review(self, row: int) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE session_review SET status='skipped', resolved_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                "WHERE session_id=? AND row_index=?",
                (self.session_id, row),
            )


_AUDIT_SELECT = "SELECT audit_id, at, actor, author, action, row_index, before, after, undone_by FROM session_audit"


def _row_label(r: tuple) -> RowLabel:
    return RowLabel(
        row=r[0], label=r[1], source=r[2], author=r[3], confidence=r[4],
        negatives=tuple(r[5].split("|")) if r[5] else (), votes=r[6], needs_review=bool(r[7]),
    )
