"""The main job: label every row of a table with MoLLIA (``mollia-edge label``), resumably.

:func:`run_label_job` is the library call behind the command (and the TUI):

1. read and check the input; rows that already have a label, and rows a person labelled in
   the session (the TUI: :func:`open_job_session`), are the human seed set; a changed seed
   set starts a new active-learning run, the cached LLM outputs are reused;
2. encode every text once (embeddings cached beside the session store);
3. the LLMs annotate the seed rows and a seeded random sample of the other rows
   (``llm_sample``, default 500); on those signals the label model is fitted - MoLAM with
   enough seeds, the seedless Dawid-Skene model otherwise;
4. the active-learning loop (Algorithm 1) trains the classifier; each round's queried rows
   are annotated by the LLMs (on demand) and labelled by the label model;
5. the final classifier, trained on everything labelled, labels every other row.

Budget: the LLMs see only seed rows + sample + ``rounds x batch`` queried rows. Final label
sources: ``seed`` (kept as given), ``llm_mixture`` (rows the LLMs annotated, labelled by the
label model), ``classifier`` (all other rows). ``needs_review``: the classifier disagrees with
the label model, or the confidence is below ``review_threshold``.

Every LLM output, round and label is committed to the session store as it is made; running
the same job again resumes it and ends with the same output as an uninterrupted run.
Progress goes to a ``progress(stage, done, total)`` callback, warnings to ``warn(message)``;
neither ever carries input text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import annotator_report, confusion_text
from .al.annotators import LabelModelAnnotator, abstaining_labels, confidence_floor
from .al.classifier import average_heads
from .al.loop import (
    ActiveLearningTask,
    LabelledSet,
    add_recorded_labels,
    negative_learning_weight,
    run_active_learning,
    train_classifier,
)
from .al.stopping import StoppingRule, parse_llm_budget, stop_set
from .config import MODEL_SETTINGS, SEED_MAX, Config, fit_sequences
from .data import (
    check_label_set,
    check_writable_format,
    load_table,
    normalise_label,
    texts_from_rows,
    write_table_atomic,
)
from .errors import ConfigError, DataError, quoted, quoted_list
from .files import (
    SessionLock,
    all_or_nothing,
    atomic_write_text,
    check_job_paths,
    make_private_folder,
    remove_stale_temporaries,
)
from .label_model import MIN_MOLAM_SEEDS, LabelModel, can_fit_molam, fit_label_model
from .llm.budget import WordBudget, text_costs
from .llm.demonstrations import demo_words
from .llm.panel import LLMPanel, PanelModel
from .llm.prompts import PromptSpec
from .llm.residency import residency_plan
from .randomness import derived_seed
from .session import RowLabel, Session, open_session_store
from .store import Store
from .task import Task, load_task, with_task
from .teaching import TeachingCheck, check_teaching
from .text_annotator import embedding_model_proba, refitted_proba, text_annotator_fit

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total): stages ``encoding``, ``llm <model>``, ``rounds``, ``labelling``."""
Warn = Callable[[str], None]

MAX_ROUNDS = 10_000
"""``--rounds`` at most, as ``al.rounds`` in a configuration file."""
MAX_BATCH = 1_000_000
"""``--batch`` at most, as ``al.query_size``."""

NEW_COLUMNS = ("label", "label_source", "confidence", "negative_labels", "needs_review", "llm_votes")


@dataclass(frozen=True)
class LabelJob:
    """What to label and how; ``None`` settings take the configuration's values."""

    input: Path
    output: Path
    text_column: str = "text"
    label_column: str | None = None
    """Seed labels; None: the column ``label`` if the input has one, else no seeds."""
    gold_column: str | None = None
    """Gold labels for the report's quality figures only: never used to label a row."""
    labels: tuple[str, ...] | None = None
    """The label set; None: the distinct values of the label column."""
    models: tuple[str, ...] | None = None
    """Catalog names or .gguf paths; None: the catalog's starter models."""
    chat_format: str | None = None
    item: str = "text"
    strategy: str = "bemps"
    rounds: int | str | None = None
    """Active-learning rounds; ``"auto"``: until the classifier's predictions stabilise (at most
    ``al.max_rounds``; :mod:`~mollia_edge.al.stopping`); None: ``al.rounds``."""
    llm_budget: str | None = None
    """What the loop's LLM annotation may cost: "N" texts or "Nm" minutes; None: no limit."""
    batch: int | None = None
    seed: int | None = None
    llm_sample: int = 500
    review_threshold: float = 0.6
    strict: bool = False
    classifier: str | None = None
    """``head``, ``top-layers`` or ``auto``; None: the configuration's ``al.classifier``."""
    threads: int = 1
    session: Path | None = None
    """The session store; None: OUTPUT + '.session.sqlite'."""
    config: Config = field(default_factory=Config)
    formula_guard: bool = True
    """CSV/TSV output cells that start like a spreadsheet formula get a leading quote (see
    :func:`~mollia_edge.data.spreadsheet_safe`); False: written verbatim (``--keep-formulas``)."""
    ray: str | None = None
    """Annotate on Ray (:mod:`mollia_edge.llm.cluster`): ``local`` or a cluster's address; None: in-process."""
    ray_actors: int = 2
    """Ray actors per model (each one model, ``llm.n_threads`` CPUs or 1)."""
    task_file: Path | None = None
    """The task file: the prompt's instruction, label descriptions and aliases, and the label
    set when ``labels`` is None (:mod:`mollia_edge.task`); None: the paper's prompt with bare
    label names."""
    annotate_ahead: bool = False
    """The paper's way: every row the LLM budget pays for is annotated by each model up front
    (one load per model), and the loop queries among those rows at no further LLM cost; False:
    a sample up front, then each round's queried rows (models take turns per round)."""

    @property
    def session_path(self) -> Path:
        return self.session or self.default_session

    @property
    def default_session(self) -> Path:
        return self.output.with_name(self.output.name + ".session.sqlite")

    def locks(self) -> list[SessionLock]:
        """One job per session, and one per output: a job with another ``--session`` writing the
        same output also takes the output's default session lock."""
        locks = [SessionLock(self.session_path)]
        if self.session_path != self.default_session:
            locks.append(SessionLock(self.default_session, output=self.output))
        return locks

    def beside_output(self, suffix: str) -> Path:
        return self.output.with_name(self.output.name + suffix)

    def outputs(self) -> dict[str, Path]:
        """Every file the job writes besides the session store, by role."""
        return {"output": self.output, "classifier": self.beside_output(".classifier.onnx"),
                "classifier tokenizer": self.beside_output(".classifier.tokenizer.json"),
                "report": self.beside_output(".report.json"), "summary": self.beside_output(".report.txt")}


