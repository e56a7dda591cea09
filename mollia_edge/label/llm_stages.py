"""The stages before the loop: the texts encoded, the seed rows scored (the text's own
annotator, each LLM's demonstrations, the LLM sample drawn), the label model fitted, and the
check of whether its labels teach the final classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..agreement import annotator_report
from ..al.annotators import abstaining_labels, confidence_floor
from ..files import make_private_folder
from ..label_model import LabelModel, can_fit_molam, fit_label_model
from ..llm.demonstrations import RETRIEVED, demo_words, retrieved_words
from ..llm_value import ValueCheck
from ..randomness import derived_seed
from ..teaching import TeachingCheck, check_teaching
from ..text_annotator import text_annotator_fit
from .context import JobContext, signals
from .job import LabelJob


@dataclass(frozen=True)
class Encoded:
    """The sentence embeddings of every text, and the encoder that made them."""

    encoder: Any
    x: np.ndarray
    """(n, D) sentence embeddings."""
    long: dict[str, Any]
    """Rows longer than the encoder reads at once, and how they were read."""


@dataclass(frozen=True)
class SeedScores:
    """What the seed rows decided before the label model: the text's own annotator, each LLM's
    demonstrations, and the random sample of other rows the LLMs annotate up front."""

    text_proba: np.ndarray | None
    """(n, K) the text's own annotator (out-of-fold on the seed rows), or None."""
    text_strength: float
    """The text annotator's C (chosen on the seed rows); kept for its refits in the loop."""
    shots: dict[str, Any]
    sample: np.ndarray
    values: dict[str, Any]
    """Per LLM, what it adds on the seed rows and whether it was kept (:mod:`~mollia_edge.llm_value`);
    empty when nothing was checked."""
    """(s,) the seeded random sample of unlabelled rows (all the budget pays for when annotating ahead)."""


@dataclass(frozen=True)
class LabelModelFit:
    """The label model fitted on the seed rows and the sample, and what it says of the sample."""

    model: LabelModel
    sample_proba: np.ndarray
    """(len(sample), K) the label model's probabilities of the sample rows (in the order of ``sample``)."""
    abstain_below: float
    """The loop's annotator abstains below this confidence (:func:`~mollia_edge.al.annotators.confidence_floor`)."""
    llm_report: dict[str, Any] | None
    """Each LLM's agreement with the seed labels (:func:`~mollia_edge.agreement.annotator_report`)."""


def encode_texts(job: LabelJob, texts: Sequence[str],
                 progress: Callable[[int, int], None] | None = None) -> tuple[Any, np.ndarray]:
    """The encoder and the sentence embeddings (n, 384) of ``texts``, cached beside the session store."""
    from ..al.encoder import EmbeddingCache, Encoder, encode_cached, encoder_folder

    cache_dir = job.session_path.with_name(job.session_path.name + ".embeddings")
    make_private_folder(cache_dir)
    cache = EmbeddingCache(cache_dir)
    cache.remove_partial_shards()  # the job holds the session's lock
    encoder = Encoder(max_length=job.config.al.max_length, intra_op_threads=max(1, job.threads),
                      long_texts=job.config.al.long_texts, folder=encoder_folder(job.config.al.encoder))
    return encoder, encode_cached(encoder, texts, cache, progress=progress)


def encode(context: JobContext) -> Encoded:
    """Sentence embeddings of every text (cached beside the session store)."""
    progress, n = context.progress, context.n
    if progress:
        progress("encoding", 0, n)
    encoder, x = encode_texts(context.job, context.prep.texts,
                              (lambda d, t: progress("encoding", d, t)) if progress else None)
    long = int(encoder.too_long(context.prep.texts).sum())
    if progress:
        progress("encoding", n, n)
    return Encoded(encoder, x, {"rows": long, "read": context.config.al.long_texts, "max_tokens": encoder.max_length})


def score_seeds(context: JobContext, encoded: Encoded) -> SeedScores:
    """The text's own annotator; each LLM's demonstrations (chosen on the seed rows) and the
    seed rows' signals; the LLM sample (drawn after the seed rows' share of the budget)."""
    seed_rows, y = context.seed_rows, context.seed_label[context.seed_rows]
    config = context.config
    shots, words = config.llm.shots, demo_words(config.llm, context.k)
    retrieved = config.llm.max_shots if shots == "auto" and config.llm.retrieval == "auto" else 0
    extra = retrieved_words(context.prep.texts, seed_rows, context.k, retrieved, words)
    if not context.budget.retrieval_fits(extra, np.setdiff1d(np.arange(context.n), seed_rows)):
        retrieved, extra = 0, 0  # their words would more than double each row's: not tried
    candidates, choice_rows = context.budget.shot_choice(
        range(config.llm.max_shots + 1) if shots == "auto" else [int(shots)], seed_rows, extra)
    fits = can_fit_molam(y)
    text_proba, strength = None, 0.0
    if fits and config.molam.text_annotator:
        text_proba, strength = text_annotator_fit(encoded.x, seed_rows, y, context.k, derived_seed(context.prep.seed, 11),
                                                  self_training=config.al.self_training)
    sample = draw_sample(context)
    chosen: dict[str, Any] = {}
    values: dict[str, Any] = {}
    if fits:
        ahead = sample if context.job.annotate_ahead else None
        selection = value_check(context, text_proba)
        retrieved = retrieved if context.budget.affords(len(sample), extra) else 0
        choices = context.panel.choose_shots(candidates, encoded.x, seed_rows, y, words, choice_rows,
                                             config.llm.max_shots, ahead, selection, retrieved)
        if any(c.chosen == RETRIEVED for name, c in choices.items() if name in context.panel.names):
            context.budget.charge_retrieved(len(sample), extra)
        chosen = {name: {"chosen": c.chosen, "seed_accuracy": {str(k): a for k, a in c.accuracy.items()}}
                  for name, c in choices.items()}
        values = {v.name: v.as_dict() for v in selection.values_} if selection else {}
        say_released(context, values)
    return SeedScores(text_proba, strength, chosen, sample, values)


