"""All settings in one typed place: the MoLLIA paper's numbers where it gives them, and the departures the README lists (under "Annotating texts").

Load a TOML file with sections ``[llm]``, ``[molam]`` and ``[al]`` (plus a top-level
``seed``) through :func:`load_config`; any key left out keeps the paper's value.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, quoted, quoted_list

ConsistencyMode = Literal["exact", "sampled"]
NegativeRule = Literal["every", "mean"]
EarlyStopping = Literal["loss", "accuracy"]


SEED_MAX = 2**32 - 1
"""Seeds are unsigned 32-bit integers (numpy, XGBoost and llama.cpp samplers take no more)."""
MAX_THREADS = 512
"""llama.cpp's GGML_MAX_N_THREADS: more threads crash the process."""
MIN_TOKENS = 16
"""``al.max_length`` at least: [CLS], [SEP] and 14 word pieces (2 read nothing of a text)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _within(value: Any, interval: str) -> bool:
    """Whether the finite number ``value`` lies in ``interval``, written like "(0, 1]"."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return above and below


def check_bounds(section: str, settings: object, bounds: Mapping[str, str]) -> None:
    """Every ``bounds`` setting of ``settings`` (None: unset, allowed) in its interval, else a
    :class:`ConfigError` naming ``section.key``."""
    for name, interval in bounds.items():
        value = getattr(settings, name)
        if value is not None:
            _check(_within(value, interval), f"{section}.{name} must be in {interval}, got {quoted(value)}")


