"""The exported classifier on its own: texts in, labels out, no LLMs (``mollia-edge predict``).

``mollia-edge label`` writes, beside its OUTPUT (:func:`export_classifier`):

* ``OUTPUT.classifier.onnx``: one ONNX graph from token ids to class probabilities - the int8
  MiniLM encoder (cut below the trained layers in ``top-layers`` mode), the trained layers,
  masked mean pooling (then unit length in ``head`` mode, as the head was trained) and the
  head. Inputs ``input_ids`` and ``attention_mask``, int64 (batch, seq); outputs
  ``probabilities`` (batch, K) and ``features`` (batch, H, the head's hidden layer). Its
  metadata: the label names (JSON list, in output order), the tokenizer's ``max_length``, the
  mode, the encoder's and the tokenizer's sha256 and ``producer: mollia-edge label``.
* ``OUTPUT.classifier.tokenizer.json``: the word-piece tokenizer (:func:`tokenizer_beside`).

:func:`run_predict` tokenizes a table's texts as :class:`~mollia_edge.al.encoder.Encoder` does
(truncation to ``max_length``, rows sorted by length into batches padded to their longest, each
distinct text once), runs the graph on the CPU and writes every input row and column plus
``label``, ``confidence`` and ``p_<label>`` per label. On the texts a job labelled, in the
same batches, it gives the job's classifier probabilities up to float rounding.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .al.encoder import (
    MAX_POSITIONS, bert_config, encoder_prefix_model, load_tokenizer, session_options, token_batches,
)
from .config import MAX_THREADS
from .data import check_writable_format, load_table, texts_from_rows, write_table_atomic
from .errors import ConfigError, ModelError, quoted
from .files import atomic_write, atomic_write_from, check_job_paths, regular_file_problem
from .llm.catalog import file_sha256

Progress = Callable[[int, int], None]
"""Called with (distinct texts done, distinct texts in all) after each batch."""

PRODUCER = "mollia-edge label"
TOKENIZER_SUFFIX = ".tokenizer.json"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "probabilities"
DEFAULT_BATCH = 64
"""Texts per onnxruntime call: :meth:`Encoder.encode`'s batch, so a job's texts meet the same padding."""
_WHAT_TO_GIVE = "give the OUTPUT.classifier.onnx that `mollia-edge label` wrote"


def tokenizer_beside(model: Path) -> Path:
    """The tokenizer file that goes with an exported model: ``X.onnx`` -> ``X.tokenizer.json``."""
    name = Path(model).name  # "" for "." or "/" (a folder, refused when loaded)
    stem = name[: -len(".onnx")] if name.lower().endswith(".onnx") else name
    return Path(model).parent / (stem + TOKENIZER_SUFFIX)


# ---------------------------------------------------------------------------- export
def export_classifier(clf: Any, encoder: Any, path: Path, labels: Sequence[str]) -> Path:
    """Write ``path`` (encoder + ``clf`` as one ONNX graph, see the module docstring) and the
    encoder's tokenizer beside it (:func:`tokenizer_beside`), each atomically with mode 0600;
    returns the tokenizer's path.

    ``clf``: a fitted :class:`~mollia_edge.al.classifier.OnnxClassifier` whose inputs were
    ``encoder``'s unit-length sentence embeddings (``head`` mode) or its hidden states below the
    trained layers (``top-layers``: the trained layers must be the encoder's top ones).
    """
    if clf.mode == "head":
        below_top = 0
    else:
        layers = clf.spec_.encoder.layers
        total = bert_config(encoder.files_dir).num_hidden_layers
        if tuple(layers) != tuple(range(total - len(layers), total)):
            raise ConfigError(f"the trained encoder layers {list(layers)} are not the top ones of {total}: cannot export them")
        below_top = len(layers)
    prefix = encoder_prefix_model(below_top, encoder.model_path, single_segment=True)
    tokenizer = encoder.tokenizer_path.read_bytes()
    tokenizer_path = tokenizer_beside(path)
    metadata = {
        "labels": json.dumps(list(labels)),
        "input": "input_ids, attention_mask: int64 (batch, seq) from the all-MiniLM-L6-v2 word-piece tokenizer "
                 f"{tokenizer_path.name} (truncated to max_length tokens, [CLS] and [SEP] included)",
        "max_length": str(encoder.max_length),
        "mode": clf.mode,
        "encoder_sha256": encoder.sha256,
        "tokenizer_sha256": hashlib.sha256(tokenizer).hexdigest(),
        "producer": PRODUCER,
    }
    if getattr(clf, "multi_label", False):  # sigmoid outputs: every label that applies
        metadata["multi_label"] = "true"
    atomic_write_from(path, lambda tmp: clf.export_inference(tmp, prefix, metadata=metadata))
    atomic_write(tokenizer_path, lambda out: out.write(tokenizer))
    return tokenizer_path


# ---------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class ExportedClassifier:
    """An exported classifier ready to run: its onnxruntime session, tokenizer and labels."""

    path: Path
    labels: tuple[str, ...]
    max_length: int
    mode: str
    session: ort.InferenceSession
    tokenizer: Tokenizer
    multi_label: bool = False
    """Each output is the probability that its label applies (a text gets every label at .5 or more)."""


def _metadata(path: Path, session: ort.InferenceSession) -> tuple[tuple[str, ...], int, dict[str, str]]:
    """The label names and max_length from a model's metadata, checked."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("producer") != PRODUCER or "labels" not in meta:
        raise ModelError(f"{path}: is not a mollia-edge classifier (no label names in its metadata); {_WHAT_TO_GIVE}")
    inputs = [i.name for i in session.get_inputs()]
    if sorted(inputs) != sorted(INPUTS) or OUTPUT not in {o.name for o in session.get_outputs()}:
        raise ModelError(
            f"{path}: takes {quoted(', '.join(inputs))} instead of token ids (an export of an older mollia-edge, "
            "for embeddings only); run `mollia-edge label` again to export a classifier that works on its own"
        )
    try:
        labels = json.loads(meta["labels"])
        max_length = int(meta["max_length"])
    except (KeyError, ValueError):
        raise ModelError(f"{path}: its metadata lacks valid label names or max_length; {_WHAT_TO_GIVE}") from None
    if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(label, str) for label in labels)):
        raise ModelError(f"{path}: its metadata has no list of two or more label names; {_WHAT_TO_GIVE}")
    width = session.get_outputs()[[o.name for o in session.get_outputs()].index(OUTPUT)].shape[-1]
    if isinstance(width, int) and width != len(labels):
        raise ModelError(f"{path}: gives {width} probabilities for {len(labels)} label names; {_WHAT_TO_GIVE}")
    if not 2 <= max_length <= MAX_POSITIONS:
        raise ModelError(f"{path}: max_length {max_length} in its metadata is outside 2..{MAX_POSITIONS}; {_WHAT_TO_GIVE}")
    return tuple(labels), max_length, meta


