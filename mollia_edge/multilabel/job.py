"""The multi-label label job (``mollia-edge label --multi-label``): a short driver over named stages.

1. ``read``: the table, each seed cell's label set (:mod:`.labels`), the label set, gold sets;
2. ``encode``: the sentence embeddings (cached beside the session store, as the single-label job);
3. ``annotate``: every LLM reads the seed rows (under the number of demonstrations it reads them
   best with) and a random sample of the others (``--llm-sample``) once, its answers per label
   stored in the session store as they are made (a killed job resumes without reading a text
   twice): :mod:`.prompts`;
4. ``active_learning``: rounds of queries (:mod:`.loop`) that every LLM reads, within the word
   budget;
5. ``labelling``: per label the text annotator and MoLAM (:mod:`.model`), then the multi-label
   head on the seed rows (their labels), the rows the LLMs read (the label model's labels) and
   every other row pseudo-labelled by the text annotator (``al.pseudo_weight``);
6. ``write``: the labelled table, the classifier, the report and its summary, all or none.

Rows: a seed row keeps its labels (``seed``); a row of the LLM sample gets the label model's
(``llm_mixture``), every other row the classifier's (``classifier``). A label applies where its
probability is at least .5; a row needs review where some label's probability is within
``--review-threshold`` of a coin flip (max(p, 1 - p) below it).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import load_table, texts_from_rows, write_table_atomic
from ..errors import ConfigError, DataError, quoted, quoted_list
from ..files import all_or_nothing, atomic_write_text
from ..label.job import LabelJob, LabelResult, Progress, Warn
from ..randomness import derived_seed
from ..task import load_task
from . import labels as label_sets
from .loop import mean_binary_entropy, query, strategy_of
from .model import label_model, negative_labels, text_annotator, train_classifier
from .prompts import (
    YES,
    answers,
    demonstrations_from,
    label_probabilities,
    seed_auc,
    shot_candidates,
    yes_no_prompt,
)
from .value import label_set_values

OUTPUT_COLUMNS = ("label", "label_source", "confidence", "negative_labels", "needs_review")
MIN_SEEDS = 2


@dataclass(frozen=True)
class Input:
    """What the ``read`` stage found: n rows, K labels."""

    columns: list[str]
    rows: list[dict[str, Any]]
    texts: list[str]
    labels: tuple[str, ...]
    y: np.ndarray
    """(n, K) bool: the seed rows' labels (False elsewhere)."""
    seed_rows: np.ndarray
    gold: np.ndarray | None
    """(n, K) bool, or None without ``--gold-column``."""
    item: str = "text"
    descriptions: tuple[str, ...] = ()
    """Per label its description from the task file ("" for none; empty without one)."""


@dataclass(frozen=True)
class Signals:
    """What the ``annotate`` stage found: N models over the m rows they read."""

    names: list[str]
    rows: np.ndarray
    """(m,) the rows every model read: the seed rows first, then the sample."""
    p_yes: np.ndarray
    """(N, m, K) each model's probability that each label applies."""
    consistency: np.ndarray
    seconds: dict[str, float]
    shots: dict[str, dict[str, Any]]
    """Per model the demonstrations per label it read with, and the seed AUC of each tried."""


def read_input(job: LabelJob) -> Input:
    columns, rows = load_table(job.input)
    label_column = job.label_column or ("label" if "label" in columns else None)
    if label_column is None or label_column not in columns:
        raise DataError(f"{job.input}: no seed label column {quoted(label_column or 'label')}; a multi-label job "
                        "needs seed rows whose cells hold their labels (a|b)")
    texts = texts_from_rows(job.input, columns, rows, job.text_column).texts
    sets = label_sets.seed_sets([row.get(label_column) for row in rows], f"{job.input}, column {quoted(label_column)}")
    task = load_task(job.task_file) if job.task_file else None
    labels = label_sets.label_set_of(sets, job.labels or (task.labels if task else None))
    if task is not None and set(task.labels) != set(labels):
        raise DataError(f"the task file's labels {quoted_list(task.labels)} differ from the job's "
                        f"{quoted_list(labels)}; give the same label set")
    y, seeded = label_sets.indicator(sets, labels)
    if seeded.sum() < MIN_SEEDS or seeded.all():
        raise DataError(f"{job.input}: {int(seeded.sum())} seed row(s) of {len(rows)}; a multi-label job needs at "
                        f"least {MIN_SEEDS} rows with labels and one without")
    gold = None
    if job.gold_column is not None:
        if job.gold_column not in columns:
            raise DataError(f"{job.input}: no gold column {quoted(job.gold_column)}")
        gold_sets = label_sets.seed_sets([row.get(job.gold_column) for row in rows], f"{job.input}, gold")
        gold, _ = label_sets.indicator([s if s is None else tuple(x for x in s if x in labels) for s in gold_sets],
                                       labels)
    descriptions = tuple(dict(zip(task.labels, task.descriptions))[label] for label in labels) if task else ()
    return Input(list(columns), list(rows), list(texts), labels, y, np.flatnonzero(seeded), gold,
                 (task.item if task and task.item else job.item), descriptions)


