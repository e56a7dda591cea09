"""Preparation: the job's settings and input checked, the models resolved, the session opened.

Everything here reads and checks; nothing is written (a refused job leaves nothing behind), except
:func:`open_session`, which creates or reopens the session in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import SEED_MAX, fit_sequences
from ..data import check_label_set, check_writable_format, load_table, normalise_label, texts_from_rows
from ..errors import ConfigError, DataError, quoted, quoted_list
from ..files import check_job_paths
from ..llm.catalog import file_sha256
from ..llm.prompts import PromptSpec
from ..session import Session
from ..store import Store
from ..task import Task, load_task, with_task
from .job import MAX_BATCH, MAX_ROUNDS, LabelJob


@dataclass(frozen=True)
class Settings:
    """The job's loop settings, checked: ``rounds`` (``auto``: ``al.max_rounds``), ``batch``, ``seed``."""

    rounds: int
    batch: int
    seed: int


@dataclass(frozen=True)
class Prepared:
    """The checked input and models of a job (before the session store is opened)."""

    settings: Settings
    columns: list[str]
    rows: list[dict[str, Any]]
    label_column: str | None
    labels: tuple[str, ...]
    texts: list[str]
    input_seeds: dict[int, str]
    models: Models
    truth: list[str | None] | None
    """The gold column's labels (``None`` where empty), for the report only."""
    task: Task | None
    calibration_seeds: frozenset[int] | None = None
    """Input seed rows that are calibration rows of the guarantee; None: every one
    (:func:`reviewed_file`)."""

    @property
    def seed(self) -> int:
        return self.settings.seed


@dataclass(frozen=True)
class Models:
    """The job's LLMs: their files, display names and the chat format each one's prompts use."""

    resolved: list[Any]
    """:class:`~mollia_edge.llm.catalog.ModelFile` per model."""
    display: list[str]
    chat_formats: list[str]
    """Per model: :func:`~mollia_edge.llm.catalog.chat_format_for`."""


def check_settings(job: LabelJob) -> Settings:
    """The loop settings and the paths, checked before anything is read (a :class:`ConfigError`
    or :class:`DataError` in one line)."""
    al = job.config.al
    rounds = al.rounds if job.rounds is None else al.max_rounds if job.rounds == "auto" else job.rounds
    if not isinstance(rounds, int):
        raise ConfigError(f"--rounds must be a whole number or auto, got {quoted(rounds)}")
    from ..al.stopping import parse_llm_budget

    parse_llm_budget(job.llm_budget)
    batch = al.query_size if job.batch is None else job.batch
    seed = job.config.seed if job.seed is None else job.seed
    if not 0 <= rounds <= MAX_ROUNDS:  # as in a configuration file (al.rounds), and 0: no active learning
        raise ConfigError(f"--rounds must be in [0, {MAX_ROUNDS}] or auto, got {quoted(rounds)}")
    if not 1 <= batch <= MAX_BATCH:
        raise ConfigError(f"--batch must be in [1, {MAX_BATCH}], got {quoted(batch)}")
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be in [0, {SEED_MAX}], got {quoted(seed)}")
    if job.llm_sample < 0:
        raise ConfigError(f"the LLM sample size must be >= 0, got {job.llm_sample}")
    if not 0 <= job.review_threshold <= 1:
        raise ConfigError(f"the review threshold must be in [0, 1], got {job.review_threshold}")
    check_job_paths({"input": job.input}, job.outputs(), job.session_path)
    check_writable_format(job.output)
    from ..al.strategies import make_strategy

    make_strategy(job.strategy, seed)  # unknown strategy: a ConfigError now, not after the LLMs
    return Settings(rounds, batch, seed)


def label_set(job: LabelJob, label_column: str | None, rows: Sequence[dict[str, Any]],
              task: Task | None) -> tuple[str, ...]:
    """The job's labels: ``--labels``, else the task file's, else the label column's values."""
    if job.labels is not None:
        labels = check_label_set(job.labels)
    elif task is not None:
        labels = task.labels
    elif label_column is not None:
        values = {normalise_label(str(r.get(label_column))) for r in rows if r.get(label_column) not in (None, "")}
        labels = check_label_set(sorted(v for v in values if v))
        if len(labels) < 2:
            raise ConfigError(
                f"column {quoted(label_column)} holds {len(labels)} distinct label(s); "
                "give the label set with --labels a,b,c"
            )
    else:
        raise ConfigError("give the label set with --labels a,b,c (or a label column with seed labels)")
    if len(labels) < 2:
        raise ConfigError(f"the label set needs at least two labels, got {len(labels)}")
    return labels


def _label_column(job: LabelJob, columns: Sequence[str]) -> str | None:
    label_column = job.label_column
    if label_column is None and "label" in columns:
        label_column = "label"
    if job.label_column is not None and job.label_column not in columns:
        raise DataError(
            f"{job.input}: no column {quoted(job.label_column)} (columns found: {quoted_list(columns)}); "
            "rename the column or choose another one"
        )
    if job.text_column == label_column:
        raise ConfigError(f"the text column and the label column are both {quoted(label_column)}; choose two columns")
    return label_column


