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
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import SEED_MAX, Config, fit_sequences
from .data import (
    check_label_set, check_writable_format, load_table, normalise_label, texts_from_rows,
    write_table_atomic,
)
from .errors import ConfigError, DataError, quoted, quoted_list
from .files import (
    SessionLock, atomic_write_text, check_job_paths, make_private_folder, remove_stale_temporaries,
)
from .session import RowLabel, Session, open_session_store
from .store import Store

if TYPE_CHECKING:  # the AL stack (onnxruntime) is imported only when a job runs
    from .al.loop import LabelledSet

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total): stages ``encoding``, ``llm <model>``, ``rounds``, ``labelling``."""
Warn = Callable[[str], None]

NEW_COLUMNS = ("label", "label_source", "confidence", "negative_labels", "needs_review", "llm_votes")
MIN_MOLAM_SEEDS = 10
"""Fewer seed rows (or seeds of fewer than two classes): the seedless Dawid-Skene label model."""


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
    rounds: int | None = None
    batch: int | None = None
    seed: int | None = None
    llm_sample: int = 500
    review_threshold: float = 0.6
    strict: bool = False
    mode: str = "head"
    threads: int = 1
    session: Path | None = None
    """The session store; None: OUTPUT + '.session.sqlite'."""
    config: Config = field(default_factory=Config)
    formula_guard: bool = True
    """CSV/TSV output cells that start like a spreadsheet formula get a leading quote (see
    :func:`~mollia_edge.data.spreadsheet_safe`); False: written verbatim (``--keep-formulas``)."""

    @property
    def session_path(self) -> Path:
        return self.session or self.output.with_name(self.output.name + ".session.sqlite")

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
    rounds = job.config.al.rounds if job.rounds is None else job.rounds
    batch = job.config.al.query_size if job.batch is None else job.batch
    seed = job.config.seed if job.seed is None else job.seed
    if rounds < 0:
        raise ConfigError(f"--rounds must be >= 0, got {rounds}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
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


def _label_set(job: LabelJob, label_column: str | None, rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    if job.labels is not None:
        labels = check_label_set(job.labels)
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


def _derived(seed: int, *extra: int) -> int:
    return int(np.random.SeedSequence([seed, *extra]).generate_state(1)[0])


# ---------------------------------------------------------------------------- label models
class _Mixture:
    """MoLAM (with seeds) or Dawid-Skene (without) over the LLMs' signals."""

    def __init__(self, kind: str, model: Any, delta: float, rule: str) -> None:
        self.kind, self.model, self.delta, self.rule = kind, model, delta, rule

    def predict_proba(self, z: np.ndarray, c: np.ndarray) -> np.ndarray:
        if self.kind == "molam":
            return self.model.predict_proba(z, c)
        return self.model.predict_proba(c)

    def negative_labels(self, z: np.ndarray) -> np.ndarray:
        from .molam import negative_labels

        return negative_labels(z, self.delta, self.rule)


def _fit_mixture(z: np.ndarray, c: np.ndarray, seed_pos: np.ndarray, y_seed: np.ndarray, k: int,
                 config: Config, seed: int) -> _Mixture:
    from .molam import DawidSkene, fit_annotation_model

    cfg = config.molam
    if len(seed_pos) >= MIN_MOLAM_SEEDS and len(np.unique(y_seed)) >= 2:
        rest = np.setdiff1d(np.arange(len(z)), seed_pos)
        model = fit_annotation_model(z[seed_pos], c[seed_pos], y_seed, z[rest], c[rest], k, config=cfg, seed=seed)
        return _Mixture("molam", model, cfg.delta, cfg.negative_rule)
    return _Mixture("dawid_skene", DawidSkene(k, seed=seed).fit(c), cfg.delta, cfg.negative_rule)