@dataclass(frozen=True)
class LLMConfig:
    """How each LLM annotator is prompted, decoded and run."""

    samples: int = 10
    """T: answers sampled per text for the sampled consistency score."""
    temperature: float = 0.7
    top_p: float = 0.9
    consistency: ConsistencyMode = "exact"
    answer_spellings: bool = False
    """Exact consistency also counts each label's other common spellings (capitalised, upper case,
    with a full stop: :func:`~mollia_edge.llm.scoring.answer_variants`), as sampled consistency
    does after normalising; off by default: it multiplies the label branches by up to 6 (twice
    the LLM time on short reviews) and added nothing measurable on the starter models."""
    """``exact``: the T→∞ expectation from full-vocabulary distributions; ``sampled``: T answers."""
    max_new_tokens: int = 12
    """Sampled answers longer than this many tokens count as invalid."""
    shots: int | str = "auto"
    """Demonstrations per label from the seed rows, in the shared prompt prefix. ``"auto"``: the
    label job chooses per model among 0..``max_shots`` on the seed rows (elsewhere: 0)."""
    max_shots: int = 2
    """The most demonstrations per label ``shots = "auto"`` tries."""
    retrieval: str = "auto"
    """``auto``: with ``shots = "auto"`` the label job also tries ``max_shots`` demonstrations
    per label retrieved for each text (the seed rows nearest to it), per model, where the word
    budget pays for their longer prompts, and keeps them only where they beat the best shared
    demonstrations on the seed rows by more than a standard error; ``off``: shared ones only."""
    prune: str = "auto"
    """``auto``: the label job releases an LLM whose scores add nothing to the text annotator
    on the seed rows (cross-fitted; :mod:`mollia_edge.llm_value`),
    before it annotates anything else; ``off``: every LLM annotates."""
    demo_words: int = 60
    """Demonstrations are cut to this many words (a long-text task then pays little for them)."""
    budget_words: int = 30000
    """Words of text each LLM reads in a label job (a text costs its words + 10 for the prompt
    around it + 4 per label, :mod:`mollia_edge.llm.budget`); the job plans the seed rows, the sample and the loop's queries within it, and
    the classifier labels the rest. 0: no limit. Words, not seconds, so the plan (and the
    labels) do not depend on the machine's speed: the starter models read about 110-230
    words a second on 2 CPU cores, so 30000 words are 3-6 minutes of LLM time there."""
    max_resident_models: int | None = None
    """At most this many LLMs loaded together in a label job; the others wait their turn (1: one
    at a time). None: as many as fit ``memory_budget_gb`` (:mod:`mollia_edge.llm.residency`)."""
    memory_budget_gb: float | None = None
    """Memory the label job's resident LLMs may take together. None: 80 % of the memory
    available when the job starts."""
    max_text_tokens: int = 1024
    """A text's tokens in one prompt: a longer text is read in chunks of at most this many
    (``long_texts``)."""
    long_texts: str = "chunk"
    """``chunk``: a longer text is split on sentence boundaries (:mod:`mollia_edge.chunks`),
    each chunk scored, and the text's signals combine them (``chunk_combine``); ``truncate``:
    it is cut to ``max_text_tokens``. Either way the report counts the rows."""
    chunk_combine: str = "mean"
    """How chunks' label log-probabilities make the text's: ``mean`` or ``max``."""
    max_chunks: int = 16
    """At most this many chunks per text; the rest is cut (and counted as cut)."""
    n_ctx: int = 8192
    n_batch: int = 512
    n_seq_max: int = 64
    n_threads: int | None = None
    """None: all cores of this machine."""
    n_gpu_layers: int = -1
    """Layers offloaded to the GPU (-1: all); ignored by a CPU build of llama.cpp."""
    flash_attn: bool = True
    """Pinned on: it changes log-probabilities, and llama.cpp's other attention path makes a
    sequence's logits depend on the other sequences in its batch for grouped-query-attention
    models (SmolLM2: up to 0.7 in a logit), which breaks batched scoring."""
    seed: int = 50

    BOUNDS = {
        "samples": "[1, 200]", "temperature": "(0, 100]", "top_p": "(0, 1]", "max_new_tokens": "[1, 512]",
        "shots": "[0, 100]", "max_shots": "[0, 10]", "demo_words": "[1, 10000]", "budget_words": "[0, 1000000000]", "max_resident_models": "[1, 1000]", "memory_budget_gb": "(0, 1000000]", "max_text_tokens": "[1, 131072]", "max_chunks": "[1, 1000]", "n_ctx": "[256, 131072]", "n_batch": "[32, 16384]",
        "n_seq_max": "[2, 256]", "n_threads": f"[1, {MAX_THREADS}]", "n_gpu_layers": "[-1, 100000]",
        "seed": f"[0, {SEED_MAX}]",
    }

    def __post_init__(self) -> None:
        _check(self.shots == "auto" or not isinstance(self.shots, str),
               f"llm.shots must be a number of demonstrations or \"auto\", got {quoted(self.shots)}")
        check_bounds("llm", self, {k: v for k, v in self.BOUNDS.items() if not (k == "shots" and self.shots == "auto")})
        _check(
            self.consistency in ("exact", "sampled"),
            f"llm.consistency must be 'exact' or 'sampled', got {quoted(self.consistency)}",
        )
        _check(self.n_seq_max <= self.n_batch, "llm.n_seq_max must not exceed llm.n_batch")
        _check(self.long_texts in ("chunk", "truncate"),
               f"llm.long_texts must be 'chunk' or 'truncate', got {quoted(self.long_texts)}")
        _check(self.chunk_combine in ("mean", "max"),
               f"llm.chunk_combine must be 'mean' or 'max', got {quoted(self.chunk_combine)}")
        _check(self.prune in ("auto", "off"), f"llm.prune must be 'auto' or 'off', got {quoted(self.prune)}")
        _check(self.retrieval in ("auto", "off"), f"llm.retrieval must be 'auto' or 'off', got {quoted(self.retrieval)}")


MODEL_SETTINGS = ("n_ctx", "n_batch", "n_threads", "n_gpu_layers")
"""The llama.cpp settings a model may have of its own (``[models."NAME"]`` in a configuration
file, or the model's catalog entry): a 9B model with a small context on a GPU beside a small one
on the CPU."""


def model_llm(llm: LLMConfig, settings: Mapping[str, Any], where: str) -> LLMConfig:
    """``llm`` with one model's own ``settings`` (keys of :data:`MODEL_SETTINGS`), checked."""
    _check(isinstance(settings, Mapping), f"{where} must be a table")
    bad = set(settings) - set(MODEL_SETTINGS)
    _check(not bad, f"unknown key(s) in {where}: {quoted_list(sorted(map(str, bad)), quote=False)}; "
                    f"a model may set {', '.join(MODEL_SETTINGS)}")
    for key, value in settings.items():
        _check(isinstance(value, int) and not isinstance(value, bool), f"{where}.{key} must be of type int, got {quoted(value)}")
    try:
        return dataclasses.replace(llm, **settings)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def fixed_shots(llm: LLMConfig) -> int:
    """``llm.shots`` where no seed rows choose it (``annotate``, ``bench quant``): "auto" is 0."""
    return 0 if llm.shots == "auto" else int(llm.shots)


