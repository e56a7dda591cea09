"""The AL model: a classifier trained by ONNX training-step graphs on stock onnxruntime.

:class:`OnnxClassifier` follows scikit-learn conventions (settings in the constructor,
``fit`` does the work, fitted attributes end in ``_``). Every mini-batch runs one ONNX graph
(forward, robust loss of paper Eqs. 7-9, backward, AdamW; see :mod:`.graphs`); parameters
and AdamW moments stay onnxruntime ``OrtValue`` objects from one step to the next.

Inputs ``x``: in ``head`` mode a float array (n, D); in ``top-layers`` mode any object with
``.values`` (n, T, E) float32 and ``.mask`` (n, T) int64 (cached hidden states below the
trained layers). ``K`` = n_classes, ``H`` = hidden width.

Top-layers cost grows with the token axis, so every training batch and inference chunk is cut
to the longest real sequence in it (the mask tells; padding changes nothing but rounding:
padded keys get zero attention and padded tokens zero pooling weight). Inference runs the rows
in length order; training can group rows of similar length (``length_buckets``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter

from ..calibration import row_log_losses
from ..errors import ConfigError, DataError
from .autodiff import OPSET, adam_state_names, updated_name
from .encoder import default_providers, session_options
from .graphs import (
    EncoderSpec,
    ModelSpec,
    encoder_layer_prefix,
    head_output_model,
    inference_model,
    parameter_shapes,
    training_step_model,
)

MODES = ("head", "top-layers")
EARLY_STOPPING = ("loss", "accuracy")
_CHUNK_ROWS = {"head": 8192, "top-layers": 256}
_LAYER_INDEX = re.compile(r"^encoder\.layer\.(\d+)\.")


# ---------------------------------------------------------------------------- sessions
@functools.lru_cache(maxsize=16)
def _session(spec: ModelSpec, kind: str, threads: int) -> ort.InferenceSession:
    """A cached onnxruntime session for the ``train``, ``inference`` or ``head_output`` graph of ``spec``."""
    builders = {"train": training_step_model, "inference": functools.partial(inference_model, dropout_input=False),
                "head_output": head_output_model}
    model = builders[kind](spec)
    # CUDA when onnxruntime-gpu finds a GPU (the encoder's rule), else CPU
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=default_providers())


def _ort(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


def _scalar(value: float) -> ort.OrtValue:
    """A float32 scalar of shape () (``ortvalue_from_numpy`` would give shape (1,))."""
    out = ort.OrtValue.ortvalue_from_shape_and_type([], np.float32)
    out.update_inplace(np.asarray(value, dtype=np.float32))
    return out


# ---------------------------------------------------------------------------- validation
def _rows(x: Any, mode: str) -> int:
    if mode == "head":
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise DataError(f"head mode needs x as a numpy array (rows, features), got {type(x).__name__} "
                            f"{getattr(x, 'shape', '')}")
        if not np.all(np.isfinite(x)):
            raise DataError("x contains NaN or infinite values: clean the features first")
        return x.shape[0]
    values, mask = getattr(x, "values", None), getattr(x, "mask", None)
    if not isinstance(values, np.ndarray) or not isinstance(mask, np.ndarray):
        raise DataError("top-layers mode needs x with .values (rows, tokens, width) and .mask (rows, tokens) arrays")
    if values.ndim != 3 or mask.shape != values.shape[:2]:
        raise DataError(f"x.values must be (rows, tokens, width) and x.mask (rows, tokens); got {values.shape} and {mask.shape}")
    return values.shape[0]


def _real_width(mask: np.ndarray) -> int:
    """Token columns up to the last one any row uses (at least 1)."""
    used = np.flatnonzero(mask.any(axis=0))
    return int(used[-1]) + 1 if len(used) else 1


def _token_counts(x: Any) -> np.ndarray:
    return np.asarray(x.mask).sum(axis=1)


def bucketed_batches(lengths: np.ndarray, batch_size: int, window: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches (row indices) for one epoch, grouped by length.

    Shuffle the rows, sort each run of ``window`` batches (``window * batch_size`` rows) by
    ``lengths`` (stable, so ties stay shuffled), cut it into batches, then shuffle the order of
    all batches. Batch sizes are the same as plain shuffling gives (only the last may be short).
    """
    n = len(lengths)
    order = rng.permutation(n)
    span = window * batch_size
    for start in range(0, n, span):
        part = order[start:start + span]
        order[start:start + span] = part[np.argsort(lengths[part], kind="stable")]
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    return float(row_log_losses(p, y, 1e-12).mean())