# ---------------------------------------------------------------------------- the job
class _LLMs:
    """The job's LLM annotators (loaded on first need); signals of rows, cached in the store."""

    def __init__(self, annotators: list[Any], names: list[str], texts: Sequence[str], progress: Progress | None) -> None:
        self.annotators, self.names, self.texts, self.progress = annotators, names, texts, progress
        self.truncated: set[int] = set()
        self.seconds = dict.fromkeys(names, 0.0)
        """Per model: time spent on texts not found in the store (``annotator.computed`` of them)."""

    def signals(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and consistency (len(rows), N, K) of ``rows``."""
        texts = [self.texts[i] for i in rows]
        z, c = [], []
        for name, annotator in zip(self.names, self.annotators):
            report = (lambda d, t, m=name: self.progress(f"llm {m}", d, t)) if self.progress else None
            started = time.perf_counter()
            s = annotator.annotate(texts, report)
            self.seconds[name] += time.perf_counter() - started
            z.append(s.label_prob)
            c.append(s.consistency)
            self.truncated.update(int(r) for r, cut in zip(rows, s.truncated) if cut)
        return np.stack(z, axis=1), np.stack(c, axis=1)


def _make_annotator(llms: _LLMs, mixture: _Mixture, n_rows: int, k: int, abstain_below: float) -> Any:
    """The loop's annotator: the label model over the LLMs' signals, abstaining below ``abstain_below``."""
    from .al.annotators import Annotator, abstaining_labels

    class MixtureAnnotator(Annotator):
        name = f"llm-{mixture.kind}"

        def __init__(self) -> None:
            self.n_rows, self.n_classes = n_rows, k

        def _annotate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            z, c = llms.signals(rows)
            return abstaining_labels(mixture.predict_proba(z, c), abstain_below), mixture.negative_labels(z)

    return MixtureAnnotator()


def _final_classifier(x: np.ndarray, labelled: LabelledSet, k: int, job: LabelJob, rounds: int, seed: int) -> Any:
    """The classifier on every ``labelled`` row (held-out slice for early stopping), seeded."""
    from .al.loop import negative_learning_weight, train_classifier

    al = job.config.al
    lam = negative_learning_weight(rounds, dataclasses.replace(al, rounds=max(rounds, 1)))
    return train_classifier(
        x, labelled, k, lam, al, {"mode": job.mode, "threads": job.threads}, _derived(seed, 9001), _derived(seed, 9002),
    )


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
    labels = _label_set(job, label_column, rows)
    table = texts_from_rows(job.input, columns, rows, job.text_column, label_column, labels)
    if len(table.texts) < 2:
        raise DataError(f"{job.input}: the file has 1 row; labelling needs at least 2 (the classifier trains on them)")
    fit_sequences(job.config.llm, len(labels))  # too many labels for llama.cpp: now, not after the encoder
    input_seeds = {i: g for i, g in enumerate(table.gold or ()) if g is not None}
    truth = None
    if job.gold_column is not None:
        if job.gold_column in (job.text_column, label_column):
            raise ConfigError(f"the gold column {quoted(job.gold_column)} is also the text or label column; "
                              "give the column that holds the gold labels")
        truth = texts_from_rows(job.input, columns, rows, job.text_column, job.gold_column, labels).gold

    from .llm.catalog import inspect_gguf, load_catalog

    catalog = load_catalog()
    names = list(job.models or catalog.starter)
    if not names:
        raise ConfigError("no models given and the catalog names no starter models")
    resolved = []
    for name in names:
        model_file = catalog.resolve(name)
        inspect_gguf(model_file.path)
        resolved.append(model_file)
    from .llm.prompts import PromptSpec

    for model_file in resolved:  # labels a prompt cannot tell apart, an unknown chat format: now, not later
        PromptSpec(labels=labels, item=job.item,
                   chat_format=model_file.spec.chat_format if model_file.spec else job.chat_format or "none")
    display = [m.spec.name if m.spec else m.path.stem for m in resolved]
    if len(set(display)) != len(display):
        raise ConfigError(f"a model is listed twice: {quoted_list(display)}")
    return _Prepared(rounds, batch, seed, list(columns), list(rows), label_column, labels, list(table.texts),
                     input_seeds, resolved, display, truth)


def _open_session(job: LabelJob, prep: _Prepared, store: Store) -> Session:
    from .llm.catalog import verify

    shas = [verify(m, store) for m in prep.resolved]
    settings = {
        "text_column": job.text_column, "label_column": prep.label_column, "item": job.item,
        "models": shas, "chat_format": job.chat_format, "strategy": job.strategy, "rounds": prep.rounds,
        "batch": prep.batch, "seed": prep.seed, "llm_sample": job.llm_sample,
        "review_threshold": job.review_threshold, "mode": job.mode, "config": dataclasses.asdict(job.config),
    }
    return Session.open(store, settings, _file_sha256(job.input), len(prep.texts), prep.labels)


def al_run_id(session: Session) -> str:
    """The active-learning run of the session's current human labels: a changed set starts a new one."""
    human = sorted(session.human_labels().items())
    digest = hashlib.sha256(json.dumps(human).encode()).hexdigest()[:12]
    return session.session_id + "-al" + (f"-{digest}" if human else "")


def _speed_stage(session: Session, llms: _LLMs, resolved: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Per model, over every run of the session: texts annotated, seconds, file size and quant."""
    totals = session.stage("llm_speed") or {}
    for name, annotator, model_file in zip(llms.names, llms.annotators, resolved):
        before = totals.get(name, {"texts": 0, "seconds": 0.0})
        seconds = before["seconds"] + (llms.seconds[name] if annotator.computed else 0.0)
        totals[name] = {"texts": before["texts"] + annotator.computed, "seconds": round(seconds, 3),
                        "file_mib": round(model_file.size / 2**20, 1), "quant": model_file.quant or "-"}
    session.put_stage("llm_speed", totals, sum(llms.seconds.values()))
    return totals


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
    lock: SessionLock

    def close(self) -> None:
        self.store.close()
        self.lock.__exit__(None, None, None)


def open_job_session(job: LabelJob) -> JobSession:
    """The session :func:`run_label_job` will use for ``job`` (created if new), and the input;
    the session stays locked for this process until :meth:`JobSession.close`."""
    settings = _check_settings(job)
    with ExitStack() as stack:
        lock = stack.enter_context(SessionLock(job.session_path))
        prep = _prepare(job, settings)
        store = stack.enter_context(open_session_store(job.session_path))
        session = _open_session(job, prep, store)
        stack.pop_all()
    return JobSession(store, session, prep.texts, prep.labels, prep.input_seeds, prep.display, lock)


def encode_texts(job: LabelJob, texts: Sequence[str],
                 progress: Callable[[int, int], None] | None = None) -> tuple[Any, np.ndarray]:
    """The encoder and the sentence embeddings (n, 384) of ``texts``, cached beside the session store."""
    from .al.encoder import EmbeddingCache, Encoder, encode_cached

    cache_dir = job.session_path.with_name(job.session_path.name + ".embeddings")
    make_private_folder(cache_dir)
    cache = EmbeddingCache(cache_dir)
    cache.remove_partial_shards()  # the job holds the session's lock
    encoder = Encoder(max_length=job.config.al.max_length, intra_op_threads=max(1, job.threads))
    return encoder, encode_cached(encoder, texts, cache, progress=progress)


def run_label_job(job: LabelJob, progress: Progress | None = None, warn: Warn | None = None) -> LabelResult:
    """Label every row of ``job.input`` into ``job.output`` (see the module docstring)."""
    warnings: list[str] = []

    def say(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    settings = _check_settings(job)
    with ExitStack() as stack:
        stack.enter_context(SessionLock(job.session_path))  # one job per session: a second one stops here
        prep = _prepare(job, settings)
        rounds, batch, seed = prep.rounds, prep.batch, prep.seed
        columns, rows, label_column, labels = prep.columns, prep.rows, prep.label_column, prep.labels
        texts, n, k = prep.texts, len(prep.texts), len(labels)
        index = {label: i for i, label in enumerate(labels)}

        duplicates = n - len(set(texts))
        if duplicates:
            say(f"{duplicates} row(s) repeat an earlier row's text; each is labelled, the LLMs see each text once")
        clashes = [c for c in NEW_COLUMNS if c in columns and c != label_column]
        if clashes:
            say(f"input column(s) {', '.join(map(repr, clashes))} are replaced by the output's columns of that name")

        remove_stale_temporaries(job.outputs().values())  # of writers killed earlier
        store = stack.enter_context(open_session_store(job.session_path))
        session = _open_session(job, prep, store)
        display = prep.display
        human = session.human_labels()
        gold = np.full(n, -1, np.int64)
        for row, label in {**prep.input_seeds, **human}.items():
            gold[row] = index[label]
        seed_rows = np.flatnonzero(gold >= 0)
        missing_classes = [labels[j] for j in range(k) if not np.any(gold[seed_rows] == j)]
        seed_size = job.config.al.seed_size
        if len(seed_rows) < seed_size:
            what = "no seed labels" if not len(seed_rows) else f"only {len(seed_rows)} seed label(s)"
            message = f"{what} (rows with a label; {seed_size} advised)"
            if job.strict:
                raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
            say(message + ("; labels come from the seedless label model" if len(seed_rows) < MIN_MOLAM_SEEDS else ""))
        if len(seed_rows) == n:
            say("every row has a seed label: the output keeps them as given, nothing is left to label")
        if missing_classes and len(seed_rows):
            message = f"no seed row for label(s) {quoted_list(missing_classes)}"
            if job.strict:
                raise DataError(f"{job.input}: {message}; add seed labels or leave out --strict")
            say(message)
        session.set_state("running")
        times: dict[str, float] = {}

        # -- encoding ----------------------------------------------------------------------
        started = time.perf_counter()
        if progress:
            progress("encoding", 0, n)
        encoder, x = encode_texts(job, texts, (lambda d, t: progress("encoding", d, t)) if progress else None)
        if progress:
            progress("encoding", n, n)
        times["encoding"] = time.perf_counter() - started

        # -- LLMs on seeds + sample ---------------------------------------------------------
        started = time.perf_counter()
        from .llm.annotator import LLMAnnotator
        from .llm.prompts import PromptSpec

        annotators = []
        for model_file in prep.resolved:
            chat = model_file.spec.chat_format if model_file.spec else job.chat_format or "none"
            prompt = PromptSpec(labels=labels, item=job.item, chat_format=chat)
            annotators.append(stack.enter_context(LLMAnnotator(model_file.path, prompt, job.config.llm, store)))
        llms = _LLMs(annotators, display, texts, progress)
        others = np.setdiff1d(np.arange(n), seed_rows)
        take = min(job.llm_sample, len(others))
        sample = np.sort(np.random.default_rng(_derived(seed, 7)).choice(others, size=take, replace=False))
        first = np.concatenate([seed_rows, sample]).astype(np.int64)
        z, c = llms.signals(first)
        times["llm_seed_and_sample"] = time.perf_counter() - started

        started = time.perf_counter()
        seed_pos = np.arange(len(seed_rows))
        mixture = _fit_mixture(z, c, seed_pos, gold[seed_rows], k, job.config, seed)
        times["label_model"] = time.perf_counter() - started
        from .al.annotators import confidence_floor

        # the loop's annotator abstains below molam.abstain_below, on at most a set share of the sample
        sample_proba = (
            mixture.predict_proba(z[len(seed_rows):], c[len(seed_rows):]) if len(sample) else np.zeros((0, k))
        )
        abstain_below = confidence_floor(
            sample_proba, job.config.molam.abstain_below, job.config.molam.max_abstain_share
        )
        llm_report = None
        if len(seed_rows):
            from .agreement import annotator_report

            llm_report = annotator_report(z[seed_pos], c[seed_pos], gold[seed_rows], display).as_dict()

        # -- active learning ------------------------------------------------------------------
        started = time.perf_counter()
        bootstrap = len(seed_rows) < MIN_MOLAM_SEEDS or len(np.unique(gold[seed_rows])) < 2
        train_gold = gold.copy()
        init = seed_rows
        if bootstrap and len(sample):
            train_gold[sample] = sample_proba.argmax(axis=1)
            init = np.sort(np.concatenate([seed_rows, sample]))
        if len(init) < 2:
            raise DataError(
                f"{job.input}: fewer than 2 rows can start the classifier; add seed labels or raise the LLM sample"
            )
        free = n - len(init)
        b = min(batch, free)
        r = min(rounds, free // b) if b else 0
        if (r, b) != (rounds, batch) and rounds > 0:
            say(f"only {free} unlabelled row(s): active learning runs {r} round(s) of {b} instead of {rounds} of {batch}")
        from .al.loop import ActiveLearningTask, LabelledSet, add_recorded_labels, run_active_learning

        labelled = LabelledSet(init, train_gold[init], np.ones(len(init), np.float32), np.zeros((len(init), k), bool))
        abstained = np.empty(0, np.int64)  # queried rows the label model was too unsure of to train on
        run_id = al_run_id(session)
        if r > 0:
            al_config = dataclasses.replace(job.config.al, rounds=r, query_size=b, seed_size=len(init))
            task = ActiveLearningTask(inputs=x, pool=np.arange(n), n_classes=k, gold=train_gold)
            if progress:
                progress("rounds", len(store.al_rounds(run_id)) if store.query(
                    "SELECT 1 FROM al_runs WHERE run_id=?", (run_id,)) else 0, r + 1)
            run_active_learning(
                task, _make_annotator(llms, mixture, n, k, abstain_below), job.strategy, config=al_config, seed=seed,
                seed_rows=init, mode=job.mode, threads=job.threads, store=store, run_id=run_id,
                progress=(lambda m: progress("rounds", m.round + 1, r + 1)) if progress else None,
            )
            abstained = add_recorded_labels(store, run_id, labelled)
        times["active_learning"] = time.perf_counter() - started

        # -- final classifier and labels ------------------------------------------------------
        started = time.perf_counter()
        clf = _final_classifier(x, labelled, k, job, r, seed)
        p_clf = clf.predict_proba(x)
        times["classifier"] = time.perf_counter() - started

        started = time.perf_counter()
        llm_rows = np.setdiff1d(np.union1d(np.union1d(first, labelled.rows), abstained), seed_rows)
        z_l, c_l = llms.signals(llm_rows) if len(llm_rows) else (np.zeros((0, len(display), k)),) * 2
        p_mix = mixture.predict_proba(z_l, c_l) if len(llm_rows) else np.zeros((0, k))
        neg_mix = mixture.negative_labels(z_l) if len(llm_rows) else np.zeros((0, k), bool)
        votes_mix = z_l.argmax(axis=2) if len(llm_rows) else np.zeros((0, len(display)), np.int64)
        threshold, delta = job.review_threshold, job.config.molam.delta
        row_labels: list[RowLabel] = []
        review: list[tuple[int, str, float]] = []
        position = {int(row): i for i, row in enumerate(llm_rows)}
        seed_set, abstained_set = set(seed_rows.tolist()), set(abstained.tolist())
        for i in range(n):
            clf_label = int(p_clf[i].argmax())
            if i in seed_set:
                row_labels.append(RowLabel(i, labels[gold[i]], "seed", "seed", 1.0))
                continue
            if i in position:
                j = position[i]
                y = int(p_mix[j].argmax())
                conf = float(p_mix[j, y])
                negs = tuple(labels[q] for q in np.flatnonzero(neg_mix[j]))
                votes = "|".join(f"{m}:{labels[v]}" for m, v in zip(display, votes_mix[j]))
                disagree = clf_label != y
                flagged = disagree or conf < threshold or i in abstained_set
                row_labels.append(RowLabel(i, labels[y], "llm_mixture", f"llm_mixture:{mixture.kind}",
                                           round(conf, 6), negs, votes, flagged))
                if flagged:
                    reason = f"classifier says {labels[clf_label]}" if disagree else "low confidence"
                    review.append((i, reason, 1.0 - conf + float(disagree)))
            else:
                conf = float(p_clf[i, clf_label])
                negs = tuple(labels[q] for q in np.flatnonzero(p_clf[i] < delta))
                flagged = conf < threshold
                row_labels.append(RowLabel(i, labels[clf_label], "classifier", "classifier",
                                           round(conf, 6), negs, "", flagged))
                if flagged:
                    review.append((i, "low confidence", 1.0 - conf))
            if progress and (i + 1) % 500 == 0:
                progress("labelling", i + 1, n)
        session.put_machine_labels(row_labels)
        session.queue_for_review(review)
        if progress:
            progress("labelling", n, n)
        current = session.row_labels()  # human labels (from the TUI) win over machine ones
        times["labelling"] = time.perf_counter() - started

        # -- outputs ------------------------------------------------------------------------
        out_columns = list(columns) + [col for col in NEW_COLUMNS if col not in columns]
        out_rows = []
        for i, row in enumerate(rows):
            lab = current[i]
            out_rows.append({
                **row, "label": lab.label, "label_source": lab.source,
                "confidence": None if lab.confidence is None else round(float(lab.confidence), 4),
                "negative_labels": "|".join(lab.negatives), "needs_review": "true" if lab.needs_review else "false",
                "llm_votes": lab.votes,
            })
        classifier_path = job.beside_output(".classifier.onnx")
        _export_classifier(clf, classifier_path, labels, encoder)
        distribution = Counter(current[i].label for i in range(n))
        sources = Counter(current[i].source for i in range(n))
        report = {
            "session": session.session_id,
            "rows": n,
            "labels": list(labels),
            "seed_rows": int(len(seed_rows)),
            "label_model": mixture.kind,
            "models": display,
            "llm_rows": int(len(llm_rows) + len(seed_rows)),
            "llm_accuracy_on_seeds": {m: v["accuracy_scores"] for m, v in (llm_report or {}).items()},
            "llm_agreement_on_seeds": llm_report or {},
            "human_rows": len(human),
            "al_run": run_id,
            "abstain_below": round(abstain_below, 6),
            "abstained_rows": int(len(abstained)),
            "llm_speed": _speed_stage(session, llms, prep.resolved),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "label_distribution": {label: distribution.get(label, 0) for label in labels},
            "label_sources": dict(sorted(sources.items())),
            "needs_review": int(sum(current[i].needs_review for i in range(n))),
            "rounds": r,
            "batch": b,
            "truncated_for_llms": len(llms.truncated),
            "warnings": warnings,
            "seconds": {stage: round(s, 3) for stage, s in times.items()},
        }
        if prep.truth is not None:
            report["gold"] = _gold_quality(prep.truth, current, seed_rows, llm_rows, votes_mix, display, labels)
        if llms.truncated:
            say(f"{len(llms.truncated)} text(s) longer than {job.config.llm.max_text_tokens} tokens were cut for the LLMs")
        summary = _summary(report)
        report_path, summary_path = job.beside_output(".report.json"), job.beside_output(".report.txt")
        atomic_write_text(report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(summary_path, summary)
        write_table_atomic(job.output, out_rows, out_columns, formula_guard=job.formula_guard)
        session.set_state("done")
    return LabelResult(job.output, job.session_path, classifier_path, report_path, summary_path, summary,
                       warnings, session.session_id)


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
        f"LLM-annotated rows: {report['llm_rows']} ({', '.join(report['models'])}); "
        f"active learning: {report['rounds']} round(s) of {report['batch']}",
        f"abstained: {report['abstained_rows']} queried rows below confidence {report['abstain_below']:.3f} "
        "(for review, not trained on)",
    ]
    for model, accuracy in report["llm_accuracy_on_seeds"].items():
        lines.append(f"  {model}: accuracy on seeds {accuracy:.3f}")
    lines.append("labels: " + ", ".join(f"{k} {v}" for k, v in report["label_distribution"].items()))
    lines.append("sources: " + ", ".join(f"{k} {v}" for k, v in report["label_sources"].items()))
    lines.append(f"needs review: {report['needs_review']}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    if "gold" in report:
        from .quality import quality_lines

        lines.extend(quality_lines(report["gold"]))
    return "\n".join(lines) + "\n"