def open_session(job: LabelJob, data: Input, store: Any, seed: int) -> Any:
    """The job's :class:`~mollia_edge.session.Session` (multi-label: a row's label is a set)."""
    from ..llm.catalog import file_sha256
    from ..session import Session

    settings = {"multi_label": True, **({"task": file_sha256(job.task_file)} if job.task_file else {}),
                "text_column": job.text_column, "label_column": job.label_column, "item": data.item, "models": list(job.models or ()), "chat_format": job.chat_format, "seed": seed,
                "llm_sample": job.llm_sample, "review_threshold": job.review_threshold}
    return Session.open(store, settings, file_sha256(job.input), len(data.texts), data.labels)


def with_human_labels(data: Input, session: Any) -> Input:
    """``data`` with the sets people gave in the session (the TUI's Seeds and Review screens) as
    seed rows, over the input's."""
    human = session.human_labels()
    if not human:
        return data
    y = data.y.copy()
    seeded = np.zeros(len(y), bool)
    seeded[data.seed_rows] = True
    for row, cell in human.items():
        y[row] = np.isin(data.labels, label_sets.cell_labels(cell, "the session") or ())
        seeded[row] = True
    return dataclasses.replace(data, y=y, seed_rows=np.flatnonzero(seeded))


def record_labels(session: Any, rows: list[dict], proba: np.ndarray, source: np.ndarray,
                  labels: tuple[str, ...]) -> None:
    """Every row's set in the session, and the rows to review queued, least sure first."""
    from ..session import RowLabel

    machine, review = [], []
    for i, row in enumerate(rows):
        if source[i] == "human":  # the session keeps a person's label as it is
            continue
        sure = float(np.maximum(proba[i], 1 - proba[i]).min())
        flagged = row["needs_review"] == "true"
        cell = row["label"] if isinstance(row["label"], str) else label_sets.format_set(proba[i] >= 0.5, labels)
        machine.append(RowLabel(i, cell, str(source[i]), "mollia-edge", round(sure, 6),
                                tuple(filter(None, row["negative_labels"].split("|"))), needs_review=flagged))
        if flagged:
            review.append((i, "a label near even odds", 1.0 - sure))
    session.put_machine_labels(machine)
    session.queue_for_review(review)


CHOICE_SHARE = 0.25
"""At most this share of ``llm.budget_words`` goes to reading seed rows under the numbers of
demonstrations not chosen."""
MIN_CHOICE_ROWS = 10


@dataclass(frozen=True)
class ReadPlan:
    """What the LLMs read: the seed rows and a random sample first, then ``rounds`` of ``batch``."""

    rows: np.ndarray
    """(m,) the seed rows, then the sample."""
    choice: int
    """Seed rows the choice of demonstrations reads under each number tried (0: no choice)."""
    rounds: int
    batch: int
    report: dict[str, Any]