MAX_SEQUENCES = 256
ANSWER_SPELLINGS = 6
"""At most this many spellings of a label in exact consistency (:func:`~mollia_edge.llm.scoring.answer_variants`)."""
"""llama.cpp's limit on parallel sequences in one context (LLAMA_MAX_SEQ)."""


def fit_sequences(llm: LLMConfig, n_labels: int, n_aliases: int = 0) -> LLMConfig:
    """``llm`` with ``n_seq_max`` raised so one text's K label branches (plus T samples in
    sampled mode, or the labels' aliases in exact mode) fit beside the prefix sequence; a
    :class:`ConfigError` saying which setting to change when llama.cpp's limits do not allow
    it. Check this before any model loads."""
    branches = n_labels + (llm.samples if llm.consistency == "sampled" else n_aliases)
    needed = branches + 1
    spellings = n_labels * ANSWER_SPELLINGS + n_aliases + 1  # exact: each label's spellings, where they fit
    if llm.consistency == "exact" and llm.answer_spellings and needed < spellings <= min(MAX_SEQUENCES, llm.n_batch):
        needed = spellings
    if needed <= llm.n_seq_max:
        return llm
    what = f"{n_labels} labels" + (f" and {llm.samples} samples" if llm.consistency == "sampled"
                                   else f" and {n_aliases} aliases" if n_aliases else "")
    _check(
        needed <= MAX_SEQUENCES,
        f"{what} need {needed} parallel sequences per text, more than llama.cpp's {MAX_SEQUENCES}; "
        "use fewer labels" + (" or lower llm.samples (or consistency exact)" if llm.consistency == "sampled" else ""),
    )
    _check(
        needed <= llm.n_batch,
        f"{what} need {needed} parallel sequences per text, more than llm.n_batch={llm.n_batch}; "
        f"raise llm.n_batch to {needed} or more",
    )
    return dataclasses.replace(llm, n_seq_max=needed)


@dataclass(frozen=True)
class MolamConfig:
    """The mixture-of-LLMs annotation model (paper Eqs. 4-6)."""

    delta: float = 0.001
    """A label is negative when the LLMs' probability for it is below delta."""
    sigma: float = 0.9
    """Pseudo-label threshold on MoLAM's confidence."""
    max_pseudo_rounds: int = 100
    negative_rule: NegativeRule = "every"
    """``every``: all LLMs below delta (paper Eq. 5); ``mean``: their mean <= delta (reference code)."""
    min_new_share: float = 0.002
    """Pseudo-labelling stops when a round adds fewer than this share of the unlabelled rows
    (0: the paper's "until no row is added"; the tail rounds each cost a full refit)."""
    cv_folds: int = 5
    """Folds of the cross-validation on the seed rows that selects MoLAM's settings."""
    calibrate: bool = True
    """Soften MoLAM's output probabilities by a temperature fitted on the seed rows' out-of-fold
    predictions (pseudo-labelling makes MoLAM overconfident: ECE 0.19 -> 0.15 on TREC)."""
    abstain_below: float = 0.9
    """As the AL loop's annotator, MoLAM gives no label where its confidence is below this (as
    sigma: it trains only on rows it would pseudo-label; 0: it always labels). The loop sets
    such rows aside and queries others in their place."""
    candidates: str = "all"
    """What MoLAM chooses among by CV on the seeds: ``all`` (its default, the plain ensembles,
    each LLM alone and the text annotator, :func:`~mollia_edge.molam.fit_annotation_model`) or
    ``paper`` (its default alone, as before they were added)."""
    combine: str = "stack"
    """How the candidates become the label model: ``stack`` mixes them with weights fitted on
    their out-of-fold predictions on the seeds; ``best`` takes one (the default unless another
    is better by a standard error). Dev data (the paper's recorded outputs; with one strong LLM
    among weak ones; TREC with the text annotator): stack .807 / .782 against .799 / .756."""
    text_annotator: bool = True
    """The text's own annotator (a logistic regression on the embeddings, fitted on the seeds)
    joins the LLMs in the label model's features (:mod:`mollia_edge.text_annotator`)."""
    refresh_text_annotator: bool = False
    """The rows each round of the loop queries get the text's own annotator refitted on the seed
    rows and the loop's labels of the rounds before (MoLAM's inputs updated during the loop, the
    paper's open question); the label model itself stays as fitted on the seeds."""
    max_abstain_share: float = 0.3
    """MoLAM abstains on at most this share of the unlabelled rows it was fitted on: with weak
    LLMs (confidence rarely reaching abstain_below) the threshold drops to that quantile."""

    BOUNDS = {
        "delta": "(0, 1)", "sigma": "(0, 1)", "max_pseudo_rounds": "[0, 10000]", "min_new_share": "[0, 1)",
        "cv_folds": "[2, 100]", "abstain_below": "[0, 1)", "max_abstain_share": "[0, 1)",
    }

    def __post_init__(self) -> None:
        check_bounds("molam", self, self.BOUNDS)
        _check(self.negative_rule in ("every", "mean"), "molam.negative_rule must be 'every' or 'mean'")
        _check(self.candidates in ("all", "paper"), f"molam.candidates must be 'all' or 'paper', got {quoted(self.candidates)}")
        _check(self.combine in ("stack", "best"), f"molam.combine must be 'stack' or 'best', got {quoted(self.combine)}")