def _labels(name: str, y: Any, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise DataError(f"{name} must be integer class indices of shape ({n},), got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{name} must lie in 0..{n_classes - 1}, found {y.min()}..{y.max()}: check n_classes")
    return y.astype(np.int64)


def _row_weights(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DataError(f"weights must be {n} finite non-negative numbers (one per row), got shape {w.shape}")
    return w


def _label_matrix(name: str, y: Any, n: int, n_classes: int) -> np.ndarray:
    """Multi-label targets (n, K) in [0, 1] (1: the label applies) as float32."""
    y = np.asarray(y, dtype=np.float32)
    if y.shape != (n, n_classes) or not np.all((y >= 0) & (y <= 1)):
        raise DataError(f"{name} must be ({n}, {n_classes}) targets in [0, 1] (1: the label applies), got {y.shape}")
    return y


def _binary_cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _negative_mask(negatives: Any, n: int, n_classes: int) -> np.ndarray:
    if negatives is None:
        return np.zeros((n, n_classes), dtype=np.float32)
    neg = np.asarray(negatives, dtype=np.float32)
    if neg.shape != (n, n_classes) or not np.all((neg == 0) | (neg == 1)):
        raise DataError(f"negatives must be a 0/1 (or boolean) mask of shape ({n}, {n_classes}), got {neg.shape}")
    return neg


def _encoder_spec(init_layers: Mapping[str, np.ndarray], n_heads: int, eps: float) -> EncoderSpec:
    layers = sorted({int(m.group(1)) for name in init_layers if (m := _LAYER_INDEX.match(name))})
    if not layers:
        raise ConfigError("init_layers has no 'encoder.layer.<i>.' weights: pass the top layers' safetensors tensors")
    first = encoder_layer_prefix(layers[0])
    try:
        ffn, width = np.shape(init_layers[first + "intermediate.dense.weight"])
    except KeyError:
        raise ConfigError(f"init_layers lacks {first}intermediate.dense.weight") from None
    spec = EncoderSpec(tuple(layers), width=width, n_heads=n_heads, ffn=ffn, layer_norm_eps=eps)
    expected = parameter_shapes(ModelSpec(width, 2, encoder=spec))
    for name, shape in expected.items():
        if name.startswith("encoder.") and np.shape(init_layers.get(name)) != shape:
            raise ConfigError(f"init_layers[{name!r}] must have shape {shape}, got "
                              f"{np.shape(init_layers[name]) if name in init_layers else 'nothing'}")
    return spec


class OnnxClassifier:
    """MLP head (optionally under trainable BERT top layers) trained with the robust AL loss.

    ``learning_rate`` drives the head (default 1e-3), ``encoder_learning_rate`` the encoder
    layers (paper: 5e-5). ``length_buckets`` (top-layers mode; 0 = off) sorts each run of that
    many shuffled batches by token count before cutting it into batches (see
    :func:`bucketed_batches`), so batches carry less padding. ``early_stopping`` picks the
    validation score that selects the epoch kept (see :meth:`fit`). ``init_layers``
    (top-layers mode) maps safetensors names such as
    ``encoder.layer.5.attention.self.query.weight`` to fp32 arrays; the layers trained are
    those it contains. Each ``fit`` is a cold start: a fresh head drawn from ``seed``.
    """

    def __init__(
        self,
        mode: str = "head",
        *,
        n_classes: int,
        hidden: int = 256,
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        encoder_learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        epochs: int = 40,
        batch_size: int = 50,
        patience: int = 10,
        seed: int = 0,
        init_layers: Mapping[str, np.ndarray] | None = None,
        n_heads: int = 12,
        layer_norm_eps: float = 1e-12,
        threads: int = 1,
        length_buckets: int = 0,
        early_stopping: str = "loss",
        multi_label: bool = False,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if n_classes < 2:
            raise ConfigError(f"n_classes must be at least 2, got {n_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        for name, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size),
                            ("patience", patience), ("threads", threads), ("n_heads", n_heads)):
            if int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if early_stopping not in EARLY_STOPPING:
            raise ConfigError(f"early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}")
        if int(length_buckets) != length_buckets or length_buckets < 0:
            raise ConfigError(f"length_buckets must be a non-negative integer (0: off), got {length_buckets!r}")
        if learning_rate <= 0 or encoder_learning_rate <= 0 or weight_decay < 0:
            raise ConfigError("learning rates must be positive and weight_decay non-negative")
        if mode == "top-layers" and not init_layers:
            raise ConfigError("top-layers mode needs init_layers: the pretrained weights of the layers to train")
        self.mode = mode
        self.n_classes = n_classes
        self.hidden_width = hidden  # the setting `hidden`; `hidden(x)` is the features method
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.encoder_learning_rate = encoder_learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.seed = seed
        self.init_layers = init_layers
        self.n_heads = n_heads
        self.layer_norm_eps = layer_norm_eps
        self.threads = threads
        self.length_buckets = length_buckets
        self.early_stopping = early_stopping
        self.multi_label = multi_label
        """K sigmoid outputs trained with the binary cross-entropy: ``fit`` takes targets (n, K)."""

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        x: Any,
        y_pos: Any,
        weights: Any = None,
        negatives: Any = None,
        lambda_nl: float = 0.0,
        x_val: Any = None,
        y_val: Any = None,
    ) -> OnnxClassifier:
        """Train from scratch on ``x`` with labels ``y_pos`` (n,), row ``weights`` W_d (n,),
        ``negatives`` (n, K) 0/1 and negative-learning weight ``lambda_nl``. Multi-label: ``y_pos``
        holds targets (n, K) in [0, 1] and ``negatives`` the label mask (n, K) 0/1 of the targets
        that count (None: all); ``lambda_nl`` is unused.

        With ``x_val``/``y_val`` training stops after ``patience`` epochs without a better
        validation score and keeps the best epoch's parameters; otherwise it runs all
        ``epochs``. The score (``early_stopping``): ``loss``, a lower cross-entropy;
        ``accuracy``, a higher accuracy, ties going to the lower cross-entropy.
        """
        n = _rows(x, self.mode)
        if n == 0:
            raise DataError("fit needs at least one labelled row")
        if self.multi_label:
            y = _label_matrix("y_pos", y_pos, n, self.n_classes)
            neg = np.ones_like(y) if negatives is None else _negative_mask(negatives, n, self.n_classes)
        else:
            y = _labels("y_pos", y_pos, n, self.n_classes)
            neg = _negative_mask(negatives, n, self.n_classes)
        w = _row_weights(weights, n)
        if not np.isfinite(lambda_nl) or lambda_nl < 0:
            raise DataError(f"lambda_nl must be a non-negative number, got {lambda_nl}")
        if (x_val is None) != (y_val is None):
            raise DataError("pass both x_val and y_val for early stopping, or neither")
        if x_val is not None:
            y_val = (_label_matrix if self.multi_label else _labels)("y_val", y_val, _rows(x_val, self.mode), self.n_classes)

        self.spec_ = self._model_spec(x)
        self.n_classes_ = self.n_classes
        if x_val is not None:
            self._check_width(x_val)
        rng = np.random.default_rng(self.seed)
        state = self._initial_state(rng)
        constants = self._constants(lambda_nl)
        session = _session(self.spec_, "train", self.threads)
        param_names = list(parameter_shapes(self.spec_))
        best_score, best_params, stale, step = (-np.inf, np.inf), None, 0, 0
        lengths = _token_counts(x) if self.mode == "top-layers" and self.length_buckets > 0 else None
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            batches = self._epoch_batches(lengths, n, rng)
            state, losses, step = self._train_epoch(session, state, constants, x, (y, w, neg), batches, rng, step)
            record = {"epoch": epoch, "train_loss": float(np.mean([v.numpy() for v in losses]))}
            if x_val is not None:
                p_val = self._infer(x_val, {p: state[p] for p in param_names})
                if self.multi_label:  # accuracy: of every (row, label) decision
                    record["val_loss"] = _binary_cross_entropy(p_val, y_val)
                    record["val_accuracy"] = float(np.mean((p_val >= 0.5) == (y_val >= 0.5)))
                else:
                    record["val_loss"] = _cross_entropy(p_val, y_val)
                    record["val_accuracy"] = float(np.mean(p_val.argmax(axis=1) == y_val))
                # "loss": lower cross-entropy; "accuracy": higher accuracy, ties to lower loss
                score = (0.0 if self.early_stopping == "loss" else record["val_accuracy"], -record["val_loss"])
                if score > best_score:
                    best_score, best_params, stale = score, {p: state[p] for p in param_names}, 0
                    self.best_epoch_ = epoch
                else:
                    stale += 1
            self.history_.append(record)
            if stale >= self.patience:
                break
        if best_params is None:
            best_params, self.best_epoch_ = {p: state[p] for p in param_names}, len(self.history_) - 1
        self.params_ = {name: value.numpy().copy() for name, value in best_params.items()}
        self._param_feeds = {name: _ort(value) for name, value in self.params_.items()}
        return self

    def _initial_state(self, rng: np.random.Generator) -> dict[str, Any]:
        """The parameters (initialised from ``rng``) and their zeroed Adam moments, as ORT values."""
        state = {name: _ort(value) for name, value in self._initial_parameters(rng).items()}
        for name in list(state):
            for moment in adam_state_names(name):
                state[moment] = _ort(np.zeros(parameter_shapes(self.spec_)[name], dtype=np.float32))
        return state

    def _constants(self, lambda_nl: float) -> dict[str, Any]:
        constants = {"weight_decay": _scalar(self.weight_decay), "lr.head": _scalar(self.learning_rate)}
        if not self.multi_label:
            constants["lambda_nl"] = _scalar(lambda_nl)
        if self.mode == "top-layers":
            constants["lr.encoder"] = _scalar(self.encoder_learning_rate)
        return constants

    def _epoch_batches(self, lengths: np.ndarray | None, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches of row indices: by length bucket (``lengths`` given) or shuffled."""
        if lengths is not None:
            return bucketed_batches(lengths, self.batch_size, self.length_buckets, rng)
        order = rng.permutation(n)
        return [order[start:start + self.batch_size] for start in range(0, n, self.batch_size)]

    def _train_epoch(self, session: Any, state: dict[str, Any], constants: dict[str, Any], x: Any,
                     targets: tuple[np.ndarray, np.ndarray, np.ndarray], batches: list[np.ndarray],
                     rng: np.random.Generator, step: int) -> tuple[dict[str, Any], list, int]:
        """One pass of training steps over ``batches``; ``targets``: labels (n,), row weights (n,)
        and negative mask (n, K). Returns the updated state, each step's loss and the last step."""
        output_names = [o.name for o in session.get_outputs()]
        y, w, neg = targets
        losses = []
        for rows in batches:
            step += 1
            feeds = {
                **state, **constants, **self._batch_feeds(x, rows),
                **({"y_multi": _ort(y[rows]), "label_mask": _ort(neg[rows])} if self.multi_label else
                   {"y_pos": _ort(y[rows]), "negative_mask": _ort(neg[rows])}),
                "row_weights": _ort(w[rows]),
                "dropout_keep": _ort(self._keep_mask(rng, len(rows))),
                "step": _scalar(step),
            }
            outputs = dict(zip(output_names, session.run_with_ort_values(output_names, feeds)))
            losses.append(outputs.pop("loss"))
            state = {name: outputs[updated_name(name)] for name in state}
        return state, losses, step

    def _model_spec(self, x: Any) -> ModelSpec:
        if self.mode == "head":
            return ModelSpec(x.shape[1], self.n_classes, self.hidden_width, multi_label=self.multi_label)
        encoder = _encoder_spec(self.init_layers, self.n_heads, self.layer_norm_eps)
        if x.values.shape[2] != encoder.width:
            raise DataError(f"x.values has width {x.values.shape[2]} but init_layers are {encoder.width} wide")
        return ModelSpec(encoder.width, self.n_classes, self.hidden_width, encoder, self.multi_label)

    def _initial_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Encoder weights copied from ``init_layers``; head as PyTorch's Linear: U(+-1/sqrt(fan_in))."""
        params, shapes = {}, parameter_shapes(self.spec_)
        for name, shape in shapes.items():
            if name.startswith("encoder."):
                params[name] = np.array(self.init_layers[name], dtype=np.float32)
            else:
                fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][1]
                bound = 1.0 / np.sqrt(fan_in)
                params[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        return params

    def _keep_mask(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """Dropout keep-mask (rows, H) scaled by 1/(1-p)."""
        keep = rng.random((rows, self.hidden_width)) >= self.dropout
        return (keep / (1.0 - self.dropout)).astype(np.float32)

    def _batch_feeds(self, x: Any, rows: np.ndarray | slice) -> dict[str, ort.OrtValue]:
        """The graph's batch inputs for ``rows``; hidden states cut to the batch's longest row."""
        if self.mode == "head":
            return {"x": _ort(x[rows].astype(np.float32, copy=False))}
        mask = x.mask[rows]
        width = _real_width(mask)
        return {
            "hidden_states": _ort(x.values[rows, :width].astype(np.float32, copy=False)),
            "attention_mask": _ort(mask[:, :width].astype(np.int64, copy=False)),
        }

    # ------------------------------------------------------------------ inference
    def _fitted_feeds(self) -> dict[str, ort.OrtValue]:
        if not hasattr(self, "params_"):
            raise ConfigError("this OnnxClassifier is not fitted yet: call fit first")
        return self._param_feeds

    def _check_width(self, x: Any) -> int:
        n = _rows(x, self.mode)
        width = x.shape[1] if self.mode == "head" else x.values.shape[2]
        if width != self.spec_.n_features:
            raise DataError(f"x has width {width} but the model was fitted on {self.spec_.n_features}")
        return n

    def _chunks(self, x: Any, n: int) -> Iterator[np.ndarray | slice]:
        """Row groups for inference: consecutive slices (head), or length-sorted index arrays
        (top-layers, so each chunk is cut to little padding)."""
        size = _CHUNK_ROWS[self.mode]
        if self.mode == "head":
            for start in range(0, n, size):
                yield slice(start, min(start + size, n))
            return
        order = np.argsort(_token_counts(x), kind="stable")
        for start in range(0, n, size):
            yield order[start:start + size]

    def _infer(self, x: Any, params: Mapping[str, ort.OrtValue], output: str = "probabilities") -> np.ndarray:
        """``probabilities`` (n, K) or ``features`` (n, H), dropout off."""
        n = self._check_width(x)
        session = _session(self.spec_, "inference", self.threads)
        result = np.empty((n, self.n_classes_ if output == "probabilities" else self.spec_.hidden), np.float32)
        for rows in self._chunks(x, n):
            feeds = {**params, **self._batch_feeds(x, rows)}
            result[rows] = session.run_with_ort_values([output], feeds)[0].numpy()
        return result

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities (n, K), dropout off."""
        return self._infer(x, self._fitted_feeds())

    def predict(self, x: Any) -> np.ndarray:
        """Most probable class (n,); multi-label: whether each label applies (n, K) bool."""
        p = self.predict_proba(x)
        return p >= 0.5 if self.multi_label else p.argmax(axis=1)

    def hidden(self, x: Any) -> np.ndarray:
        """Penultimate features (n, H): the head's GELU output, dropout off."""
        return self._infer(x, self._fitted_feeds(), "features")

    def posterior_samples(self, x: Any, n_samples: int, seed: int) -> np.ndarray:
        """MC-dropout probabilities (S, n, K): one random keep-mask per sample, seeded."""
        return self.samples_from_features(self.hidden(x), n_samples, seed)

    def samples_from_features(self, features: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
        """MC-dropout probabilities (S, n, K) from the head's features (n, H) (:meth:`hidden`).

        Dropout acts only between the head's two layers, so a sample is the output layer on
        ``features`` times a fresh keep-mask: one pass through the model serves every sample.
        Sample ``s`` is one network theta_s: its keep-mask (1, H) is shared by every row, as
        BEMPS / CoreMSE need (the link between x and x' is through the same theta_s).
        """
        if n_samples < 1:
            raise ConfigError(f"n_samples must be at least 1, got {n_samples}")
        params = {name: self._fitted_feeds()[name] for name in ("head.out_proj.weight", "head.out_proj.bias")}
        session = _session(self.spec_, "head_output", self.threads)
        rng = np.random.default_rng(seed)
        features = _ort(np.asarray(features, np.float32))
        return np.stack([
            session.run_with_ort_values(
                ["probabilities"], {**params, "features": features, "dropout_keep": _ort(np.repeat(self._keep_mask(rng, 1), features.shape()[0], axis=0))},
            )[0].numpy()
            for _ in range(n_samples)
        ])

    def noisy_proba(self, x: Any, noise_scale: float, n_draws: int, seed: int) -> np.ndarray:
        """Probabilities (D, n, K) under weight noise: every parameter tensor W gets Gaussian
        noise rescaled to norm ``noise_scale * ||W||`` (NoiseStability), dropout off."""
        if n_draws < 1 or noise_scale < 0:
            raise ConfigError(f"need n_draws >= 1 and noise_scale >= 0, got {n_draws} and {noise_scale}")
        self._fitted_feeds()
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_draws):
            noisy = {}
            for name, w in self.params_.items():
                noise = rng.standard_normal(w.shape)
                scale = noise_scale * np.linalg.norm(w) / max(np.linalg.norm(noise), 1e-12)
                noisy[name] = _ort((w + scale * noise).astype(np.float32))
            draws.append(self._infer(x, noisy))
        return np.stack(draws)

    # ------------------------------------------------------------------ export
    def export_inference(
        self,
        path: str | PathLike,
        prefix_model: onnx.ModelProto | None = None,
        *,
        normalize: bool = True,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write one self-contained inference ONNX file (outputs ``probabilities``, ``features``).

        With ``prefix_model`` (token ids -> token vectors (B, T, E); it takes an
        ``attention_mask`` input, e.g. input_ids/attention_mask/token_type_ids) the file is one
        graph taking the prefix's inputs. Top-layers mode: prefix (the encoder below the trained
        layers) + trained layers + masked mean pooling + head. Head mode: prefix (the whole
        encoder) + masked mean pooling + head, the pooled vector scaled to unit length first
        when ``normalize`` (the head was fitted on :meth:`Encoder.encode`'s default output).
        ``metadata``: key/value strings stored in the file's ``metadata_props``.
        """
        self._fitted_feeds()
        pooling = ("mean-unit" if normalize else "mean") if prefix_model is not None and self.mode == "head" else None
        model = inference_model(self.spec_, weights=self.params_, dropout_input=False, pooling=pooling)
        if prefix_model is not None:
            model = attach_prefix(prefix_model, model)
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(path))


def fitted_state(clf: OnnxClassifier) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What a fitted classifier needs to predict and export again: its settings (JSON-able) and
    its parameters (name -> float32 array); :func:`from_fitted_state` rebuilds it."""
    clf._fitted_feeds()
    encoder = clf.spec_.encoder
    meta = {
        "mode": clf.mode, "n_classes": clf.n_classes_, "hidden": clf.hidden_width, "threads": clf.threads,
        "n_heads": clf.n_heads, "layer_norm_eps": clf.layer_norm_eps, "best_epoch": int(getattr(clf, "best_epoch_", 0)),
        "spec": {"n_features": clf.spec_.n_features, "n_classes": clf.spec_.n_classes, "hidden": clf.spec_.hidden,
                 "encoder": dataclasses.asdict(encoder) if encoder else None},
    }
    if clf.multi_label:  # absent for single-label classifiers: their stored states stay as they were
        meta["multi_label"] = True
    return meta, dict(clf.params_)


def from_fitted_state(meta: Mapping[str, Any], params: Mapping[str, np.ndarray]) -> OnnxClassifier:
    """The classifier :func:`fitted_state` described: the same predictions and the same export."""
    encoder = meta["spec"]["encoder"]
    multi_label = bool(meta.get("multi_label", False))
    spec = ModelSpec(meta["spec"]["n_features"], meta["spec"]["n_classes"], meta["spec"]["hidden"],
                     EncoderSpec(**{**encoder, "layers": tuple(encoder["layers"])}) if encoder else None, multi_label)
    layers = {name: value for name, value in params.items() if name.startswith("encoder.")}
    clf = OnnxClassifier(meta["mode"], n_classes=meta["n_classes"], hidden=meta["hidden"], threads=meta["threads"],
                         n_heads=meta["n_heads"], layer_norm_eps=meta["layer_norm_eps"], init_layers=layers or None,
                         multi_label=multi_label)
    clf.spec_, clf.n_classes_, clf.best_epoch_ = spec, meta["n_classes"], meta["best_epoch"]
    clf.params_ = {name: np.asarray(value, np.float32) for name, value in params.items()}
    clf._param_feeds = {name: _ort(value) for name, value in clf.params_.items()}
    return clf


def with_temperature(clf: OnnxClassifier, temperature: float) -> OnnxClassifier:
    """``clf`` with its output layer divided by ``temperature``: its probabilities are
    softmax(logits / T), what :func:`~mollia_edge.calibration.temper` makes of them, in the
    classifier itself (its export and ``predict`` included)."""
    meta, params = fitted_state(clf)
    params = {**params, "head.out_proj.weight": params["head.out_proj.weight"] / temperature,
              "head.out_proj.bias": params["head.out_proj.bias"] / temperature}
    return from_fitted_state(meta, params)


def head_from_linear(weight: np.ndarray, bias: np.ndarray, threads: int = 1) -> OnnxClassifier:
    """A head-mode classifier whose logits are exactly ``weight @ x + bias`` (weight (K, D),
    bias (K,)): a linear model (a logistic regression on the embeddings) that runs and exports as
    any head. Its hidden layer holds x and -x (H = 2D) and GELU(z) - GELU(-z) = z."""
    k, d = weight.shape
    identity = np.eye(d, dtype=np.float32)
    meta = {"mode": "head", "n_classes": k, "hidden": 2 * d, "threads": threads, "n_heads": 12, "layer_norm_eps": 1e-12,
            "best_epoch": 0, "spec": {"n_features": d, "n_classes": k, "hidden": 2 * d, "encoder": None}}
    params = {"head.dense.weight": np.concatenate([identity, -identity]), "head.dense.bias": np.zeros(2 * d, np.float32),
              "head.out_proj.weight": np.concatenate([weight, -weight], axis=1).astype(np.float32),
              "head.out_proj.bias": np.asarray(bias, np.float32)}
    return from_fitted_state(meta, params)


def average_heads(members: Sequence[OnnxClassifier]) -> OnnxClassifier:
    """Head-mode classifiers fitted on the same task as one head of their hidden layers side by
    side, its output layer the mean of theirs: its logits are the members' mean logits, and it
    runs, exports and predicts like any head (H' = sum of the members' H).

    An ensemble of a few seeds: one head trained on a few dozen labels and many pseudo-labels
    moves by up to 2 points with its seed alone (seen on BBC News, a report dataset: .916-.938
    over 4 seeds, and the label job drew .902); a mean of heads moves less, and costs a few
    trainings of a second each.
    """
    if not members or any(m.mode != "head" or not hasattr(m, "params_") for m in members):
        raise ConfigError("average_heads needs fitted head-mode classifiers")
    first = members[0]
    if any(m.spec_.n_features != first.spec_.n_features or m.n_classes_ != first.n_classes_ for m in members):
        raise ConfigError("average_heads needs classifiers of the same input width and classes")
    params = {
        "head.dense.weight": np.concatenate([m.params_["head.dense.weight"] for m in members]),
        "head.dense.bias": np.concatenate([m.params_["head.dense.bias"] for m in members]),
        "head.out_proj.weight": np.concatenate([m.params_["head.out_proj.weight"] for m in members], axis=1)
        / len(members),
        "head.out_proj.bias": np.mean([m.params_["head.out_proj.bias"] for m in members], axis=0),
    }
    out = copy.copy(first)
    out.hidden_width = sum(m.hidden_width for m in members)
    out.spec_ = dataclasses.replace(first.spec_, hidden=params["head.dense.bias"].shape[0])
    out.params_ = {name: value.astype(np.float32) for name, value in params.items()}
    out._param_feeds = {name: _ort(value) for name, value in out.params_.items()}
    out.members_ = len(members)
    return out


def _width(value: onnx.ValueInfoProto) -> int:
    """Last dimension of a tensor's declared shape (0: unknown)."""
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if dims else 0


def attach_prefix(prefix: onnx.ModelProto, top: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: ``prefix`` (its single output = hidden states) feeding ``top``'s
    ``hidden_states``; ``top``'s ``attention_mask`` is the prefix's input of that name."""
    if len(prefix.graph.output) != 1:
        raise ConfigError(f"prefix_model must have one output (the hidden states), has {len(prefix.graph.output)}")
    if "attention_mask" not in {i.name for i in prefix.graph.input}:
        raise ConfigError("prefix_model must take an 'attention_mask' input")
    if "hidden_states" not in {i.name for i in top.graph.input}:
        raise ConfigError("the graph after prefix_model must take 'hidden_states' (token vectors)")
    given, wanted = _width(prefix.graph.output[0]), _width(next(i for i in top.graph.input if i.name == "hidden_states"))
    if given and wanted and given != wanted:
        raise ConfigError(f"prefix_model gives vectors {given} wide; the trained layers or head take {wanted}")
    prefix_opset = next((o.version for o in prefix.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if prefix_opset < OPSET:
        prefix = version_converter.convert_version(prefix, OPSET)
    outer_names = {i.name for i in top.graph.input} | {o.name for o in top.graph.output}
    renamed = {"hidden_states": prefix.graph.output[0].name, "attention_mask": "attention_mask"}

    def rename(name: str) -> str:
        if name in renamed:
            return renamed[name]
        return name if name in outer_names or not name else f"trained/{name}"

    top = onnx.ModelProto.FromString(top.SerializeToString())
    for node in top.graph.node:
        node.name = rename(node.name) if node.name else node.name
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in top.graph.initializer:
        init.name = rename(init.name)
    graph = onnx.helper.make_graph(
        list(prefix.graph.node) + list(top.graph.node), "prefix_and_trained_layers",
        list(prefix.graph.input), list(top.graph.output),
        list(prefix.graph.initializer) + list(top.graph.initializer),
    )
    opsets = [o for o in prefix.opset_import if o.domain not in ("", "ai.onnx")]
    opsets.append(onnx.helper.make_opsetid("", max(prefix_opset, OPSET)))
    merged = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=max(prefix.ir_version, top.ir_version))
    onnx.checker.check_model(merged)
    return merged
