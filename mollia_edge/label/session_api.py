"""The TUI's hold on a job's session between runs: opened (and locked) before the first run, its
human labels the seeds the next :func:`~mollia_edge.label.run_label_job` adds to the input's."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from ..files import SessionLock
from ..session import Session, open_session_store
from ..store import Store
from .job import LabelJob
from .prepare import check_settings, open_session, prepare


@dataclass(frozen=True)
class JobSession:
    """A job's session opened before (or between) runs. :meth:`close` it when done."""

    store: Store
    session: Session
    texts: list[str]
    labels: tuple[str, ...]
    input_seeds: dict[int, str]
    models: list[str]
    locks: list[SessionLock]

    def close(self) -> None:
        self.store.close()
        for lock in reversed(self.locks):
            lock.__exit__(None, None, None)


def open_job_session(job: LabelJob) -> JobSession:
    """The session :func:`~mollia_edge.label.run_label_job` will use for ``job`` (created if
    new), and the input; the session stays locked for this process until :meth:`JobSession.close`."""
    settings = check_settings(job)
    with ExitStack() as stack:
        prep = prepare(job, settings)
        locks = [stack.enter_context(lock) for lock in job.locks()]
        store = stack.enter_context(open_session_store(job.session_path))
        session = open_session(job, prep, store)
        stack.pop_all()
    return JobSession(store, session, prep.texts, prep.labels, prep.input_seeds, prep.models.display, locks)