CLASSIFIERS = ("auto", "head", "top-layers")
TEACHERS = ("auto", "label_model", "seeds")
LOSS_TERMS_BY_MODE = {"head": False, "top-layers": True}
"""What ``auto`` means for the paper's loss terms per classifier mode. Round-10 micro-F1 on the
recorded TREC outputs, mean of the six strategies (5 seeds each, README): head mode .696 with
them, .700 without (MoLAM alone, D); a held-out replay of another dataset: .599 with, .615
without. top-layers: .821 with, .805 without (Random)."""


@dataclass(frozen=True)
class ActiveLearningConfig:
    """The active-learning loop (Algorithm 1) and its robust loss (Eqs. 7-9)."""

    alpha: float = 0.5
    """Weight of rows where the previous AL model disagrees with MoLAM's label."""
    lambda_start: float = 0.4
    lambda_end: float = 1.0
    """The negative-learning weight rises linearly from lambda_start to lambda_end over the rounds."""
    seed_size: int = 50
    query_size: int = 50
    """B: rows queried per round."""
    top_up_queries: int = 4
    """Extra queries a round may make for rows the annotator abstained on (see molam.abstain_below)."""
    rounds: int = 10
    """Queries made; the model is trained rounds + 1 times (round r after r queries)."""
    long_texts: str = "chunk"
    """Texts longer than ``max_length`` tokens: ``chunk``: the embedding is the mean of the
    text's chunks' (whole sentences, :mod:`mollia_edge.chunks`); ``truncate``: cut. The
    ``top-layers`` classifier always reads the first ``max_length`` tokens."""
    max_rounds: int = 30
    """``--rounds auto``: at most this many rounds."""
    stop_kappa: float = 0.99
    """``--rounds auto`` stops when Cohen's kappa between consecutive rounds' labels for the
    stop set reaches this for ``stop_window`` rounds in a row (Bloodgood & Vijay-Shanker 2009)."""
    stop_window: int = 3
    learning_rate: float = 2e-4
    """AdamW learning rate of the trained encoder layers. The paper's 5e-5 fine-tunes all of
    DistilBERT; for the top layers of MiniLM alone 2e-4 measured best (TREC replay, oracle labels)."""
    top_layers: int = 2
    """``top-layers`` mode: encoder layers trained (with the head); the layers below run once, cached."""
    length_buckets: int = 4
    """``top-layers`` mode: runs of this many shuffled batches are sorted by length (less padding; 0: off)."""
    head_learning_rate: float = 1e-3
    """AdamW learning rate of the classification head (a freshly drawn MLP)."""
    hidden: int = 256
    """Width of the head's hidden layer."""
    epochs: int = 40
    patience: int = 5
    """``top-layers`` mode: epochs without a better validation score before training stops (the
    best epoch is kept)."""
    head_patience: int = 10
    """The same in ``head`` mode, whose epochs take milliseconds and improve slowly: with 5 the
    head sometimes stopped before it had learnt (TREC replay, MoLLIA: micro-F1 .627 +- .101 with
    5, .695 +- .029 with 10)."""
    early_stopping: EarlyStopping = "accuracy"
    """The validation score: ``accuracy`` (ties to the lower cross-entropy) or ``loss``; the
    validation rows' labels are the annotator's, so accuracy is the steadier choice."""
    batch_size: int = 50
    validation_fraction: float = 0.15
    """Share of the labelled rows held out each round for early stopping (their labels as the
    annotator gave them: no gold beyond the seed set)."""
    negative_learning: bool | str = "auto"
    """Use the annotator's negative labels (Eq. 7); off for ablation variants C and D. ``auto``:
    on in ``top-layers`` mode, off in ``head`` mode, where they measured worse (see
    :meth:`for_mode`)."""
    discrepancy_weighting: bool | str = "auto"
    """Weight alpha for rows where the AL model disagreed with the annotator (Eq. 8); off for B
    and D. ``auto``: as ``negative_learning``."""
    max_length: int = 128
    encoder: str = ""
    """The sentence encoder: "" (the shipped all-MiniLM-L6-v2, int8), or a folder exported by
    ``scripts/export_encoder.py``: its name under ``models/encoders/`` or a path. The folder
    holds ``model.onnx`` and ``tokenizer.json`` (``config.json`` and ``top_layers.npz`` too for
    the ``top-layers`` classifier)."""
    classifier: str = "auto"
    """The classifier trained in the loop: ``head`` (an MLP on the frozen sentence embeddings),
    ``top-layers`` (MiniLM's top ``top_layers`` layers fine-tuned with the head) or ``auto``:
    ``top-layers`` when its largest training, the final classifier's on every row, is estimated
    (from the texts' lengths, not timed) to fit ``round_seconds``."""
    round_seconds: float = 30.0
    """``classifier = "auto"``: the most seconds the job's largest training may take (estimated)."""
    pseudo_weight: float = 0.3
    """The final classifier also trains on every row no one labelled, with the label of a
    logistic regression on the embeddings fitted on the labelled rows, at this weight (0: off):
    with few labelled rows the MLP head alone is weaker than that regression (IMDB, 50 seeds:
    .529 against .605; with these rows .606)."""
    self_training_rounds: int = 5
    """Rounds of self-training of every regression on the embeddings (the text's own annotator,
    the pseudo-labels above, the seed-only teacher): each round adds the
    ``self_training_per_label`` unlabelled rows the regression is surest of, per label, with that
    label (:func:`~mollia_edge.text_annotator.self_trained_proba`, whose docstring says how
    this was chosen; 0: off)."""
    self_training_per_label: int = 10
    """Rows added per label in each round of ``self_training_rounds``."""
    final_heads: int = 3
    """In ``head`` mode the final classifier is the mean of this many heads trained with other
    seeds (:func:`~mollia_edge.al.classifier.average_heads`): one head's seed alone moved a
    label job's classifier rows by up to 2 points."""
    calibrate: bool = True
    """The label job's final classifier is temperature-scaled on its cross-fitted predictions of
    the seed rows (5 folds: the classifier is trained 5 more times), so that its ``confidence``
    means what it says; false: its raw probabilities."""
    teacher: str = "auto"
    """Whose labels the final classifier learns beside the seed rows: ``label_model`` (its labels
    of the rows the LLMs saw), ``seeds`` (none: the seed rows and their regression's
    pseudo-labels) or ``auto``: the one with the lower cross-validated log-loss on the seed rows
    (:mod:`mollia_edge.teaching`; with LLMs that are no help their labels teach noise)."""

    BOUNDS = {
        "round_seconds": "(0, 100000]", "pseudo_weight": "[0, 1]", "self_training_rounds": "[0, 1000]",
        "self_training_per_label": "[1, 100000]", "final_heads": "[1, 10]", "alpha": "(0, 1]", "lambda_start": "[0, 100]", "lambda_end": "[0, 100]", "seed_size": "[1, 1000000]",
        "query_size": "[1, 1000000]", "top_up_queries": "[0, 1000]", "rounds": "[1, 10000]", "max_rounds": "[1, 10000]",
        "stop_kappa": "(0, 1]", "stop_window": "[1, 100]",
        "learning_rate": "(0, 1]", "top_layers": "[1, 6]", "length_buckets": "[0, 10000]",
        "head_learning_rate": "(0, 1]", "hidden": "[1, 8192]", "epochs": "[1, 10000]", "patience": "[1, 10000]",
        "head_patience": "[1, 10000]", "batch_size": "[1, 65536]", "validation_fraction": "(0, 1)",
        "max_length": f"[{MIN_TOKENS}, 512]",
    }
    """Sizes stay where memory holds them (MiniLM has 6 layers and 512 positions)."""

    @property
    def self_training(self) -> tuple[int, int]:
        """(rounds, rows per label per round) of the regressions' self-training."""
        return self.self_training_rounds, self.self_training_per_label

    def for_mode(self, mode: str) -> ActiveLearningConfig:
        """This configuration with ``auto`` loss terms resolved for classifier ``mode``."""
        resolved = {name: LOSS_TERMS_BY_MODE[mode] for name in ("negative_learning", "discrepancy_weighting")
                    if getattr(self, name) == "auto"}
        return dataclasses.replace(self, **resolved) if resolved else self

    def __post_init__(self) -> None:
        _check(self.long_texts in ("chunk", "truncate"),
               f"al.long_texts must be 'chunk' or 'truncate', got {quoted(self.long_texts)}")
        check_bounds("al", self, self.BOUNDS)
        for name in ("negative_learning", "discrepancy_weighting"):
            value = getattr(self, name)
            _check(value in ("auto", True, False) and (value == "auto" or isinstance(value, bool)),
                   f"al.{name} must be true, false or \"auto\", got {quoted(value)}")
        _check(self.teacher in TEACHERS,
               f"al.teacher must be one of {', '.join(TEACHERS)}, got {quoted(self.teacher)}")
        _check(self.classifier in CLASSIFIERS,
               f"al.classifier must be one of {', '.join(CLASSIFIERS)}, got {quoted(self.classifier)}")
        _check(
            self.early_stopping in ("loss", "accuracy"),
            f"al.early_stopping must be 'loss' or 'accuracy', got {quoted(self.early_stopping)}",
        )