def llm_rows(job: LabelJob, data: Input, seed: int) -> ReadPlan:
    """The plan within ``llm.budget_words``: a text costs its words, the prompt around it and
    each of its 2K answers (:mod:`mollia_edge.llm.budget`). The choice of demonstrations reads as
    many seed rows as :data:`CHOICE_SHARE` of the budget pays under the numbers not chosen (fewer
    than :data:`MIN_CHOICE_ROWS`: no choice, zero-shot); the sample (at most ``job.llm_sample``
    rows drawn at random) takes half of what is left when the loop has rounds (all of it
    without), the loop the rest (:meth:`WordBudget.rounds`)."""
    from ..llm.budget import WordBudget, text_costs

    budget = WordBudget(job.config.llm.budget_words, text_costs(data.texts, 2 * len(data.labels)))
    seed_costs = budget.costs[data.seed_rows]
    others = len(shot_candidates(job.config.llm.shots, job.config.llm.max_shots)) - 1
    choice = len(data.seed_rows) if others and not budget.total else 0
    if others and budget.total:
        choice = min(len(data.seed_rows), int(budget.total * CHOICE_SHARE // (seed_costs.mean() * others)))
    choice = choice if choice >= MIN_CHOICE_ROWS else 0
    budget.spent["seed rows"] = int(seed_costs.sum() + np.sort(seed_costs)[::-1][:choice].sum() * others)
    rest = np.setdiff1d(np.arange(len(data.texts)), data.seed_rows)
    ordered = np.random.default_rng(derived_seed(seed, 43)).permutation(rest)
    rounds = job.config.al.rounds if job.rounds is None else int(job.rounds)
    batch = job.batch or job.config.al.query_size
    if rounds:
        sample = np.sort(budget.sample(ordered, job.llm_sample))
    else:
        within = np.cumsum(budget.costs[ordered[: job.llm_sample]]) <= budget.left
        sample = np.sort(ordered[: int(within.sum())])
        budget.spent["sample"] = int(budget.costs[sample].sum())
    planned = budget.rounds(rounds, batch, np.setdiff1d(rest, sample))
    rounds, batch = _fewer_rounds(*planned) if planned[1] < batch else planned  # the budget cut the batch
    rows = np.concatenate([data.seed_rows, sample]).astype(np.int64)
    return ReadPlan(rows, choice, rounds, batch, budget.report() | {"rounds": rounds, "batch": batch})


MIN_BATCH = 20
"""A round queries at least this many rows: each round refits K label models and the classifier
and loads every LLM, which cost more than the LLMs' reading of a few rows (yahoo's 10 labels: 10
rounds of 4 rows took 334 s)."""


def _fewer_rounds(rounds: int, batch: int) -> tuple[int, int]:
    """(rounds, batch) with the same rows in rounds of at least :data:`MIN_BATCH` (one round of
    all of them when they are fewer): where the budget pays for fewer rows than ``--batch`` a
    round, fewer rounds rather than smaller ones."""
    if not rounds or batch >= MIN_BATCH:
        return rounds, batch
    rows = rounds * batch
    fewer = max(1, rows // MIN_BATCH)
    return fewer, rows // fewer


def annotate(job: LabelJob, data: Input, rows: np.ndarray, store: Any, progress: Progress | None,
             seed: int, choice: int, chosen: dict[str, dict[str, Any]] | None = None) -> Signals:
    """Every model's signals on ``rows`` under the number of demonstrations it reads best
    (:func:`choose_shots`; ``chosen``: as chosen before, for those models only), stored as they are
    made; one model loaded at a time."""
    from ..label.prepare import resolve_models
    from ..llm.annotator import LLMAnnotator

    models = resolve_models(job, answers(data.labels), None)
    if chosen is not None:  # the models kept by the value check
        keep = [i for i, name in enumerate(models.display) if name in chosen]
        models = dataclasses.replace(models, resolved=[models.resolved[i] for i in keep],
                                     display=[models.display[i] for i in keep],
                                     chat_formats=[models.chat_formats[i] for i in keep])
    texts = [data.texts[i] for i in rows]
    llm = job.config.llm
    demos, demo_rows = demonstrations_from([data.texts[i] for i in data.seed_rows], data.y[data.seed_rows],
                                           data.labels, max(shot_candidates(llm.shots, llm.max_shots)),
                                           np.random.default_rng(derived_seed(seed, 47)), llm.demo_words)
    p_yes, consistency, seconds, shots = [], [], {}, {}
    for model, name, chat in zip(models.resolved, models.display, models.chat_formats):
        started = time.perf_counter()
        with LLMAnnotator(model.path, yes_no_prompt(data.labels, data.item, chat, descriptions=data.descriptions),
                          job.config.llm_for(name, getattr(model.spec, "settings", None)), store) as annotator:
            shots[name] = chosen[name] if chosen is not None else choose_shots(annotator, data, (demos, demo_rows), job, chat,
                                                                   choice, progress, name)
            demonstrations = _with_shots(demos, shots[name]["chosen"])
            annotator.use_prompt(yes_no_prompt(data.labels, data.item, chat, demonstrations, data.descriptions))
            signals = annotator.annotate(texts, (lambda d, t, n=name: progress(f"llm {n}", d, t)) if progress else None)
        seconds[name] = round(time.perf_counter() - started, 2)
        p, c = label_probabilities(signals)
        p_yes.append(p)
        consistency.append(c)
    empty = np.zeros((0, len(rows), len(data.labels)))
    return Signals(models.display, rows, np.stack(p_yes) if p_yes else empty,
                   np.stack(consistency) if consistency else empty, seconds, shots)


def _with_shots(demos: tuple[tuple[str, str], ...], shots: int) -> tuple[tuple[str, str], ...]:
    """The demonstrations of ``shots`` per label out of those drawn for more: per label the first
    ``ceil(shots / 2)`` yes answers and ``floor(shots / 2)`` no answers, in the drawn order."""
    most = {True: (shots + 1) // 2, False: shots // 2}
    taken: dict[tuple[str, bool], int] = {}
    out = []
    for text, answer in demos:
        label, word = answer.rsplit(": ", 1)
        key = (label, word == YES)
        if taken.get(key, 0) < most[key[1]]:
            out.append((text, answer))
            taken[key] = taken.get(key, 0) + 1
    return tuple(out)


def choose_shots(annotator: Any, data: Input, demonstrations: tuple, job: LabelJob, chat: str, choice: int,
                 progress: Progress | None, name: str) -> dict[str, Any]:
    """The number of demonstrations per label this model reads ``choice`` seed rows best with
    (the highest mean ROC AUC per label; rows no demonstration uses; ties to fewer), among
    :func:`shot_candidates` (no choice: the only candidate, or zero-shot when ``choice`` is 0)."""
    llm = job.config.llm
    candidates = shot_candidates(llm.shots, llm.max_shots)
    if len(candidates) == 1 or not choice:
        return {"chosen": candidates[0] if len(candidates) == 1 else 0, "seed_auc": {}}
    demos, demo_rows = demonstrations
    rest = np.setdiff1d(np.arange(len(data.seed_rows)), demo_rows)[:choice]
    texts = [data.texts[data.seed_rows[i]] for i in rest]
    scores = {}
    for shots in candidates:
        annotator.use_prompt(yes_no_prompt(data.labels, data.item, chat, _with_shots(demos, shots), data.descriptions))
        signals = annotator.annotate(texts, (lambda d, t: progress(f"llm {name} shots", d, t)) if progress else None)
        scores[shots] = round(seed_auc(label_probabilities(signals)[0], data.y[data.seed_rows[rest]]), 4)
    return {"chosen": max(scores, key=lambda n: (scores[n], -n)), "seed_auc": scores}


def merged(first: Signals, then: Signals) -> Signals:
    """The signals of ``first``'s rows and then ``then``'s (the same models)."""
    return Signals(first.names, np.concatenate([first.rows, then.rows]),
                   np.concatenate([first.p_yes, then.p_yes], axis=1),
                   np.concatenate([first.consistency, then.consistency], axis=1),
                   {name: round(first.seconds[name] + then.seconds.get(name, 0.0), 2) for name in first.seconds},
                   first.shots)


def kept_shots(signals: Signals) -> dict[str, dict[str, Any]]:
    """The demonstrations each model still reading was given (the released ones' stay in the report)."""
    return {name: signals.shots[name] for name in signals.names}


def check_value(job: LabelJob, signals: Signals, text_seed: np.ndarray, y_seed: np.ndarray,
                seed: int) -> tuple[Signals, dict[str, Any] | None]:
    """The seed rows' signals of the models that add to the text annotator (:mod:`.value`), and
    each model's value; every model with ``llm.prune = "off"``."""
    if job.config.llm.prune == "off" or not signals.names:
        return signals, None
    values = label_set_values(signals.names, signals.p_yes, text_seed, y_seed, seed)
    keep = [i for i, value in enumerate(values) if value.kept]
    kept = Signals([signals.names[i] for i in keep], signals.rows, signals.p_yes[keep], signals.consistency[keep],
                   signals.seconds, signals.shots)
    return kept, {value.name: value.as_dict() for value in values}


def read_seed_rows_first(job: LabelJob, data: Input, text_p: np.ndarray, plan: ReadPlan, store: Any,
                         progress: Progress | None, seed: int, warn: Warn | None) -> tuple[Signals, dict | None]:
    """Every model reads the seed rows; the models that add nothing to the text annotator there
    are released (:func:`check_value`); the others read the sample."""
    seeds = data.seed_rows
    signals = annotate(job, data, seeds, store, progress, seed, plan.choice)
    signals, value = check_value(job, signals, text_p[seeds], data.y[seeds], seed)
    if value is not None and not signals.names:
        if warn:
            warn("no LLM adds to the text annotator on the seed rows: the LLMs read nothing more, and the "
                 "classifier labels every other row (--prune off keeps them)")
        return signals, value
    sample = plan.rows[len(seeds):]
    return merged(signals, annotate(job, data, sample, store, progress, seed, 0, kept_shots(signals))), value


def active_learning(job: LabelJob, data: Input, x: np.ndarray, text_p: np.ndarray, store: Any, signals: Signals,
                    plan: ReadPlan, seed: int, progress: Progress | None) -> tuple[Signals, dict[str, Any]]:
    """``plan.rounds`` rounds: fit the label model and the classifier on what the LLMs have read,
    query ``plan.batch`` more rows by the strategy (:mod:`.loop`), have every LLM read them."""
    strategy = strategy_of(job.strategy)
    rng = np.random.default_rng(derived_seed(seed, 53))
    history = []
    for round_number in range(1, plan.rounds + 1 if signals.names else 1):  # no LLM left: nothing to read
        proba, *_ = label_rows(job, data, x, text_p, signals, seed, max(1, job.threads))
        candidates = np.setdiff1d(np.arange(len(x)), signals.rows)
        picked = query(strategy, proba, x, signals.rows, candidates, plan.batch, rng)
        if not len(picked):
            break
        signals = merged(signals, annotate(job, data, picked, store, progress, seed, 0, kept_shots(signals)))
        history.append({"round": round_number, "queried": int(len(picked)),
                        "mean_binary_entropy": round(float(mean_binary_entropy(proba[picked]).mean()), 4)})
        if progress:
            progress("rounds", round_number, plan.rounds)
    return signals, {"strategy": strategy, "rounds": history}


def label_rows(job: LabelJob, data: Input, x: np.ndarray, text_p: np.ndarray, signals: Signals, seed: int,
               threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(P(label applies) (n, K), source per row (n,), negative labels (n, K), the classifier);
    text_p (n, K) the text annotator's (:func:`~.model.text_annotator`)."""
    config = job.config
    seeds = data.seed_rows
    m_rows = signals.rows
    mixture = text_p[m_rows] if not signals.names else label_model(
        signals.p_yes, signals.consistency, text_p[m_rows], np.arange(len(seeds)), data.y[seeds], config, seed)
    sample = m_rows[len(seeds):]
    others = np.setdiff1d(np.arange(len(x)), m_rows)
    rows = np.concatenate([seeds, sample, others])
    targets = np.concatenate([data.y[seeds], mixture[len(seeds):] >= 0.5, text_p[others] >= 0.5]).astype(np.float32)
    weights = np.concatenate([np.ones(len(seeds) + len(sample)), np.full(len(others), config.al.pseudo_weight)])
    keep = weights > 0
    classifier = train_classifier(x, rows[keep], targets[keep], weights[keep], config, seed, threads)
    proba = classifier.predict_proba(np.asarray(x, np.float32)).astype(np.float64)
    source = np.full(len(x), "classifier", dtype=object)
    proba[sample] = mixture[len(seeds):]
    source[sample] = "llm_mixture"
    proba[seeds] = data.y[seeds]
    source[seeds] = "seed"
    negatives = np.zeros_like(data.y)
    negatives[sample] = negative_labels(signals.p_yes[:, len(seeds):], config.molam.delta)
    return proba, source, negatives, classifier


def table(job: LabelJob, data: Input, proba: np.ndarray, source: np.ndarray, negatives: np.ndarray) -> list[dict]:
    """The output rows: the input's cells and :data:`OUTPUT_COLUMNS`; in a JSONL output the set
    is a JSON list and the probabilities an object, elsewhere ``a|b`` and ``a:0.930|b:0.710``."""
    as_json = job.output.suffix.lower() == ".jsonl"
    out = []
    for i, row in enumerate(data.rows):
        decided = proba[i] >= 0.5
        sure = np.maximum(proba[i], 1 - proba[i]).min()
        if as_json:
            label: Any = [name for name, on in zip(data.labels, decided) if on]
            confidence: Any = {name: round(float(p), 3) for name, p in zip(data.labels, proba[i])}
        else:
            label = label_sets.format_set(decided, data.labels)
            confidence = label_sets.format_confidences(proba[i], data.labels)
        out.append({**row, "label": label, "label_source": source[i], "confidence": confidence,
                    "negative_labels": "|".join(name for name, no in zip(data.labels, negatives[i]) if no),
                    "needs_review": "true" if source[i] in ("classifier", "llm_mixture")
                    and sure < job.review_threshold else "false"})
    return out


def quality(data: Input, proba: np.ndarray, source: np.ndarray, signals: Signals) -> dict[str, Any] | None:
    """Against gold on the rows that were not seeds: the final labels, by source, each LLM alone."""
    if data.gold is None:
        return None
    scored = np.flatnonzero((source != "seed") & (source != "human"))
    out = {"final": label_sets.multilabel_quality(proba[scored] >= 0.5, data.gold[scored]), "by_source": {}}
    for name in ("llm_mixture", "classifier"):
        rows = np.flatnonzero(source == name)
        if len(rows):
            out["by_source"][name] = label_sets.multilabel_quality(proba[rows] >= 0.5, data.gold[rows])
    sample = signals.rows[len(data.seed_rows):]
    out["by_llm"] = {name: label_sets.multilabel_quality(signals.p_yes[i, len(data.seed_rows):] >= 0.5,
                                                         data.gold[sample])
                     for i, name in enumerate(signals.names)} if len(sample) else {}
    return out


def _bought(report: dict[str, Any]) -> list[str]:
    """A line per model: what it was given, what it cost, and whether it was kept."""
    lines = []
    for name, seconds in report["llm_seconds"].items():
        value = (report.get("llm_value") or {}).get(name)
        decided = "kept" if value is None or value["decision"] == "kept" else "released after the seed rows"
        why = f" ({value['why']})" if value else ""
        shots = (report.get("shots") or {}).get(name, {}).get("chosen")
        lines.append(f"  {name}: {decided}{why}; {seconds:.0f} s"
                     + ("" if shots is None else f", {shots} demonstration(s) per label"))
    read = report["llm_rows"] if report["models"] else report["seed_rows"]
    return [f"LLMs ({read} rows read):", *lines] if lines else []


def summary(report: dict[str, Any]) -> str:
    lines = [f"multi-label: {report['rows']} rows, {len(report['labels'])} labels, {report['seed_rows']} seed rows",
             *_bought(report), f"rows to review: {report['needs_review']}"]
    gold = report.get("gold")
    if gold:
        final = gold["final"]
        lines.append(f"against gold ({final['rows']} rows): micro-F1 {final['micro_f1']:.3f}, macro-F1 "
                     f"{final['macro_f1']:.3f}, subset accuracy {final['subset_accuracy']:.3f}, Hamming loss "
                     f"{final['hamming_loss']:.3f}")
    return "\n".join(lines) + "\n"


def check_job(job: LabelJob) -> None:
    """What a multi-label job does not do (yet), each refused in one line."""
    refused = {"--ray": job.ray is not None, "--target-error": job.config.guarantee.target_error is not None,
               "--classifier top-layers": job.classifier == "top-layers",
               "--rounds auto": job.rounds == "auto"}
    for flag, given in refused.items():
        if given:
            raise ConfigError(f"{flag} is not available with --multi-label yet; leave it out")
    strategy_of(job.strategy)  # one with no multi-label form: now, not after the LLMs


def run_multilabel_job(job: LabelJob, progress: Progress | None = None, warn: Warn | None = None) -> LabelResult:
    """Label every row of ``job.input`` with a set of labels into ``job.output`` (see the module)."""
    from contextlib import ExitStack

    from ..label.llm_stages import encode_texts
    from ..session import open_session_store

    check_job(job)
    seed = job.config.seed if job.seed is None else job.seed
    seconds: dict[str, float] = {}

    def timed(stage: str, run, *inputs):
        began = time.perf_counter()
        result = run(*inputs)
        seconds[stage] = round(time.perf_counter() - began, 2)
        return result

    data = timed("read", read_input, job)  # reads only: a refusal leaves nothing behind
    rare = [label for label, count in zip(data.labels, data.y[data.seed_rows].sum(axis=0)) if count < 3]
    if rare and warn:
        warn(f"{len(rare)} label(s) carried by fewer than 3 seed rows (their labels will be poor): "
             + ", ".join(rare[:5]) + (" ..." if len(rare) > 5 else ""))
    with ExitStack() as stack:
        for lock in job.locks():
            stack.enter_context(lock)
        store = stack.enter_context(open_session_store(job.session_path))
        session = open_session(job, data, store, seed)
        data = with_human_labels(data, session)
        encoder, x = timed("encoding", encode_texts, job, data.texts,
                           (lambda d, t: progress("encoding", d, t)) if progress else None)
        plan = llm_rows(job, data, seed)
        text_p = timed("text_annotator", text_annotator, x, data.seed_rows, data.y[data.seed_rows], seed,
                       job.config.al.self_training)
        signals, value = timed("annotate", read_seed_rows_first, job, data, text_p, plan, store, progress, seed, warn)
        signals, loop = timed("active_learning", active_learning, job, data, x, text_p, store, signals, plan, seed,
                              progress)
        proba, source, negatives, classifier = timed("labelling", label_rows, job, data, x, text_p, signals, seed,
                                                     max(1, job.threads))
        source[list(session.human_labels())] = "human"  # a person's set, as the single-label job says
        return _write(job, data, signals, (proba, source, negatives), classifier, encoder,
                      seconds | {"plan": plan.report, "loop": loop, "value": value}, session)


def _write(job: LabelJob, data: Input, signals: Signals, labelled: tuple, classifier: Any, encoder: Any,
           seconds: dict[str, Any], session: Any) -> LabelResult:
    """The four outputs and the classifier, all or none."""
    from ..label.report import export_classifier

    proba, source, negatives = labelled
    rows = table(job, data, proba, source, negatives)
    record_labels(session, rows, proba, source, data.labels)
    columns = [*data.columns, *(c for c in OUTPUT_COLUMNS if c not in data.columns)]
    report = {"multi_label": True, "labels": list(data.labels), "rows": len(rows), "seed_rows": len(data.seed_rows),
              "human_rows": len(session.human_labels()),
              "llm_rows": int(len(signals.rows)), "models": signals.names, "llm_seconds": signals.seconds,
              "shots": signals.shots,
              "needs_review": sum(r["needs_review"] == "true" for r in rows), "llm_budget": seconds.pop("plan"),
              "active_learning": seconds.pop("loop"), "llm_value": seconds.pop("value"),
              "seconds": seconds,
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "gold": quality(data, proba, source, signals)}
    text = summary(report)
    paths = job.outputs()
    with all_or_nothing():
        export_classifier(classifier, paths["classifier"], data.labels, encoder)
        atomic_write_text(paths["report"], json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(paths["summary"], text)
        write_table_atomic(job.output, rows, columns, formula_guard=job.formula_guard)
    session.set_state("done")
    return LabelResult(job.output, job.session_path, paths["classifier"], paths["report"], paths["summary"], text,
                       [], session.session_id, classifier, proba)
