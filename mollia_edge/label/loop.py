"""The active-learning stage (Algorithm 1): the loop's size under the budgets, the classifier it
trains (chosen once per session), and its rounds, each queried row labelled by the label model
over the LLMs and recorded as it ends (a resumed job goes on after the last one)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..al.annotators import LabelModelAnnotator
from ..al.loop import ActiveLearningTask, LabelledSet, add_recorded_labels, run_active_learning
from ..al.stopping import StoppingRule, parse_llm_budget, stop_set
from ..errors import DataError
from ..label_model import can_fit_molam
from ..randomness import derived_seed
from ..text_annotator import refitted_proba
from .context import JobContext, negatives, signals
from .llm_stages import Encoded, LabelModelFit, SeedScores
from .prepare import al_run_id


@dataclass(frozen=True)
class ClassifierSetup:
    """The job's classifier: its mode, its inputs (top-layers: hidden states of every text) and
    options, and how the mode was chosen (decided once per session, kept for resumed runs)."""

    mode: str
    inputs: Any
    options: dict[str, Any]
    choice: dict[str, Any]


@dataclass(frozen=True)
class LoopResult:
    """What the loop labelled. ``labelled`` holds the rows it starts from, then each round's."""

    labelled: LabelledSet
    abstained: np.ndarray
    """(m,) queried rows the label model abstained on: for review, not trained on."""
    run_id: str
    rounds: tuple[int, int]
    """(rounds, batch) the loop ran."""
    stopping: StoppingRule | None
    text_proba: np.ndarray | None
    """(n, K) the text annotator as the loop saw it (refitted per round with ``molam.refresh_text_annotator``)."""
    classifier: ClassifierSetup


@dataclass(frozen=True)
class _Start:
    """The rows the loop starts from (``init``, labels in ``train_label``), the pool it queries."""

    init: np.ndarray
    train_label: np.ndarray
    pool: np.ndarray


def active_learning(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit) -> LoopResult:
    """The loop: its size, the classifier, then the rounds (none with 0 rounds)."""
    start = _loop_start(context, seeds, fit)
    r, b = _loop_size(context, start.pool, start.init)
    labelled = LabelledSet(start.init, start.train_label[start.init], np.ones(len(start.init), np.float32),
                           np.zeros((len(start.init), context.k), bool))
    run_id = al_run_id(context.session)
    setup = choose_classifier(context, encoded, final_training_size(context, seeds, len(start.init) + r * b))
    if r == 0:
        return LoopResult(labelled, np.empty(0, np.int64), run_id, (r, b), None, seeds.text_proba, setup)
    text_proba = seeds.text_proba.copy() if _refreshing(context, seeds) else seeds.text_proba
    stopping = _stopping_rule(context, start.pool)
    ran = _run_rounds(context, encoded, seeds, fit, start, setup, (r, b), run_id, stopping, text_proba)
    abstained = add_recorded_labels(context.store, run_id, labelled)
    _refresh_recorded_rows(context, encoded, seeds, text_proba, run_id)
    return LoopResult(labelled, abstained, run_id, (ran, b), stopping, text_proba, setup)