def load_classifier(path: Path, threads: int = 1) -> ExportedClassifier:
    """The classifier in ``path`` and the tokenizer beside it, on the CPU with ``threads``
    onnxruntime threads; one :class:`ModelError` line for a file that is not one."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise ModelError(f"{path}: {'file not found' if problem == 'not found' else problem}; {_WHAT_TO_GIVE}")
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelError(f"{path}: is not an ONNX model (onnxruntime cannot load it); {_WHAT_TO_GIVE}") from None
    labels, max_length, meta = _metadata(path, session)
    tokenizer_path = tokenizer_beside(path)
    problem = regular_file_problem(tokenizer_path)
    if problem is not None:
        raise ModelError(
            f"{tokenizer_path}: the tokenizer that goes with {path.name} is {problem}; "
            f"copy the {TOKENIZER_SUFFIX} file that `mollia-edge label` wrote beside the model"
        )
    if meta.get("tokenizer_sha256") not in (None, file_sha256(tokenizer_path)):
        raise ModelError(f"{tokenizer_path}: is not the tokenizer exported with {path.name}; copy the right one beside it")
    try:
        tokenizer = load_tokenizer(tokenizer_path, max_length)
    except ModelError:
        raise ModelError(f"{tokenizer_path}: is not a readable tokenizer file; copy the one exported with {path.name}") from None
    return ExportedClassifier(path, labels, max_length, meta.get("mode", ""), session, tokenizer,
                              meta.get("multi_label") == "true")


# ---------------------------------------------------------------------------- prediction
def predict_proba(
    classifier: ExportedClassifier, texts: Sequence[str], batch_size: int = DEFAULT_BATCH, progress: Progress | None = None,
) -> np.ndarray:
    """Class probabilities (n, K) float32 of ``texts``, in the order of ``classifier.labels``."""
    distinct = list(dict.fromkeys(texts))  # each text once, in first-seen order (as the job's cache)
    probabilities = np.zeros((len(distinct), len(classifier.labels)), dtype=np.float32)
    done = 0
    for rows, feed in token_batches(classifier.tokenizer.encode_batch(distinct), batch_size):
        probabilities[rows] = classifier.session.run([OUTPUT], {name: feed[name] for name in INPUTS})[0]
        done += len(rows)
        if progress:
            progress(done, len(distinct))
    position = {text: i for i, text in enumerate(distinct)}
    return probabilities[[position[text] for text in texts]] if texts else probabilities


@dataclass(frozen=True)
class PredictJob:
    """Label the texts of ``input`` with the exported classifier ``model`` into ``output``."""

    model: Path
    input: Path
    output: Path
    text_column: str = "text"
    batch_size: int = DEFAULT_BATCH
    threads: int = 1
    formula_guard: bool = True
    """CSV/TSV cells that start like a spreadsheet formula get a leading quote (``--keep-formulas``: False)."""


@dataclass(frozen=True)
class PredictResult:
    output: Path
    rows: int
    labels: dict[str, int]
    """Rows per predicted label, in the model's label order."""
    cut: int = 0
    """Rows longer than the model's ``max_length`` tokens: the classifier read their beginning."""


