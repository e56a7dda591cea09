"""The TUI's hold on a job's session between runs: opened (and locked) before the first run, its
human labels the seeds the next :func:`~mollia_edge.label.run_label_job` adds to the input's."""

from __future__ import annotations

import dataclasses
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
    from .run import is_multi_label

    if is_multi_label(job):
        return _open_multilabel_session(dataclasses.replace(job, multi_label=True))
    settings = check_settings(job)
    with ExitStack() as stack:
        prep = prepare(job, settings)
        locks = [stack.enter_context(lock) for lock in job.locks()]
        store = stack.enter_context(open_session_store(job.session_path))
        session = open_session(job, prep, store)
        stack.pop_all()
    return JobSession(store, session, prep.texts, prep.labels, prep.input_seeds, prep.models.display, locks)


def _open_multilabel_session(job: LabelJob) -> JobSession:
    """:func:`open_job_session` for a multi-label job: each seed is a set, ``a|b`` (``none``)."""
    from ..multilabel import job as multilabel
    from ..multilabel.labels import format_set
    from ..multilabel.prompts import answers
    from .prepare import resolve_models

    multilabel.check_job(job)
    data = multilabel.read_input(job)
    models = resolve_models(job, answers(data.labels), None).display
    seed = job.config.seed if job.seed is None else job.seed
    with ExitStack() as stack:
        locks = [stack.enter_context(lock) for lock in job.locks()]
        store = stack.enter_context(open_session_store(job.session_path))
        session = multilabel.open_session(job, data, store, seed)
        stack.pop_all()
    seeds = {int(row): format_set(data.y[row], data.labels) for row in data.seed_rows}
    return JobSession(store, session, data.texts, data.labels, seeds, models, locks)