def _run_rounds(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit, start: _Start,
                setup: ClassifierSetup, size: tuple[int, int], run_id: str, stopping: StoppingRule | None,
                text_proba: np.ndarray | None) -> int:
    """:func:`~mollia_edge.al.loop.run_active_learning` over the label model; the rounds it ran."""
    (r, b), job, k, progress = size, context.job, context.k, context.progress
    config = dataclasses.replace(job.config.al, rounds=r, query_size=b, seed_size=len(start.init))
    task = ActiveLearningTask(inputs=setup.inputs, pool=start.pool, n_classes=k, gold=start.train_label)

    def loop_signals(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """With ``molam.refresh_text_annotator``: the text annotator refitted on the labels of the
        rounds recorded so far."""
        if text_proba is not None and text_proba is not seeds.text_proba:
            earlier = [(i, y) for i, _, y, _, _ in context.store.al_labels(run_id) if y >= 0]
            _refresh_text_proba(context, encoded, seeds, text_proba, np.asarray(rows, np.int64), earlier)
        return signals(context, text_proba, rows)

    annotator = LabelModelAnnotator(loop_signals, fit.model, fit.abstain_below, context.n, k,
                                    name=f"llm-{fit.model.kind}",
                                    negatives=lambda rows: negatives(context, text_proba, fit.model, rows))
    if progress:
        progress("rounds", len(context.store.al_rounds(run_id)), r + 1)
    results = run_active_learning(
        task, annotator, job.strategy, config=config, seed=context.prep.seed, seed_rows=start.init, mode=setup.mode,
        init_layers=setup.options.get("init_layers"), threads=job.threads, store=context.store, run_id=run_id,
        progress=(lambda m: progress("rounds", m.round + 1, r + 1)) if progress else None, stopping=stopping,
    )
    if not (results and results[-1].stopped):
        return r
    context.say(f"active learning stopped after round {results[-1].round} of at most {r}: {results[-1].stopped}")
    if progress:
        progress("rounds", r + 1, r + 1)
    return results[-1].round


def _loop_start(context: JobContext, seeds: SeedScores, fit: LabelModelFit) -> _Start:
    seed_rows = context.seed_rows
    train_label = context.seed_label.copy()
    init = seed_rows
    if not can_fit_molam(context.seed_label[seed_rows]) and len(seeds.sample):
        train_label[seeds.sample] = fit.sample_proba.argmax(axis=1)  # no seeds to speak of: the seedless model
        init = np.sort(np.concatenate([seed_rows, seeds.sample]))
    if len(init) < 2:
        raise DataError(f"{context.job.input}: fewer than 2 rows can start the classifier; add seed labels or "
                        "raise the LLM sample")
    pool = np.union1d(init, seeds.sample) if context.job.annotate_ahead else np.arange(context.n)
    return _Start(init, train_label, pool)


def _refreshing(context: JobContext, seeds: SeedScores) -> bool:
    return (seeds.text_proba is not None and context.config.molam.refresh_text_annotator
            and seeds.text_strength > 0)


def _refresh_text_proba(context: JobContext, encoded: Encoded, seeds: SeedScores, text_proba: np.ndarray,
                        targets: np.ndarray, earlier: list[tuple[int, int]]) -> None:
    """``targets`` get the text annotator refitted on the seed rows and ``earlier`` (row, label)."""
    seed_rows = context.seed_rows
    rows = np.concatenate([seed_rows, np.array([i for i, _ in earlier], np.int64)])
    y = np.concatenate([context.seed_label[seed_rows], np.array([lab for _, lab in earlier], np.int64)])
    text_proba[targets] = refitted_proba(encoded.x, rows, y, context.k, seeds.text_strength, targets,
                                         context.config.al.self_training)


def _refresh_recorded_rows(context: JobContext, encoded: Encoded, seeds: SeedScores, text_proba: np.ndarray | None,
                           run_id: str) -> None:
    """The loop's rows as the loop saw them when queried (round g's rows: the labels of the
    rounds before g), also for rounds a resumed job read from the store."""
    if text_proba is None or text_proba is seeds.text_proba:
        return
    recorded = context.store.al_labels(run_id)
    for g in sorted({r for _, r, _, _, _ in recorded}):
        earlier = [(i, y) for i, r, y, _, _ in recorded if r < g and y >= 0]
        targets = np.array([i for i, r, _, _, _ in recorded if r == g], np.int64)
        _refresh_text_proba(context, encoded, seeds, text_proba, targets, earlier)


def _loop_size(context: JobContext, pool: np.ndarray, init: np.ndarray) -> tuple[int, int]:
    """(rounds, batch) the loop can run: what the settings ask, as far as the LLM budgets and
    the unlabelled rows allow (each cut said)."""
    job, asked = context.job, context.prep.settings
    if job.annotate_ahead:  # annotated already: the loop costs no LLM words
        rounds, batch = asked.rounds, asked.batch
    else:
        rounds, batch = context.budget.rounds(asked.rounds, asked.batch, np.setdiff1d(pool, init),
                                              keep_batch=job.rounds == "auto")
    if (rounds, batch) != (asked.rounds, asked.batch):
        context.say(f"the LLM budget (llm.budget_words = {job.config.llm.budget_words}) pays for {rounds} round(s) of "
                    f"{batch} instead of {asked.rounds} of {asked.batch}")
    texts, _ = parse_llm_budget(job.llm_budget)
    if texts is not None and not job.annotate_ahead and rounds * batch > texts:
        context.say(f"--llm-budget {texts} texts pays for {texts // batch} round(s) of {batch} instead of {rounds}")
        rounds = texts // batch
    free = len(pool) - len(init)
    b = min(batch, free)
    r = min(rounds, free // b) if b else 0
    if (r, b) != (rounds, batch) and rounds > 0:
        context.say(f"only {free} unlabelled row(s): active learning runs {r} round(s) of {b} instead of {rounds} of {batch}")
    return r, b


def _stopping_rule(context: JobContext, pool: np.ndarray) -> StoppingRule | None:
    """The loop's stopping rule: ``--rounds auto`` (stabilising predictions) and/or an
    ``--llm-budget`` in minutes; None without either."""
    _, minutes = parse_llm_budget(context.job.llm_budget)
    auto = context.job.rounds == "auto"
    if not auto and minutes is None:
        return None
    al = context.config.al
    return StoppingRule(rows=stop_set(pool, derived_seed(context.prep.seed, 23)), n_classes=context.k,
                        threshold=al.stop_kappa, window=al.stop_window, stable=auto, minutes=minutes)


def final_training_size(context: JobContext, seeds: SeedScores, labelled_rows: int) -> int:
    """Rows the final classifier trains on (:func:`~mollia_edge.label.training.training_rows`): every
    row of the input when pseudo-labelled rows fill the rest (``al.pseudo_weight`` > 0), else the
    labelled rows and the sample's."""
    return context.n if context.config.al.pseudo_weight > 0 else labelled_rows + len(seeds.sample)


def choose_classifier(context: JobContext, encoded: Encoded, final_rows: int) -> ClassifierSetup:
    """The job's classifier; the mode is decided once per session (``auto``: by the estimated
    seconds of a top-layers round) and kept for resumed runs."""
    from ..al.classifier_choice import choose_classifier as choose, top_layers_inputs

    job = context.job
    choice = context.session.stage("classifier")
    if choice is None:
        choice = choose(job.classifier or job.config.al.classifier, encoded.encoder, context.prep.texts, final_rows,
                        job.config.al, job.threads)
        context.session.put_stage("classifier", choice, 0.0)  # an estimate: no time spent
    if choice["mode"] == "head":
        return ClassifierSetup("head", encoded.x, {}, choice)
    inputs, init_layers = top_layers_inputs(encoded.encoder, context.prep.texts, job.config.al.top_layers)
    return ClassifierSetup("top-layers", inputs, {"init_layers": init_layers}, choice)