@dataclass(frozen=True)
class GuaranteeConfig:
    """``[guarantee]``: accept labels with a stated error rate (:mod:`mollia_edge.guarantee`)."""

    target_error: float | None = None
    """Accept a row's label only where, with ``confidence_level``, the error rate among accepted
    rows is at most this (e.g. 0.05); the rest need review. None: no guarantee (every label given,
    ``needs_review`` by the fixed rules)."""
    confidence_level: float = 0.9
    """How sure the guarantee is: the probability that the accepted rows' error rate is at most
    ``target_error`` (over the draw of the calibration rows)."""

    def __post_init__(self) -> None:
        _check(self.target_error is None or 0 < self.target_error < 1,
               f"guarantee.target_error must be in (0, 1), e.g. 0.05, got {quoted(self.target_error)}")
        _check(0 < self.confidence_level < 1,
               f"guarantee.confidence_level must be in (0, 1), e.g. 0.9, got {quoted(self.confidence_level)}")


@dataclass(frozen=True)
class QuantBenchConfig:
    """``mollia-edge bench quant``: the quantization levels tried and how each is measured."""

    quants: tuple[str, ...] = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
    n: int = 500
    """Texts annotated by every model file (gold-labelled rows of the input)."""
    seed_size: int = 50
    """Of those, rows whose gold label MoLAM is fitted on; the rest are the evaluation rows."""
    timing_texts: int = 32
    """Evaluation rows annotated again without the cache, for seconds per text."""
    timing_runs: int = 2
    """Timed runs per file, interleaved over a model's files; the fastest counts (other
    processes share the CPU)."""
    max_combinations: int = 64
    """Mixtures of levels fitted exhaustively for the frontier up to this many; beyond it, a
    greedy path that upgrades one model at a time."""

    def __post_init__(self) -> None:
        _check(bool(self.quants), "--quants must name at least one level")
        _check(self.seed_size >= 10, f"--seed-size must be >= 10 (MoLAM's cross-validation), got {self.seed_size}")
        _check(self.n > self.seed_size, f"--n ({self.n}) must exceed --seed-size ({self.seed_size})")
        for name, interval in {"--n": "[11, 1000000]", "--seed-size": "[10, 100000]", "--timing-texts": "[1, 100000]",
                               "--timing-runs": "[1, 100]", "max_combinations": "[1, 100000]"}.items():
            value = getattr(self, name.lstrip("-").replace("-", "_"))
            _check(_within(value, interval), f"{name} must be in {interval}, got {quoted(value)}")