def value_check(context: JobContext, text_proba: np.ndarray | None) -> ValueCheck | None:
    """The check that releases an LLM adding nothing on the seed rows (``llm.prune = "auto"``),
    or None: no check (``off``, or no text annotator to measure against)."""
    if context.config.llm.prune == "off" or text_proba is None:
        return None
    seed_rows = context.seed_rows
    return ValueCheck(text_proba[seed_rows], context.seed_label[seed_rows], context.k, derived_seed(context.prep.seed, 19))


def say_released(context: JobContext, values: dict[str, Any]) -> None:
    """One line when LLMs were released (and what the job does without them)."""
    released = [name for name, v in values.items() if v["decision"] == "released"]
    if not released:
        return
    if len(released) == len(values):
        context.say("no LLM adds to the text annotator on the seed rows (llm.prune = \"auto\"): "
                    "the job goes on without LLM calls, on the text annotator alone")
    else:
        context.say(f"released {', '.join(released)}: adds nothing to the text annotator "
                    "on the seed rows (llm.prune = \"auto\"; see the report's llm_value)")


def draw_sample(context: JobContext) -> np.ndarray:
    """The random sample of unlabelled rows the LLMs annotate up front (all the budget pays for
    when annotating ahead)."""
    job = context.job
    rng = np.random.default_rng(derived_seed(context.prep.seed, 7))
    others = rng.permutation(np.setdiff1d(np.arange(context.n), context.seed_rows))
    sample = np.sort(context.budget.sample(others, len(others) if job.annotate_ahead else job.llm_sample))
    if job.annotate_ahead and len(sample) < len(others):
        context.say(f"annotating ahead: the LLM budget (llm.budget_words = {job.config.llm.budget_words}) pays for "
                    f"{len(sample)} of the {len(others)} unlabelled rows; the loop queries among those")
    return sample


def fit_mixture(context: JobContext, seeds: SeedScores) -> LabelModelFit:
    """The LLMs annotate the sample; the label model is fitted on the seed rows and that sample."""
    seed_rows, config = context.seed_rows, context.config
    scores, c = signals(context, seeds.text_proba, np.concatenate([seed_rows, seeds.sample]).astype(np.int64))
    seed_pos = np.arange(len(seed_rows))
    text_position = len(context.panel.models) if seeds.text_proba is not None else None
    model = fit_label_model(scores, c, seed_pos, context.seed_label[seed_rows], context.k, config, context.prep.seed,
                            text_position)
    sample_proba = (model.predict_proba(scores[len(seed_rows):], c[len(seed_rows):]) if len(seeds.sample)
                    else np.zeros((0, context.k)))
    # the loop's annotator abstains below molam.abstain_below, on at most a set share of the sample
    abstain_below = confidence_floor(sample_proba, config.molam.abstain_below, config.molam.max_abstain_share)
    report = None
    if len(seed_rows) and context.panel.models:
        llms = slice(0, len(context.panel.models))
        report = annotator_report(scores[seed_pos, llms], c[seed_pos, llms], context.seed_label[seed_rows],
                                  context.panel.names, context.prep.labels).as_dict()
    return LabelModelFit(model, sample_proba, abstain_below, report)


def check_teacher(context: JobContext, encoded: Encoded, seeds: SeedScores, fit: LabelModelFit) -> TeachingCheck | None:
    """Whether the label model's labels of the sample teach the final classifier more than the
    seed rows alone (:mod:`~mollia_edge.teaching`, cross-validated on the seed rows); None: the
    label model teaches (``al.teacher``, or nothing to check on)."""
    seed_rows, teacher = context.seed_rows, context.config.al.teacher
    if teacher == "label_model" or not can_fit_molam(context.seed_label[seed_rows]) or not len(seeds.sample):
        return None
    if teacher == "seeds":
        return TeachingCheck(False, reason="al.teacher = \"seeds\"")
    scores, c = signals(context, seeds.text_proba, seeds.sample)
    text = len(context.panel.models) if seeds.text_proba is not None else None

    def labels_for(own: np.ndarray | None) -> np.ndarray:
        if own is not None:
            scores[:, text], c[:, text] = own, own
        return abstaining_labels(fit.model.predict_proba(scores, c), fit.abstain_below)

    return check_teaching(encoded.x, seed_rows, context.seed_label[seed_rows], seeds.sample, labels_for, context.k,
                          text is not None, seed=derived_seed(context.prep.seed, 17),
                          self_training=context.config.al.self_training)