def prepare(job: LabelJob, settings: Settings) -> Prepared:
    """Read and check the input and the models (after :func:`check_settings`)."""
    columns, rows = load_table(job.input)
    label_column = _label_column(job, columns)
    task = load_task(job.task_file) if job.task_file else None
    labels = label_set(job, label_column, rows, task)
    table = texts_from_rows(job.input, columns, rows, job.text_column, label_column, labels)
    if len(table.texts) < 2:
        raise DataError(f"{job.input}: the file has 1 row; labelling needs at least 2 (the classifier trains on them)")
    aliases = sum(map(len, task.aliases)) if task else 0
    fit_sequences(job.config.llm, len(labels), aliases)  # too many labels for llama.cpp: now, not after the encoder
    from ..al.encoder import check_encoder_files  # onnxruntime is imported when the job needs it

    check_encoder_files(job.config.al.encoder)  # a damaged or missing encoder: now, not after the LLMs
    input_seeds, calibration_seeds = reviewed_file(columns, rows,
                                                   {i: g for i, g in enumerate(table.gold or ()) if g is not None})
    truth = None
    if job.gold_column is not None:
        if job.gold_column in (job.text_column, label_column):
            raise ConfigError(f"the gold column {quoted(job.gold_column)} is also the text or label column; "
                              "give the column that holds the gold labels")
        truth = texts_from_rows(job.input, columns, rows, job.text_column, job.gold_column, labels).gold
    models = resolve_models(job, labels, task)
    return Prepared(settings, list(columns), list(rows), label_column, labels, list(table.texts), input_seeds,
                    models, truth, task, calibration_seeds)


REVIEWED = ("true", "yes", "y", "1", "x")
"""``reviewed`` cells that mark a row a person checked (any case)."""


def reviewed_file(columns: Sequence[str], rows: Sequence[dict[str, Any]],
                  labelled: dict[int, str]) -> tuple[dict[int, str], frozenset[int] | None]:
    """(the seed labels, the calibration rows among them or None for all) of an input file.

    A file this job wrote (a ``label_source`` column) given back after review: its seed rows
    and the rows marked ``reviewed`` are the seed labels; the other labels are the machine's
    and are not read. Calibration rows (:mod:`.accept`): its seed rows and reviewed rows marked
    ``calibration_row`` (the review queue's random checks, and the calibration rows of the
    earlier run); a reviewed row chosen for being doubtful trains the models only."""
    if "label_source" not in columns:
        return labelled, None
    def flag(row: dict[str, Any], column: str) -> bool:
        return str(row.get(column) or "").strip().lower() in REVIEWED

    given = {i for i in labelled if rows[i].get("label_source") == "seed" or flag(rows[i], "reviewed")}
    calibration = {i for i in given if flag(rows[i], "calibration_row")} if "calibration_row" in columns else given
    return {i: labelled[i] for i in sorted(given)}, frozenset(calibration)


def resolve_models(job: LabelJob, labels: tuple[str, ...], task: Task | None) -> Models:
    """The job's model files, each checked (a GGUF header, a chat format its prompts can use)."""
    from ..llm.catalog import chat_format_for, inspect_gguf, load_catalog

    catalog = load_catalog()
    names = list(job.models or catalog.starter)
    if not names:
        raise ConfigError("no models given and the catalog names no starter models")
    resolved = []
    for name in names:
        model_file = catalog.resolve(name)
        inspect_gguf(model_file.path)
        resolved.append(model_file)
    chats = [chat_format_for(model_file, job.chat_format) for model_file in resolved]
    for chat in chats:  # labels a prompt cannot tell apart, an unknown chat format: now, not later
        with_task(PromptSpec(labels=labels, item=job.item, chat_format=chat), task)
    display = [m.spec.name if m.spec else m.path.stem for m in resolved]
    if len(set(display)) != len(display):
        raise ConfigError(f"a model is listed twice: {quoted_list(display)}")
    return Models(resolved, display, chats)


def open_session(job: LabelJob, prep: Prepared, store: Store) -> Session:
    """The job's session in ``store``: the one with these settings, input and models, or a new one."""
    from ..llm.catalog import verify

    shas = [verify(m, store) for m in prep.models.resolved]
    settings = {
        "text_column": job.text_column, "label_column": prep.label_column, "item": job.item,
        "models": shas, "chat_format": job.chat_format, "strategy": job.strategy, "rounds": prep.settings.rounds,
        "batch": prep.settings.batch, "seed": prep.seed, "llm_sample": job.llm_sample,
        "annotate_ahead": job.annotate_ahead, "review_threshold": job.review_threshold, "classifier": job.classifier,
        # the guarantee only decides which labels are accepted, anew each run: not part of the session
        "config": {key: v for key, v in dataclasses.asdict(job.config).items() if key != "guarantee"},
        # only where set, so sessions opened before these options keep their ids
        **({"rounds": "auto"} if job.rounds == "auto" else {}),
        **({"llm_budget": job.llm_budget} if job.llm_budget else {}),
        **({"task": file_sha256(job.task_file)} if job.task_file else {}),
    }
    return Session.open(store, settings, file_sha256(job.input), len(prep.texts), prep.labels)


def al_run_id(session: Session) -> str:
    """The active-learning run of the session's current human labels: a changed set starts a new one."""
    human = sorted(session.human_labels().items())
    digest = hashlib.sha256(json.dumps(human).encode()).hexdigest()[:12]
    return session.session_id + "-al" + (f"-{digest}" if human else "")