@dataclass(frozen=True)
class Config:
    """Every setting of mollia-edge; ``Config()`` keeps the paper's numbers where it gives them and departs where the README's table says."""

    seed: int = 50
    llm: LLMConfig = field(default_factory=LLMConfig)
    molam: MolamConfig = field(default_factory=MolamConfig)
    al: ActiveLearningConfig = field(default_factory=ActiveLearningConfig)
    guarantee: GuaranteeConfig = field(default_factory=GuaranteeConfig)
    models: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Per model (catalog name or file stem), llama.cpp settings of its own (:data:`MODEL_SETTINGS`)."""

    def replace(self, **sections: Any) -> Config:
        """A copy with some sections (or ``seed``) replaced, e.g. ``cfg.replace(llm=...)``."""
        return dataclasses.replace(self, **sections)

    def llm_for(self, name: str, catalog_settings: Mapping[str, int] | None = None) -> LLMConfig:
        """The ``[llm]`` settings for model ``name``: its catalog entry's own, then this file's."""
        llm = model_llm(self.llm, catalog_settings or {}, f"the catalog entry of {name}")
        return model_llm(llm, self.models.get(name, {}), f'[models."{quoted(name, quote=False)}"]')


_SECTIONS = {"llm": LLMConfig, "molam": MolamConfig, "al": ActiveLearningConfig, "guarantee": GuaranteeConfig}


def _checked_value(where: str, value: Any, default: Any, annotation: str = "") -> Any:
    """``value`` if it has the type of the setting's default (an int also serves as a float);
    an optional setting (default None) takes the type its ``annotation`` names, or None."""
    if default is None and "float" in annotation:  # optional numbers (llm.memory_budget_gb)
        _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)),
               f"{where} must be of type float, got {quoted(value)}")
        return value if value is None else float(value)
    if default == "auto":  # "auto" or another choice (al.classifier), a number (llm.shots) or a switch
        ok = isinstance(value, (str, int))  # (al.negative_learning): each checked by its section
    elif default is None:  # optional integer settings (n_threads)
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    _check(ok, f"{where} must be of type {type(default).__name__ if default is not None else 'int'}, got {quoted(value)}")
    if isinstance(default, float) and isinstance(value, int):
        _check(abs(value) <= 2**53, f"{where} is out of range, got {quoted(value)}")
    return float(value) if isinstance(default, float) else value


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown keys by name."""
    unknown = set(data) - set(_SECTIONS) - {"seed", "models"}
    _check(not unknown, f"unknown configuration section(s): {quoted_list(sorted(map(str, unknown)), quote=False)}; "
                        f"the sections are {', '.join(sorted(_SECTIONS))}, models and the key seed")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = data.get(name, {})
        _check(isinstance(values, dict), f"[{name}] must be a table")
        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        bad = set(values) - set(defaults)
        _check(not bad, f"unknown key(s) in [{name}]: {quoted_list(sorted(bad), quote=False)}")
        sections[name] = cls(**{key: _checked_value(f"{name}.{key}", value, defaults[key], types[key])
                                for key, value in values.items()})
    seed = _checked_value("seed", data.get("seed", 50), 50)
    _check(_within(seed, f"[0, {SEED_MAX}]"), f"seed must be in [0, {SEED_MAX}], got {quoted(seed)}")
    models = data.get("models", {})
    _check(isinstance(models, dict), "[models] must be a table of tables, one per model: [models.\"NAME\"]")
    llm = sections.get("llm", LLMConfig())
    for name, settings in models.items():
        model_llm(llm, settings, f'[models."{quoted(name, quote=False)}"]')
    return Config(seed=seed, models=models, **sections)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The tables of a TOML file; a :class:`ConfigError` naming ``what`` if it cannot be read."""
    if path.exists() and not path.is_file():  # a folder, or a pipe that would block the read
        raise ConfigError(f"{what} {path} is not a regular file; give a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is read as CSV files' is
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def load_config(path: str | Path | None = None) -> Config:
    """Read a TOML configuration file; ``None`` gives the defaults (:class:`Config`)."""
    if path is None:
        return Config()
    return config_from_dict(read_toml(Path(path), "configuration file"))
