"""The job's context: what every stage reads and none changes - the job, its input, the open
session and store, the LLM panel, the seed labels and the word budget (:func:`start`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config
from ..cpus import usable_cpus
from ..errors import DataError, quoted_list
from ..files import remove_stale_temporaries
from ..label_model import MIN_MOLAM_SEEDS
from ..llm.budget import WordBudget, text_costs
from ..llm.panel import LLMPanel, PanelModel
from ..llm.prompts import PromptSpec
from ..llm.residency import residency_plan
from ..session import Session, open_session_store
from ..store import Store
from ..task import with_task
from .job import NEW_COLUMNS, LabelJob, Progress, Warn
from .prepare import Prepared, open_session


@dataclass(frozen=True)
class JobContext:
    """One run of a job: what the stages share. Arrays are over all ``n`` input rows."""

    job: LabelJob
    prep: Prepared
    store: Store
    session: Session
    panel: LLMPanel
    say: Warn
    progress: Progress | None
    seed_label: np.ndarray
    """(n,) the class index of each seed row (input seeds and the TUI's human labels), -1 elsewhere."""
    human: dict[int, str]
    budget: WordBudget
    """The LLM word budget; its stages (seed rows, sample, loop) plan their spending in order."""
    residency: dict[str, Any]
    """The plan of :func:`~mollia_edge.llm.residency.residency_plan`."""

    @property
    def k(self) -> int:
        return len(self.prep.labels)

    @property
    def n(self) -> int:
        return len(self.prep.texts)

    @property
    def seed_rows(self) -> np.ndarray:
        return np.flatnonzero(self.seed_label >= 0)

    @property
    def config(self) -> Config:
        return self.job.config


def _panel(job: LabelJob, prep: Prepared, store: Store, progress: Progress | None,
           resident: int, remote: Callable[[PanelModel], Any] | None) -> LLMPanel:
    models = []
    for name, model_file, chat in zip(prep.models.display, prep.models.resolved, prep.models.chat_formats):
        llm = job.config.llm_for(name, model_file.spec.settings if model_file.spec else None)
        prompt = with_task(PromptSpec(labels=prep.labels, item=job.item, chat_format=chat), prep.task)
        models.append(PanelModel(name, model_file.path, prompt, llm))
    return LLMPanel(models, prep.texts, job.config.llm, store, progress, max_resident=resident, remote=remote)


def _remote(job: LabelJob, stack: ExitStack) -> Callable[[PanelModel], Any] | None:
    """Per model, its Ray actor pool when the job runs on Ray: the runtime is joined (or started,
    and then stopped with the job) here. Each actor takes ``llm.n_threads`` CPUs, or this
    machine's cores shared among the actors of one model."""
    if job.ray is None:
        return None
    from ..llm.cluster import RayModel, start_ray, stop_ray

    cpus = job.config.llm.n_threads or max(1, usable_cpus() // job.ray_actors)
    if start_ray(job.ray, cpus * job.ray_actors if job.ray == "local" else None):
        stack.callback(stop_ray)

    def pool(model: PanelModel) -> RayModel:
        llm = model.llm or job.config.llm
        threads = llm.n_threads or cpus
        return RayModel(model.path, model.prompt, dataclasses.replace(llm, n_threads=threads), job.ray_actors, threads)

    return pool


def _residency(job: LabelJob, prep: Prepared, say: Warn) -> dict[str, Any]:
    """How many LLMs stay loaded together (said when they take turns)."""
    llm = job.config.llm
    plan = residency_plan([m.path for m in prep.models.resolved], llm.memory_budget_gb, llm.max_resident_models,
                          llm.n_gpu_layers)
    if plan["resident"] < plan["models"]:
        why = (f"llm.max_resident_models = {plan['asked']}" if plan["asked"] is not None
               else f"about {plan['estimated_gb']:g} GB of a {plan['budget_gb']:g} GB memory budget ({plan['budget_of']})")
        say(f"the LLMs take turns: {plan['resident']} of {plan['models']} loaded at a time ({why})")
    return plan


def start(job: LabelJob, prep: Prepared, stack: ExitStack, say: Warn, progress: Progress | None) -> JobContext:
    """Open the session (resumed if it exists) and gather the seed labels; what the job holds
    open (the store, the panel, a Ray runtime) closes with ``stack``."""
    n = len(prep.texts)
    duplicates = n - len(set(prep.texts))
    if duplicates:
        say(f"{duplicates} row(s) repeat an earlier row's text; each is labelled, the LLMs see each text once")
    clashes = [c for c in NEW_COLUMNS if c in prep.columns and c != prep.label_column]
    if clashes and not set(NEW_COLUMNS) <= set(prep.columns):  # a file this job wrote: its columns are renewed
        say(f"input column(s) {', '.join(map(repr, clashes))} are replaced by the output's columns of that name")
    remove_stale_temporaries(job.outputs().values())  # of writers killed earlier
    store = stack.enter_context(open_session_store(job.session_path))
    session = open_session(job, prep, store)
    human = session.human_labels()
    index = {label: i for i, label in enumerate(prep.labels)}
    seed_label = np.full(n, -1, np.int64)
    for row, label in {**prep.input_seeds, **human}.items():
        seed_label[row] = index[label]
    residency = _residency(job, prep, say)
    panel = stack.enter_context(_panel(job, prep, store, progress, residency["resident"], _remote(job, stack)))
    budget = WordBudget(job.config.llm.budget_words, text_costs(prep.texts, len(prep.labels)))
    context = JobContext(job, prep, store, session, panel, say, progress, seed_label, human, budget, residency)
    _check_seeds(context)
    session.set_state("running")
    return context


def _check_seeds(context: JobContext) -> None:
    job, labels, seed_rows = context.job, context.prep.labels, context.seed_rows
    missing = [labels[j] for j in range(context.k) if not np.any(context.seed_label[seed_rows] == j)]
    seed_size = job.config.al.seed_size
    if len(seed_rows) < seed_size:
        what = "no seed labels" if not len(seed_rows) else f"only {len(seed_rows)} seed label(s)"
        message = f"{what} (rows with a label; {seed_size} advised)"
        if job.strict:
            raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
        context.say(message + ("; labels come from the seedless label model" if len(seed_rows) < MIN_MOLAM_SEEDS else ""))
    if len(seed_rows) == context.n:
        context.say("every row has a seed label: the output keeps them as given, nothing is left to label")
    if missing and len(seed_rows):
        message = f"no seed row for label(s) {quoted_list(missing)}"
        if job.strict:
            raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
        context.say(message)


def signals(context: JobContext, text_proba: np.ndarray | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label model's inputs (len(rows), N, K): the LLMs' scores and consistency, then the
    text's own annotator (its probabilities in both) when there is one."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        width = len(context.panel.models) + (text_proba is not None)
        return np.zeros((0, width, context.k)), np.zeros((0, width, context.k))
    scores, c = context.panel.signals(rows)
    if text_proba is None:
        return scores, c
    own = text_proba[rows][:, None, :]
    return np.concatenate([scores, own], axis=1), np.concatenate([c, own], axis=1)


def negatives(context: JobContext, text_proba: np.ndarray | None, label_model: Any, rows: np.ndarray) -> np.ndarray:
    """y- (len(rows), K) of paper Eq. 5: the labels every LLM gives a raw label mass below
    ``molam.delta`` (the text's own annotator takes no part)."""
    rows = np.asarray(rows, np.int64)
    if not len(rows) or not context.panel.models:  # no LLM left (all released): none rules a label out
        return np.zeros((len(rows), context.k), bool)
    mass = context.panel.label_mass(rows)
    if text_proba is not None:  # the label model's column layout; its rule drops this column
        mass = np.concatenate([mass, text_proba[rows][:, None, :]], axis=1)
    return np.asarray(label_model.negative_labels(mass), bool)