@dataclass
class LabelResult:
    output: Path
    session: Path
    classifier: Path | None
    report: Path
    summary: Path
    summary_text: str
    warnings: list[str]
    session_id: str


# ---------------------------------------------------------------------------- input checks
def _check_settings(job: LabelJob) -> tuple[int, int, int]:
    rounds = job.config.al.rounds if job.rounds is None else job.config.al.max_rounds if job.rounds == "auto" \
        else job.rounds
    if not isinstance(rounds, int):
        raise ConfigError(f"--rounds must be a whole number or auto, got {quoted(rounds)}")
    parse_llm_budget(job.llm_budget)
    batch = job.config.al.query_size if job.batch is None else job.batch
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
    from .al.strategies import make_strategy

    make_strategy(job.strategy, seed)  # unknown strategy: a ConfigError now, not after the LLMs
    return rounds, batch, seed


def _label_set(job: LabelJob, label_column: str | None, rows: Sequence[dict[str, Any]],
               task: Task | None) -> tuple[str, ...]:
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rows_text(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i + 1) for i in ids[:5])
    return shown + (f" (and {len(ids) - 5} more)" if len(ids) > 5 else "")


# ---------------------------------------------------------------------------- the job's state
@dataclass
class _Run:
    """One run of a job: what the stages share. Arrays are over all ``n`` input rows."""

    job: LabelJob
    prep: _Prepared
    store: Store
    session: Session
    panel: LLMPanel
    say: Warn
    progress: Progress | None
    seed_label: np.ndarray
    """(n,) the class index of each seed row (input seeds and the TUI's human labels), -1 elsewhere."""
    human: dict[int, str]
    budget: WordBudget
    residency: dict[str, Any] = field(default_factory=dict)
    """The plan of :func:`~mollia_edge.llm.residency.residency_plan`."""
    times: dict[str, float] = field(default_factory=dict)
    x: np.ndarray | None = None
    """(n, D) sentence embeddings."""
    encoder: Any = None
    text_proba: np.ndarray | None = None
    """(n, K) the text's own annotator (out-of-fold on the seed rows), or None."""
    text_strength: float = 0.0
    """The text annotator's C (chosen on the seed rows); kept for its refits in the loop."""
    shots: dict[str, Any] = field(default_factory=dict)
    label_model: LabelModel | None = None
    sample: np.ndarray | None = None
    """(s,) the random sample of unlabelled rows the LLMs annotate up front (:func:`_draw_sample`)."""
    abstain_below: float = 1.0
    llm_report: dict[str, Any] | None = None
    labelled: LabelledSet | None = None
    abstained: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    run_id: str = ""
    rounds: tuple[int, int] = (0, 0)
    """(rounds, batch) the loop ran."""
    stopping: StoppingRule | None = None
    encoder_long: dict[str, Any] | None = None
    """Rows longer than the encoder reads at once, and how they were read."""
    classifier_choice: dict[str, Any] = field(default_factory=dict)
    classifier_inputs: tuple[str, Any, dict[str, Any]] | None = None
    """(mode, inputs, options) of the job's classifier, made once (top-layers: hidden states of every text)."""
    teaching: TeachingCheck | None = None
    """Whether the label model's labels teach the final classifier (else the seed rows alone do)."""
    sample_proba: np.ndarray | None = None
    """(len(sample), K) the label model's probabilities of the sample rows (in the order of ``sample``)."""
    clf: Any = None
    clf_proba: np.ndarray | None = None
    """(n, K) the final classifier's probabilities."""
    current: dict[int, RowLabel] = field(default_factory=dict)
    llm_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    votes: np.ndarray | None = None

    @property
    def k(self) -> int:
        return len(self.prep.labels)

    @property
    def n(self) -> int:
        return len(self.prep.texts)

    @property
    def seed_rows(self) -> np.ndarray:
        return np.flatnonzero(self.seed_label >= 0)

    def signals(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The label model's inputs (len(rows), N, K): the LLMs' scores and consistency, then the
        text's own annotator (its probabilities in both) when there is one."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            width = len(self.panel.models) + (self.text_proba is not None)
            return np.zeros((0, width, self.k)), np.zeros((0, width, self.k))
        scores, c = self.panel.signals(rows)
        if self.text_proba is None:
            return scores, c
        own = self.text_proba[rows][:, None, :]
        return np.concatenate([scores, own], axis=1), np.concatenate([c, own], axis=1)

    def negatives(self, rows: np.ndarray) -> np.ndarray:
        """y- (len(rows), K) of paper Eq. 5: the labels every LLM gives a raw label mass below
        ``molam.delta`` (the text's own annotator takes no part)."""
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return np.zeros((0, self.k), bool)
        mass = self.panel.label_mass(rows)
        if self.text_proba is not None:  # the label model's column layout; its rule drops this column
            mass = np.concatenate([mass, self.text_proba[rows][:, None, :]], axis=1)
        return np.asarray(self.label_model.negative_labels(mass), bool)


def _panel(job: LabelJob, prep: _Prepared, store: Store, progress: Progress | None,
           resident: int, remote: Callable[[PanelModel], Any] | None) -> LLMPanel:
    models = []
    for name, model_file, chat in zip(prep.display, prep.resolved, prep.chat_formats):
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
    from .llm.cluster import RayModel, start_ray, stop_ray

    cpus = job.config.llm.n_threads or max(1, (os.cpu_count() or 1) // job.ray_actors)
    if start_ray(job.ray, cpus * job.ray_actors if job.ray == "local" else None):
        stack.callback(stop_ray)

    def pool(model: PanelModel) -> RayModel:
        llm = model.llm or job.config.llm
        threads = llm.n_threads or cpus
        return RayModel(model.path, model.prompt, dataclasses.replace(llm, n_threads=threads), job.ray_actors, threads)

    return pool


def _residency(job: LabelJob, prep: _Prepared, say: Warn) -> dict[str, Any]:
    """How many LLMs stay loaded together (said when they take turns)."""
    llm = job.config.llm
    plan = residency_plan([m.path for m in prep.resolved], llm.memory_budget_gb, llm.max_resident_models,
                          llm.n_gpu_layers)
    if plan["resident"] < plan["models"]:
        why = (f"llm.max_resident_models = {plan['asked']}" if plan["asked"] is not None
               else f"about {plan['estimated_gb']:g} GB of a {plan['budget_gb']:g} GB memory budget ({plan['budget_of']})")
        say(f"the LLMs take turns: {plan['resident']} of {plan['models']} loaded at a time ({why})")
    return plan


def _start(job: LabelJob, prep: _Prepared, stack: ExitStack, say: Warn, progress: Progress | None) -> _Run:
    """Open the session (resumed if it exists) and gather the seed labels."""
    n = len(prep.texts)
    duplicates = n - len(set(prep.texts))
    if duplicates:
        say(f"{duplicates} row(s) repeat an earlier row's text; each is labelled, the LLMs see each text once")
    clashes = [c for c in NEW_COLUMNS if c in prep.columns and c != prep.label_column]
    if clashes:
        say(f"input column(s) {', '.join(map(repr, clashes))} are replaced by the output's columns of that name")
    remove_stale_temporaries(job.outputs().values())  # of writers killed earlier
    store = stack.enter_context(open_session_store(job.session_path))
    session = _open_session(job, prep, store)
    human = session.human_labels()
    index = {label: i for i, label in enumerate(prep.labels)}
    seed_label = np.full(n, -1, np.int64)
    for row, label in {**prep.input_seeds, **human}.items():
        seed_label[row] = index[label]
    residency = _residency(job, prep, say)
    panel = stack.enter_context(_panel(job, prep, store, progress, residency["resident"], _remote(job, stack)))
    budget = WordBudget(job.config.llm.budget_words, text_costs(prep.texts, len(prep.labels)))
    run = _Run(job, prep, store, session, panel, say, progress, seed_label, human, budget, residency=residency)
    _check_seeds(run)
    session.set_state("running")
    return run


def _check_seeds(run: _Run) -> None:
    job, labels, seed_rows = run.job, run.prep.labels, run.seed_rows
    missing = [labels[j] for j in range(run.k) if not np.any(run.seed_label[seed_rows] == j)]
    seed_size = job.config.al.seed_size
    if len(seed_rows) < seed_size:
        what = "no seed labels" if not len(seed_rows) else f"only {len(seed_rows)} seed label(s)"
        message = f"{what} (rows with a label; {seed_size} advised)"
        if job.strict:
            raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
        run.say(message + ("; labels come from the seedless label model" if len(seed_rows) < MIN_MOLAM_SEEDS else ""))
    if len(seed_rows) == run.n:
        run.say("every row has a seed label: the output keeps them as given, nothing is left to label")
    if missing and len(seed_rows):
        message = f"no seed row for label(s) {quoted_list(missing)}"
        if job.strict:
            raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
        run.say(message)


# ---------------------------------------------------------------------------- the stages
def _encode(run: _Run) -> None:
    """Sentence embeddings of every text (cached beside the session store)."""
    progress = run.progress
    if progress:
        progress("encoding", 0, run.n)
    run.encoder, run.x = encode_texts(run.job, run.prep.texts,
                                      (lambda d, t: progress("encoding", d, t)) if progress else None)
    long = int(run.encoder.too_long(run.prep.texts).sum())
    run.encoder_long = {"rows": long, "read": run.job.config.al.long_texts, "max_tokens": run.encoder.max_length}
    if progress:
        progress("encoding", run.n, run.n)


def _annotate_seeds(run: _Run) -> None:
    """The text's own annotator; each LLM's demonstrations (chosen on the seed rows) and the
    seed rows' signals."""
    seed_rows, y = run.seed_rows, run.seed_label[run.seed_rows]
    config = run.job.config
    shots = config.llm.shots
    candidates, choice_rows = run.budget.shot_choice(
        range(config.llm.max_shots + 1) if shots == "auto" else [int(shots)], seed_rows)
    if not can_fit_molam(y):
        return
    if config.molam.text_annotator:
        run.text_proba, run.text_strength = text_annotator_fit(run.x, seed_rows, y, run.k, derived_seed(run.prep.seed, 11),
                                                               self_training=config.al.self_training)
    words = demo_words(config.llm, run.k)
    ahead = _draw_sample(run) if run.job.annotate_ahead else None
    choices = run.panel.choose_shots(candidates, run.x, seed_rows, y, words, choice_rows, config.llm.max_shots, ahead)
    run.shots = {name: {"chosen": c.chosen, "seed_accuracy": c.accuracy} for name, c in choices.items()}


def _draw_sample(run: _Run) -> np.ndarray:
    """The random sample of unlabelled rows the LLMs annotate up front (all the budget pays for
    when annotating ahead), drawn once."""
    if run.sample is None:
        job = run.job
        others = np.random.default_rng(derived_seed(run.prep.seed, 7)).permutation(np.setdiff1d(np.arange(run.n), run.seed_rows))
        run.sample = np.sort(run.budget.sample(others, len(others) if job.annotate_ahead else job.llm_sample))
        if job.annotate_ahead and len(run.sample) < len(others):
            run.say(f"annotating ahead: the LLM budget (llm.budget_words = {job.config.llm.budget_words}) pays for "
                    f"{len(run.sample)} of the {len(others)} unlabelled rows; the loop queries among those")
    return run.sample


def _fit_label_model(run: _Run) -> None:
    """The LLMs annotate a seeded sample of the other rows; the label model is fitted on the
    seed rows and that sample."""
    job, seed_rows = run.job, run.seed_rows
    _draw_sample(run)
    take = len(run.sample)
    scores, c = run.signals(np.concatenate([seed_rows, run.sample]).astype(np.int64))
    seed_pos = np.arange(len(seed_rows))
    text_position = len(run.panel.models) if run.text_proba is not None else None
    run.label_model = fit_label_model(scores, c, seed_pos, run.seed_label[seed_rows], run.k, job.config, run.prep.seed,
                                      text_position)
    sample_proba = run.label_model.predict_proba(scores[len(seed_rows):], c[len(seed_rows):]) if take else np.zeros((0, run.k))
    # the loop's annotator abstains below molam.abstain_below, on at most a set share of the sample
    run.abstain_below = confidence_floor(sample_proba, job.config.molam.abstain_below,
                                         job.config.molam.max_abstain_share)
    if len(seed_rows):
        llms = slice(0, len(run.panel.models))
        run.llm_report = annotator_report(scores[seed_pos, llms], c[seed_pos, llms], run.seed_label[seed_rows],
                                          run.panel.names, run.prep.labels).as_dict()
    run.sample_proba = sample_proba


def _check_teaching(run: _Run) -> None:
    """Whether the label model's labels of the sample teach the final classifier more than the
    seed rows alone (:mod:`~mollia_edge.teaching`, cross-validated on the seed rows)."""
    seed_rows, teacher = run.seed_rows, run.job.config.al.teacher
    if teacher == "label_model" or not can_fit_molam(run.seed_label[seed_rows]) or not len(run.sample):
        return
    if teacher == "seeds":
        run.teaching = TeachingCheck(False, reason="al.teacher = \"seeds\"")
        return
    scores, c = run.signals(run.sample)
    text = len(run.panel.models) if run.text_proba is not None else None

    def labels_for(own: np.ndarray | None) -> np.ndarray:
        if own is not None:
            scores[:, text], c[:, text] = own, own
        return abstaining_labels(run.label_model.predict_proba(scores, c), run.abstain_below)

    run.teaching = check_teaching(run.x, seed_rows, run.seed_label[seed_rows], run.sample, labels_for, run.k,
                                  text is not None, seed=derived_seed(run.prep.seed, 17),
                                  self_training=run.job.config.al.self_training)


def _active_learning(run: _Run) -> None:
    """Algorithm 1: rounds of queries labelled by the label model over the LLMs, recorded as
    they end (a resumed job goes on after the last one)."""
    job, seed_rows, k = run.job, run.seed_rows, run.k
    train_label = run.seed_label.copy()
    init = seed_rows
    if not can_fit_molam(run.seed_label[seed_rows]) and len(run.sample):
        train_label[run.sample] = run.sample_proba.argmax(axis=1)  # no seeds to speak of: the seedless model
        init = np.sort(np.concatenate([seed_rows, run.sample]))
    if len(init) < 2:
        raise DataError(f"{job.input}: fewer than 2 rows can start the classifier; add seed labels or raise the LLM sample")
    pool = np.union1d(init, run.sample) if job.annotate_ahead else np.arange(run.n)
    r, b = run.rounds = _loop_size(run, pool, init)
    run.labelled = LabelledSet(init, train_label[init], np.ones(len(init), np.float32), np.zeros((len(init), k), bool))
    run.run_id = al_run_id(run.session)
    mode, inputs, options = _classifier_inputs(run, _final_training_size(run, len(init) + r * b))
    if r == 0:
        return
    config = dataclasses.replace(job.config.al, rounds=r, query_size=b, seed_size=len(init))
    task = ActiveLearningTask(inputs=inputs, pool=pool, n_classes=k, gold=train_label)
    annotator = LabelModelAnnotator(lambda rows: _loop_signals(run, rows), run.label_model, run.abstain_below, run.n, k,
                                    name=f"llm-{run.label_model.kind}", negatives=run.negatives)
    if run.progress:
        done = len(run.store.al_rounds(run.run_id))
        run.progress("rounds", done, r + 1)
    run.stopping = _stopping_rule(run, pool)
    results = run_active_learning(
        task, annotator, job.strategy, config=config, seed=run.prep.seed, seed_rows=init, mode=mode,
        init_layers=options.get("init_layers"), threads=job.threads, store=run.store, run_id=run.run_id,
        progress=(lambda m: run.progress("rounds", m.round + 1, r + 1)) if run.progress else None,
        stopping=run.stopping,
    )
    if results and results[-1].stopped:
        run.rounds = (results[-1].round, b)
        run.say(f"active learning stopped after round {results[-1].round} of at most {r}: {results[-1].stopped}")
        if run.progress:
            run.progress("rounds", r + 1, r + 1)
    run.abstained = add_recorded_labels(run.store, run.run_id, run.labelled)
    _refresh_recorded_rows(run)


def _refreshing(run: _Run) -> bool:
    return run.text_proba is not None and run.job.config.molam.refresh_text_annotator and run.text_strength > 0


def _refresh_text_proba(run: _Run, targets: np.ndarray, earlier: list[tuple[int, int]]) -> None:
    """``targets`` get the text annotator refitted on the seed rows and ``earlier`` (row, label)."""
    rows = np.concatenate([run.seed_rows, np.array([i for i, _ in earlier], np.int64)])
    y = np.concatenate([run.seed_label[run.seed_rows], np.array([lab for _, lab in earlier], np.int64)])
    run.text_proba[targets] = refitted_proba(run.x, rows, y, run.k, run.text_strength, targets,
                                             run.job.config.al.self_training)


def _loop_signals(run: _Run, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label model's inputs for rows the loop queries: with ``molam.refresh_text_annotator``,
    the text annotator refitted on the labels of the rounds recorded so far."""
    if _refreshing(run):
        earlier = [(i, y) for i, _, y, _, _ in run.store.al_labels(run.run_id) if y >= 0]
        _refresh_text_proba(run, np.asarray(rows, np.int64), earlier)
    return run.signals(rows)


def _refresh_recorded_rows(run: _Run) -> None:
    """The loop's rows as :func:`_loop_signals` saw them when queried (round g's rows: the labels
    of the rounds before g), also for rounds a resumed job read from the store."""
    if not _refreshing(run):
        return
    recorded = run.store.al_labels(run.run_id)
    for g in sorted({r for _, r, _, _, _ in recorded}):
        earlier = [(i, y) for i, r, y, _, _ in recorded if r < g and y >= 0]
        _refresh_text_proba(run, np.array([i for i, r, _, _, _ in recorded if r == g], np.int64), earlier)


def _loop_size(run: _Run, pool: np.ndarray, init: np.ndarray) -> tuple[int, int]:
    """(rounds, batch) the loop can run: what the settings ask, as far as the LLM budgets and
    the unlabelled rows allow (each cut said)."""
    job = run.job
    if job.annotate_ahead:  # annotated already: the loop costs no LLM words
        rounds, batch = run.prep.rounds, run.prep.batch
    else:
        rounds, batch = run.budget.rounds(run.prep.rounds, run.prep.batch, np.setdiff1d(pool, init),
                                          keep_batch=job.rounds == "auto")
    if (rounds, batch) != (run.prep.rounds, run.prep.batch):
        run.say(f"the LLM budget (llm.budget_words = {job.config.llm.budget_words}) pays for {rounds} round(s) of "
                f"{batch} instead of {run.prep.rounds} of {run.prep.batch}")
    texts, _ = parse_llm_budget(job.llm_budget)
    if texts is not None and not job.annotate_ahead and rounds * batch > texts:
        run.say(f"--llm-budget {texts} texts pays for {texts // batch} round(s) of {batch} instead of {rounds}")
        rounds = texts // batch
    free = len(pool) - len(init)
    b = min(batch, free)
    r = min(rounds, free // b) if b else 0
    if (r, b) != (rounds, batch) and rounds > 0:
        run.say(f"only {free} unlabelled row(s): active learning runs {r} round(s) of {b} instead of {rounds} of {batch}")
    return r, b


def _stopping_rule(run: _Run, pool: np.ndarray) -> StoppingRule | None:
    """The loop's stopping rule: ``--rounds auto`` (stabilising predictions) and/or an
    ``--llm-budget`` in minutes; None without either."""
    _, minutes = parse_llm_budget(run.job.llm_budget)
    auto = run.job.rounds == "auto"
    if not auto and minutes is None:
        return None
    al = run.job.config.al
    return StoppingRule(rows=stop_set(pool, derived_seed(run.prep.seed, 23)), n_classes=run.k,
                        threshold=al.stop_kappa, window=al.stop_window, stable=auto, minutes=minutes)


def _check_encoder_folder(setting: str) -> None:
    from .al.encoder import check_encoder_files  # onnxruntime is imported when the job needs it

    check_encoder_files(setting)


def _final_training_size(run: _Run, labelled_rows: int) -> int:
    """Rows the final classifier trains on (see :func:`_training_rows`): every row of the input
    when pseudo-labelled rows fill the rest (``al.pseudo_weight`` > 0), else the labelled rows
    and the sample's."""
    return run.n if run.job.config.al.pseudo_weight > 0 else labelled_rows + len(run.sample)


def _classifier_inputs(run: _Run, final_rows: int) -> tuple[str, Any, dict[str, Any]]:
    """(mode, inputs, classifier options) of the job's classifier; the mode is decided once per
    session (``auto``: by the estimated seconds of a top-layers round) and kept for resumed runs."""
    from .al.classifier_choice import choose_classifier, top_layers_inputs

    if run.classifier_inputs is not None:
        return run.classifier_inputs
    choice = run.session.stage("classifier")
    if choice is None:
        choice = choose_classifier(run.job.classifier or run.job.config.al.classifier, run.encoder, run.prep.texts,
                                   final_rows, run.job.config.al, run.job.threads)
        run.session.put_stage("classifier", choice, 0.0)  # an estimate: no time spent
    run.classifier_choice = choice
    if choice["mode"] == "head":
        run.classifier_inputs = ("head", run.x, {})
    else:
        inputs, init_layers = top_layers_inputs(run.encoder, run.prep.texts, run.job.config.al.top_layers)
        run.classifier_inputs = ("top-layers", inputs, {"init_layers": init_layers})
    return run.classifier_inputs


def _train_final(run: _Run) -> None:
    """The classifier on every labelled row (seeds, the loop's and the sample's labels) and, at
    ``al.pseudo_weight``, every other row with the label of a regression on the embeddings."""
    mode, inputs, options = _classifier_inputs(run, _final_training_size(run, len(run.labelled.rows)))
    training = _training_rows(run)
    run.clf = _final_classifier(inputs, training, run.k, run.job, run.rounds[0], run.prep.seed, mode, options)
    run.clf_proba = run.clf.predict_proba(inputs)


def _training_rows(run: _Run) -> LabelledSet:
    """The loop's labelled rows, the sample's label-model labels, then pseudo-labelled rows; only
    the seed rows and their regression's pseudo-labels when the label model does not teach."""
    labelled, weight = run.labelled, run.job.config.al.pseudo_weight
    if run.teaching is not None and not run.teaching.label_model_teaches:
        is_seed_row = np.isin(labelled.rows, run.seed_rows)
        labelled = LabelledSet(labelled.rows[is_seed_row], labelled.labels[is_seed_row], labelled.weights[is_seed_row],
                               labelled.negatives[is_seed_row])
        return _with_pseudo_labels(run, labelled, labelled.rows, labelled.labels, labelled.weights, weight)
    sure = abstaining_labels(run.sample_proba, run.abstain_below)  # as the loop's annotator: -1 below the floor
    keep = (sure >= 0) & ~np.isin(run.sample, labelled.rows)
    sample = run.sample[keep]
    rows = np.concatenate([labelled.rows, sample])
    labels = np.concatenate([labelled.labels, sure[keep]])
    weights = np.concatenate([labelled.weights, np.ones(len(sample), np.float32)])
    return _with_pseudo_labels(run, labelled, rows, labels, weights, weight)


def _with_pseudo_labels(run: _Run, labelled: LabelledSet, rows: np.ndarray, labels: np.ndarray,
                        weights: np.ndarray, weight: float) -> LabelledSet:
    """``rows`` and every other row at ``weight`` with the label of a regression fitted on ``rows``."""
    k = run.k
    rest = np.setdiff1d(np.arange(run.n), rows)
    if weight and len(rest) and len(np.unique(labels)) >= 2:
        proba, _ = embedding_model_proba(run.x, rows, labels, k, derived_seed(run.prep.seed, 13),
                                         self_training=run.job.config.al.self_training)
        rows, labels = np.concatenate([rows, rest]), np.concatenate([labels, proba[rest].argmax(axis=1)])
        weights = np.concatenate([weights, np.full(len(rest), weight, np.float32)])
    negatives = np.zeros((len(rows), k), bool)
    negatives[: len(labelled.rows)] = labelled.negatives
    return LabelledSet(rows, labels, weights.astype(np.float32), negatives)


def _final_classifier(x: Any, labelled: LabelledSet, k: int, job: LabelJob, rounds: int, seed: int,
                      mode: str, options: dict[str, Any]) -> Any:
    """The classifier on every ``labelled`` row (held-out slice for early stopping), seeded."""
    al = job.config.al.for_mode(mode)
    lam = negative_learning_weight(rounds, dataclasses.replace(al, rounds=max(rounds, 1)))
    settings = {"mode": mode, "threads": job.threads, **options}
    heads = al.final_heads if mode == "head" else 1
    members = [train_classifier(x, labelled, k, lam, al, settings, derived_seed(seed, 9001, i), derived_seed(seed, 9002, i))
               for i in range(heads)]
    return members[0] if heads == 1 else average_heads(members)


@dataclass(frozen=True)
class _Prepared:
    """The checked settings, input and models of a job (before the session store is opened)."""

    rounds: int
    batch: int
    seed: int
    columns: list[str]
    rows: list[dict[str, Any]]
    label_column: str | None
    labels: tuple[str, ...]
    texts: list[str]
    input_seeds: dict[int, str]
    resolved: list[Any]
    display: list[str]
    truth: list[str | None] | None
    """The gold column's labels (``None`` where empty), for the report only."""
    task: Task | None
    chat_formats: list[str]
    """Per model: the chat format its prompts are written in (:func:`~mollia_edge.llm.catalog.chat_format_for`)."""


def _prepare(job: LabelJob, settings: tuple[int, int, int]) -> _Prepared:
    """Read and check the input and the models (after :func:`_check_settings`: ``settings``)."""
    rounds, batch, seed = settings
    columns, rows = load_table(job.input)
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
    task = load_task(job.task_file) if job.task_file else None
    labels = _label_set(job, label_column, rows, task)
    table = texts_from_rows(job.input, columns, rows, job.text_column, label_column, labels)
    if len(table.texts) < 2:
        raise DataError(f"{job.input}: the file has 1 row; labelling needs at least 2 (the classifier trains on them)")
    aliases = sum(map(len, task.aliases)) if task else 0
    fit_sequences(job.config.llm, len(labels), aliases)  # too many labels for llama.cpp: now, not after the encoder
    _check_encoder_folder(job.config.al.encoder)  # an encoder folder that is not there: now, not after the LLMs
    input_seeds = {i: g for i, g in enumerate(table.gold or ()) if g is not None}
    truth = None
    if job.gold_column is not None:
        if job.gold_column in (job.text_column, label_column):
            raise ConfigError(f"the gold column {quoted(job.gold_column)} is also the text or label column; "
                              "give the column that holds the gold labels")
        truth = texts_from_rows(job.input, columns, rows, job.text_column, job.gold_column, labels).gold

    from .llm.catalog import chat_format_for, inspect_gguf, load_catalog

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
    return _Prepared(rounds, batch, seed, list(columns), list(rows), label_column, labels, list(table.texts),
                     input_seeds, resolved, display, truth, task, chats)


def _open_session(job: LabelJob, prep: _Prepared, store: Store) -> Session:
    from .llm.catalog import verify

    shas = [verify(m, store) for m in prep.resolved]
    settings = {
        "text_column": job.text_column, "label_column": prep.label_column, "item": job.item,
        "models": shas, "chat_format": job.chat_format, "strategy": job.strategy, "rounds": prep.rounds,
        "batch": prep.batch, "seed": prep.seed, "llm_sample": job.llm_sample, "annotate_ahead": job.annotate_ahead,
        "review_threshold": job.review_threshold, "classifier": job.classifier,
        "config": dataclasses.asdict(job.config),
        # only where set, so sessions opened before these options keep their ids
        **({"rounds": "auto"} if job.rounds == "auto" else {}),
        **({"llm_budget": job.llm_budget} if job.llm_budget else {}),
        **({"task": _file_sha256(job.task_file)} if job.task_file else {}),
    }
    return Session.open(store, settings, _file_sha256(job.input), len(prep.texts), prep.labels)


def al_run_id(session: Session) -> str:
    """The active-learning run of the session's current human labels: a changed set starts a new one."""
    human = sorted(session.human_labels().items())
    digest = hashlib.sha256(json.dumps(human).encode()).hexdigest()[:12]
    return session.session_id + "-al" + (f"-{digest}" if human else "")


@dataclass
class JobSession:
    """A job's session opened before (or between) runs, for the TUI: its human labels are the
    seeds the next :func:`run_label_job` adds to the input's. :meth:`close` it when done."""

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
    """The session :func:`run_label_job` will use for ``job`` (created if new), and the input;
    the session stays locked for this process until :meth:`JobSession.close`."""
    settings = _check_settings(job)
    with ExitStack() as stack:
        prep = _prepare(job, settings)
        locks = [stack.enter_context(lock) for lock in job.locks()]
        store = stack.enter_context(open_session_store(job.session_path))
        session = _open_session(job, prep, store)
        stack.pop_all()
    return JobSession(store, session, prep.texts, prep.labels, prep.input_seeds, prep.display, locks)


def encode_texts(job: LabelJob, texts: Sequence[str],
                 progress: Callable[[int, int], None] | None = None) -> tuple[Any, np.ndarray]:
    """The encoder and the sentence embeddings (n, 384) of ``texts``, cached beside the session store."""
    from .al.encoder import EmbeddingCache, Encoder, encode_cached, encoder_folder

    cache_dir = job.session_path.with_name(job.session_path.name + ".embeddings")
    make_private_folder(cache_dir)
    cache = EmbeddingCache(cache_dir)
    cache.remove_partial_shards()  # the job holds the session's lock
    encoder = Encoder(max_length=job.config.al.max_length, intra_op_threads=max(1, job.threads),
                      long_texts=job.config.al.long_texts, folder=encoder_folder(job.config.al.encoder))
    return encoder, encode_cached(encoder, texts, cache, progress=progress)


def _label_rows(run: _Run) -> None:
    """Every row's final label: seeds as given, rows the LLMs annotated by the label model, the
    others by the classifier; doubtful rows queued for review (human labels always win)."""
    seed_rows, k = run.seed_rows, run.k
    first = np.concatenate([seed_rows, run.sample]).astype(np.int64)
    run.llm_rows = np.setdiff1d(np.union1d(np.union1d(first, run.labelled.rows), run.abstained), seed_rows)
    scores, c = run.signals(run.llm_rows)
    some = len(run.llm_rows) > 0
    p_mix = run.label_model.predict_proba(scores, c) if some else np.zeros((0, k))
    negatives = run.negatives(run.llm_rows)
    run.votes = scores[:, : len(run.panel.models)].argmax(axis=2) if some else np.zeros((0, len(run.panel.models)), np.int64)
    position = {int(row): i for i, row in enumerate(run.llm_rows)}
    abstained = set(run.abstained.tolist())
    row_labels: list[RowLabel] = []
    review: list[tuple[int, str, float]] = []
    for i in range(run.n):
        if run.seed_label[i] >= 0:
            row_labels.append(RowLabel(i, run.prep.labels[run.seed_label[i]], "seed", "seed", 1.0))
        elif i in position:
            j = position[i]
            row_labels.append(_mixture_row(run, i, p_mix[j], negatives[j], run.votes[j], i in abstained, review))
        else:
            row_labels.append(_classifier_row(run, i, review))
        if run.progress and (i + 1) % 500 == 0:
            run.progress("labelling", i + 1, run.n)
    run.session.put_machine_labels(row_labels)
    run.session.queue_for_review(review)
    if run.progress:
        run.progress("labelling", run.n, run.n)
    run.current = run.session.row_labels()  # human labels (from the TUI) win over machine ones


def _mixture_row(run: _Run, i: int, p: np.ndarray, negatives: np.ndarray, votes: np.ndarray, abstained: bool,
                 review: list[tuple[int, str, float]]) -> RowLabel:
    labels = run.prep.labels
    y, clf_label = int(p.argmax()), int(run.clf_proba[i].argmax())
    confidence = float(p[y])
    disagree = clf_label != y
    flagged = disagree or confidence < run.job.review_threshold or abstained
    if flagged:
        reason = f"classifier says {labels[clf_label]}" if disagree else "low confidence"
        review.append((i, reason, 1.0 - confidence + float(disagree)))
    return RowLabel(i, labels[y], "llm_mixture", f"llm_mixture:{run.label_model.kind}", round(confidence, 6),
                    tuple(labels[q] for q in np.flatnonzero(negatives) if q != y),
                    "|".join(f"{m}:{labels[v]}" for m, v in zip(run.panel.names, votes)), flagged)


def _classifier_row(run: _Run, i: int, review: list[tuple[int, str, float]]) -> RowLabel:
    labels, p = run.prep.labels, run.clf_proba[i]
    y = int(p.argmax())
    confidence = float(p[y])
    flagged = confidence < run.job.review_threshold
    if flagged:
        review.append((i, "low confidence", 1.0 - confidence))
    return RowLabel(i, labels[y], "classifier", "classifier", round(confidence, 6), (), "", flagged)  # no LLM saw it


def _speed(run: _Run) -> dict[str, dict[str, float]]:
    """Per model, over every run of the session: texts annotated, seconds, file size and quant."""
    totals = run.session.stage("llm_speed") or {}
    for name, model_file in zip(run.panel.names, run.prep.resolved):
        before = totals.get(name, {"texts": 0, "seconds": 0.0})
        computed = run.panel.computed[name]
        seconds = before["seconds"] + (run.panel.seconds[name] if computed else 0.0)
        totals[name] = {"texts": before["texts"] + computed, "seconds": round(seconds, 3),
                        "file_mib": round(model_file.size / 2**20, 1), "quant": model_file.quant or "-"}
    run.session.put_stage("llm_speed", totals, sum(run.panel.seconds.values()))
    return totals


def _report(run: _Run, warnings: list[str]) -> dict[str, Any]:
    """The run's report (JSON-able): settings chosen, sizes, sources, speeds, times."""
    current, n, labels = run.current, run.n, run.prep.labels
    distribution = Counter(current[i].label for i in range(n))
    r, b = run.rounds
    seeds_report = run.llm_report or {}
    report = {
        "session": run.session.session_id, "rows": n, "labels": list(labels), "seed_rows": int(len(run.seed_rows)),
        "label_model": run.label_model.kind, "label_model_members": run.label_model.describe(),
        "models": run.panel.names,
        "llm_settings": {m.name: {key: getattr(m.llm or run.job.config.llm, key) for key in MODEL_SETTINGS}
                         for m in run.panel.models},
        "llm_rows": int(len(run.llm_rows) + len(run.seed_rows)),
        "llm_accuracy_on_seeds": {m: v["accuracy_scores"] for m, v in seeds_report.items()},
        "llm_agreement_on_seeds": seeds_report, "shots": run.shots, "llm_budget": run.budget.report(), "text_annotator": _text_annotator_report(run),
        "classifier": run.classifier_choice,
        "classifier_teacher": run.teaching.as_dict() if run.teaching else {"teacher": "label model", "why": _teacher_why(run)},
        "human_rows": len(run.human), "al_run": run.run_id,
        "abstain_below": round(run.abstain_below, 6), "abstained_rows": int(len(run.abstained)),
        "llm_speed": _speed(run), "llm_residency": {**run.residency, "loads": dict(run.panel.loads)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "label_distribution": {label: distribution.get(label, 0) for label in labels},
        "label_sources": dict(sorted(Counter(current[i].source for i in range(n)).items())),
        "needs_review": int(sum(current[i].needs_review for i in range(n))), "rounds": r, "batch": b,
        "al_stop": _stop_report(run),
        "truncated_for_llms": len(run.panel.truncated), "chunked_for_llms": len(run.panel.chunked),
        "long_texts_for_encoder": run.encoder_long or None, "warnings": warnings,
        "encoder": {"folder": str(run.encoder.folder) if run.encoder.folder else None, "sha256": run.encoder.sha256},
        "seconds": {stage: round(s, 3) for stage, s in run.times.items()},
    }
    if run.prep.truth is not None:
        in_sample = np.isin(run.llm_rows, run.sample)  # the LLMs alone: on the random sample, not the queried rows
        report["gold"] = _gold_quality(run.prep.truth, current, run.seed_rows, run.llm_rows[in_sample],
                                       run.votes[in_sample], run.panel.names, labels)
    return report


def _stop_report(run: _Run) -> dict[str, Any] | None:
    """The stopping rule's kappa per round and why the loop stopped (None without a rule)."""
    if run.stopping is None:
        return None
    recorded = run.store.al_rounds(run.run_id) if run.run_id else []
    return {"rule": "stabilising predictions" if run.stopping.stable else "LLM minutes",
            "kappas": [m.get("stop_kappa") for m in recorded],
            "stopped": next((m["stopped"] for m in recorded if m.get("stopped")), None)}


def _teacher_why(run: _Run) -> str:
    if run.job.config.al.teacher == "label_model":
        return 'al.teacher = "label_model"'
    return "too few seed rows or no LLM sample to cross-validate on"


def _text_annotator_report(run: _Run) -> dict[str, Any] | None:
    """Whether the text's own annotator joined the label model, and its (out-of-fold) seed accuracy."""
    if run.text_proba is None:
        return None
    rows = run.seed_rows
    return {"accuracy_on_seeds": round(float(np.mean(run.text_proba[rows].argmax(axis=1) == run.seed_label[rows])), 4)}


def _write_outputs(run: _Run, warnings: list[str]) -> LabelResult:
    """The labelled table, the classifier, the report and its summary, each written atomically."""
    job, prep, current = run.job, run.prep, run.current
    if run.panel.truncated:
        run.say(f"{len(run.panel.truncated)} text(s) were cut for the LLMs (llm.long_texts = "
                f"{job.config.llm.long_texts!r}, llm.max_text_tokens = {job.config.llm.max_text_tokens}, "
                f"llm.max_chunks = {job.config.llm.max_chunks})")
    out_columns = list(prep.columns) + [col for col in NEW_COLUMNS if col not in prep.columns]
    out_rows = []
    for i, row in enumerate(prep.rows):
        lab = current[i]
        out_rows.append({
            **row, "label": lab.label, "label_source": lab.source,
            "confidence": None if lab.confidence is None else round(float(lab.confidence), 4),
            "negative_labels": "|".join(lab.negatives), "needs_review": "true" if lab.needs_review else "false",
            "llm_votes": lab.votes,
        })
    classifier_path = job.beside_output(".classifier.onnx")
    report = _report(run, warnings)
    summary = _summary(report)
    report_path, summary_path = job.beside_output(".report.json"), job.beside_output(".report.txt")
    with all_or_nothing():  # the five files appear together or not at all (a full disk: none)
        _export_classifier(run.clf, classifier_path, prep.labels, run.encoder)
        atomic_write_text(report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(summary_path, summary)
        write_table_atomic(job.output, out_rows, out_columns, formula_guard=job.formula_guard)
    run.session.set_state("done")
    return LabelResult(job.output, job.session_path, classifier_path, report_path, summary_path, summary,
                       warnings, run.session.session_id)


STAGES: tuple[tuple[str, Callable[[_Run], None]], ...] = (
    ("encoding", _encode),
    ("llm_seeds", _annotate_seeds),
    ("label_model", _fit_label_model),
    ("teaching", _check_teaching),
    ("active_learning", _active_learning),
    ("classifier", _train_final),
    ("labelling", _label_rows),
)
"""The label job's stages, in order; each records its seconds in the report."""


def run_label_job(job: LabelJob, progress: Progress | None = None, warn: Warn | None = None) -> LabelResult:
    """Label every row of ``job.input`` into ``job.output`` (see the module docstring)."""
    warnings: list[str] = []

    def say(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    settings = _check_settings(job)
    with ExitStack() as stack:
        prep = _prepare(job, settings)  # reads only: a refusal leaves nothing behind, not even a lock file
        for lock in job.locks():  # one job per session and output: a second one stops here
            stack.enter_context(lock)
        run = _start(job, prep, stack, say, progress)
        for name, stage in STAGES:
            started = time.perf_counter()
            stage(run)
            run.times[name] = time.perf_counter() - started
        return _write_outputs(run, warnings)


def _export_classifier(clf: Any, path: Path, labels: Sequence[str], encoder: Any) -> None:
    """The classifier as one ONNX graph from token ids to probabilities (encoder included, labels
    in its metadata) and the tokenizer beside it: what `mollia-edge predict` runs."""
    from .predict import export_classifier

    export_classifier(clf, encoder, path, labels)


def _gold_quality(truth: Sequence[str | None], current: dict[int, RowLabel], seed_rows: np.ndarray,
                  llm_rows: np.ndarray, votes: np.ndarray, models: Sequence[str], labels: Sequence[str]) -> dict:
    """:func:`~mollia_edge.quality.gold_quality` of the final labels; votes (m, N): each LLM's
    own label index on ``llm_rows``."""
    from .quality import gold_quality

    index = {label: i for i, label in enumerate(labels)}
    n = len(truth)
    scored = np.ones(n, bool)
    scored[seed_rows] = False
    final = np.array([index[current[i].label] for i in range(n)])
    sources = [current[i].source for i in range(n)]
    reference = np.array([-1 if t is None else index[t] for t in truth])
    return gold_quality(reference, final, sources, scored, llm_rows,
                        {m: votes[:, j] for j, m in enumerate(models)}, len(labels))


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"mollia-edge label: {report['rows']} rows, {len(report['labels'])} labels, "
        f"{report['seed_rows']} seed rows, label model {report['label_model']}",
        f"LLM-annotated rows: {report['llm_rows']} ({quoted_list(report['models'], 10, quote=False)}); "
        + (f"active learning: {report['rounds']} round(s) of {report['batch']}" if report["rounds"] else
         "no active learning (0 rounds): the classifier learns from the seed rows and the LLM sample")
        + (f" (stopped: {report['al_stop']['stopped']})" if (report.get("al_stop") or {}).get("stopped") else ""),
        f"abstained: {report['abstained_rows']} queried rows below confidence {report['abstain_below']:.3f} "
        "(for review, not trained on)",
    ]
    for model, accuracy in report["llm_accuracy_on_seeds"].items():
        confused = confusion_text(report["llm_agreement_on_seeds"][model].get("confused", []))
        lines.append(f"  {quoted(model, quote=False)}: accuracy on seeds {accuracy:.3f}" + (f"; confuses {confused}" if confused else ""))
    teacher = report["classifier_teacher"]
    lines.append(f"classifier learns from: {teacher['teacher']} ({teacher['why']})")
    residency = report["llm_residency"]
    lines.append(f"LLMs in memory: {residency['resident']} of {residency['models']} at a time; loads: "
                 + ", ".join(f"{quoted(m, quote=False)} {v}" for m, v in residency["loads"].items()))
    lines.append("labels: " + ", ".join(f"{quoted(k, quote=False)} {v}" for k, v in report["label_distribution"].items()))
    lines.append("sources: " + ", ".join(f"{k} {v}" for k, v in report["label_sources"].items()))
    lines.append(f"needs review: {report['needs_review']}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    if "gold" in report:
        from .quality import quality_lines

        lines.extend(quality_lines(report["gold"]))
    return "\n".join(lines) + "\n"