def _label_cells(classifier: ExportedClassifier, p: np.ndarray) -> dict[str, Any]:
    """``label`` and ``confidence`` of one row: the most probable label and its probability; multi-
    label: every label at .5 or more (``a|b``, ``none``) and the least sure of its K decisions."""
    if not classifier.multi_label:
        best = int(p.argmax())
        return {"label": classifier.labels[best], "confidence": round(float(p[best]), 6)}
    from .multilabel.labels import format_set

    return {"label": format_set(p >= 0.5, classifier.labels), "confidence": round(float(np.maximum(p, 1 - p).min()), 6)}


def run_predict(job: PredictJob, progress: Progress | None = None) -> PredictResult:
    """Write ``job.output``: every input row and column plus ``label``, ``confidence`` and one
    ``p_<label>`` column per label (a column of the input with one of those names is replaced).
    Paths and the model are checked before any text is read; nothing is written on an error."""
    if job.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {quoted(job.batch_size)}")
    if not 1 <= job.threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be in [1, {MAX_THREADS}], got {quoted(job.threads)}")
    check_job_paths({"input": job.input, "model": job.model, "tokenizer": tokenizer_beside(job.model)},
                    {"output": job.output})
    check_writable_format(job.output)
    classifier = load_classifier(job.model, job.threads)
    columns, rows = load_table(job.input)
    table = texts_from_rows(job.input, columns, rows, job.text_column)
    probabilities = predict_proba(classifier, table.texts, job.batch_size, progress)
    labels = classifier.labels
    new_columns = ["label", "confidence", *(f"p_{label}" for label in labels)]
    out_columns = list(columns) + [column for column in new_columns if column not in columns]
    out_rows = [{**row, **_label_cells(classifier, p), **{f"p_{label}": round(float(value), 6)
                                                             for label, value in zip(labels, p)}}
                for row, p in zip(rows, probabilities)]
    write_table_atomic(job.output, out_rows, out_columns, formula_guard=job.formula_guard)
    if classifier.multi_label:
        counts = Counter({label: int(count) for label, count in zip(labels, (probabilities >= 0.5).sum(axis=0))})
    else:
        counts = Counter(labels[y] for y in probabilities.argmax(axis=1))
    cut = sum(1 for e in classifier.tokenizer.encode_batch(list(table.texts)) if e.overflowing)
    return PredictResult(job.output, len(rows), {label: counts.get(label, 0) for label in labels}, cut)
