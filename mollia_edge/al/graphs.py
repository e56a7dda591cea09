"""ONNX graphs of the AL classifier: training step, inference, and gradients (for tests).

Two modes, both ending in the same head ``Linear(D->H) -> GELU -> dropout -> Linear(H->K)``:

* ``head``: the head on input features ``x`` (batch, D).
* ``top-layers``: m post-LayerNorm BERT encoder layers (as in all-MiniLM-L6-v2) on cached
  hidden states ``hidden_states`` (batch, seq, E) with ``attention_mask`` (batch, seq) int64,
  then masked mean pooling, then the head (D = E). Parameter names are the safetensors names
  (``encoder.layer.5.attention.self.query.weight``, PyTorch (out, in) layout; the graph
  transposes), so pretrained weights load directly. Encoder layers run without dropout.

Dropout is an input: ``dropout_keep`` (batch, H) is the keep-mask already scaled by 1/(1-p),
all ones for evaluation, so it is deterministic and seeded outside.

Loss (paper Eqs. 7-9), with ``y_pos`` (batch,) int64, ``row_weights`` W_d (batch,),
``negative_mask`` (batch, K) in {0, 1} and scalar ``lambda_nl``:

    loss = mean_batch(W_d * CE(y_pos) + lambda_nl * NL)
    NL   = -sum_{k in y-} log(1 - p_k)          (per row; 0 for a row without negatives)

i.e. Eq. 9 averaged over the batch, with Eq. 7 summing over the negative classes of a row
(the reference code averages them instead). ``1 - p_k`` is computed as the sum of the other
classes' probabilities (no cancellation near p_k = 1), and the log keeps its gradient where
the model is most confidently wrong (a clamp at 1 - 1e-6 used to zero it there). W_d all
ones = no discrepancy weighting, ``lambda_nl`` 0 = no negative learning.

Graph inputs and outputs by name:

* training step: parameters, ``adam.m.<p>``, ``adam.v.<p>``, ``step`` (float t >= 1),
  ``lr.head`` (and ``lr.encoder`` in top-layers mode), ``weight_decay``, the batch inputs,
  the loss inputs, ``dropout_keep`` -> ``loss``, ``next.<p>``, ``next.adam.m.<p>``,
  ``next.adam.v.<p>``. Weight decay applies to matrices only (not biases, LayerNorm).
* inference: parameters (or initializers), batch inputs, ``dropout_keep`` (optional) ->
  ``probabilities`` (batch, K), ``features`` (batch, H) (the GELU output before dropout).
  A ``head`` inference graph can also take the encoder's token vectors (``hidden_states``,
  ``attention_mask``) and pool them into the sentence embedding itself (``pooling``), so it
  can be appended to the encoder graph.
* gradients: parameters, batch, loss inputs, ``dropout_keep`` -> ``loss``, ``grad.<p>``.
* head output: ``head.out_proj.*``, ``features`` (batch, H), ``dropout_keep`` ->
  ``probabilities`` (batch, K): the head's last layer alone, for MC dropout on cached features.

Multi-label (``ModelSpec.multi_label``): each of the K outputs is a sigmoid, the probability
that its label applies, and the loss is the weighted binary cross-entropy over the labels a
row's targets give, ``y_multi`` (batch, K) in [0, 1] and ``label_mask`` (batch, K) in {0, 1}
(which of them count) in place of ``y_pos``, ``negative_mask`` and ``lambda_nl``:

    loss = mean_batch(W_d * sum_k mask_k * BCE(z_k, y_k)) / K
    BCE(z, y) = softplus(z) - y z = max(z, 0) + log(1 + exp(-|z|)) - y z   (no overflow)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from .autodiff import Graph, Value, append_adamw

BATCH, SEQ = "batch", "seq"
_MASKED_SCORE = -1e9
_TINY = 1e-30
"""Added to 1 - p_k inside the log: finite where every other class's probability underflows
(logits more than ~70 apart), and no gradient is cut anywhere."""
_HEAD_LAYERS = ("head.dense", "head.out_proj")
_ENCODER_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
_ENCODER_LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")
POOLINGS = ("mean", "mean-unit")
"""Sentence embeddings a ``head`` graph can make from token vectors: the masked mean, and the
masked mean scaled to unit length (``Encoder.encode``'s default)."""


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of the trainable BERT layers: their indices in the full model, widths, heads."""

    layers: tuple[int, ...]
    width: int = 384
    n_heads: int = 12
    ffn: int = 1536
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("EncoderSpec needs at least one layer index")
        if self.width % self.n_heads:
            raise ValueError(f"width {self.width} is not a multiple of n_heads {self.n_heads}")


@dataclass(frozen=True)
class ModelSpec:
    """The classifier: head input width D, hidden width H, K classes, optional encoder layers."""

    n_features: int
    n_classes: int
    hidden: int = 256
    encoder: EncoderSpec | None = None
    multi_label: bool = False
    """K independent sigmoid outputs and the binary cross-entropy (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.encoder is not None and self.encoder.width != self.n_features:
            raise ValueError(f"n_features {self.n_features} must equal the encoder width {self.encoder.width}")

    @property
    def mode(self) -> str:
        return "head" if self.encoder is None else "top-layers"


def encoder_layer_prefix(layer: int) -> str:
    return f"encoder.layer.{layer}."


def parameter_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter name -> shape, encoder layers first (PyTorch (out, in) weights)."""
    shapes: dict[str, tuple[int, ...]] = {}
    enc = spec.encoder
    for layer in enc.layers if enc else ():
        p = encoder_layer_prefix(layer)
        for name in _ENCODER_LINEARS:
            shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (enc.width, enc.width), (enc.width,)
        shapes[f"{p}intermediate.dense.weight"], shapes[f"{p}intermediate.dense.bias"] = (enc.ffn, enc.width), (enc.ffn,)
        shapes[f"{p}output.dense.weight"], shapes[f"{p}output.dense.bias"] = (enc.width, enc.ffn), (enc.width,)
        for name in _ENCODER_LAYER_NORMS:
            shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (enc.width,), (enc.width,)
    widths = ((spec.hidden, spec.n_features), (spec.n_classes, spec.hidden))
    for name, (out_dim, in_dim) in zip(_HEAD_LAYERS, widths):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out_dim, in_dim), (out_dim,)
    return shapes


def learning_rate_input(parameter: str) -> str:
    """Name of the learning-rate input that drives ``parameter`` (``lr.encoder``/``lr.head``)."""
    return "lr.encoder" if parameter.startswith("encoder.") else "lr.head"


# ---------------------------------------------------------------------------- forward pieces
def _linear(g: Graph, x: Value, params: Mapping[str, Value], name: str) -> Value:
    return x @ g.transpose(params[f"{name}.weight"], [1, 0]) + params[f"{name}.bias"]


def _layer_norm(g: Graph, x: Value, params: Mapping[str, Value], name: str, eps: float) -> Value:
    centred = x - g.reduce_mean(x, [-1], keepdims=True)
    variance = g.reduce_mean(centred * centred, [-1], keepdims=True)
    return centred / g.sqrt(variance + eps) * params[f"{name}.weight"] + params[f"{name}.bias"]


def _self_attention(g: Graph, h: Value, score_bias: Value, params: Mapping[str, Value], prefix: str, enc: EncoderSpec) -> Value:
    head_dim = enc.width // enc.n_heads

    def split_heads(name: str) -> Value:  # (batch, seq, E) -> (batch, heads, seq, head_dim)
        projected = _linear(g, h, params, prefix + name)
        return g.transpose(g.reshape(projected, (BATCH, SEQ, enc.n_heads, head_dim)), [0, 2, 1, 3])

    q, k, v = (split_heads(f"attention.self.{n}") for n in ("query", "key", "value"))
    scores = q @ g.swap_last_axes(k) * (1.0 / math.sqrt(head_dim)) + score_bias
    context = g.transpose(g.softmax(scores) @ v, [0, 2, 1, 3])
    return _linear(g, g.reshape(context, (BATCH, SEQ, enc.width)), params, prefix + "attention.output.dense")


def _encoder_layer(g: Graph, h: Value, score_bias: Value, params: Mapping[str, Value], layer: int, enc: EncoderSpec) -> Value:
    p = encoder_layer_prefix(layer)
    attended = _layer_norm(g, h + _self_attention(g, h, score_bias, params, p, enc), params, p + "attention.output.LayerNorm", enc.layer_norm_eps)
    ffn = _linear(g, g.gelu(_linear(g, attended, params, p + "intermediate.dense")), params, p + "output.dense")
    return _layer_norm(g, attended + ffn, params, p + "output.LayerNorm", enc.layer_norm_eps)


def _pooled_encoding(g: Graph, spec: ModelSpec, params: Mapping[str, Value], batch: Mapping[str, Value]) -> Value:
    """Encoder layers on cached hidden states, then masked mean pooling -> (batch, E)."""
    enc = spec.encoder
    mask = g.cast(batch["attention_mask"])
    axes = g.constant(np.asarray([1, 2], dtype=np.int64))
    score_bias = g.node("Unsqueeze", [(1.0 - mask) * _MASKED_SCORE, axes], (BATCH, 1, 1, SEQ))
    h = batch["hidden_states"]
    for layer in enc.layers:
        h = _encoder_layer(g, h, score_bias, params, layer, enc)
    return _mean_pool(g, h, mask)


def _mean_pool(g: Graph, h: Value, mask: Value) -> Value:
    """Mean of the token vectors ``h`` (batch, seq, E) where the float ``mask`` (batch, seq) is 1."""
    token_weights = g.node("Unsqueeze", [mask, g.constant(np.asarray([2], dtype=np.int64))], (BATCH, SEQ, 1))
    n_tokens = g.node("Max", [g.reduce_sum(token_weights, [1]), g.constant(1e-9)], (BATCH, 1))
    return g.reduce_sum(h * token_weights, [1]) / n_tokens


def _sentence_embedding(g: Graph, batch: Mapping[str, Value], pooling: str) -> Value:
    """The ``head`` input made from token vectors (see :data:`POOLINGS`)."""
    x = _mean_pool(g, batch["hidden_states"], g.cast(batch["attention_mask"]))
    if pooling == "mean-unit":
        norm = g.sqrt(g.reduce_sum(x * x, [1], keepdims=True))
        x = x / g.node("Max", [norm, g.constant(1e-12)], (BATCH, 1))
    return x


def _forward(g: Graph, spec: ModelSpec, params: Mapping[str, Value], batch: Mapping[str, Value], keep: Value | None,
             pooling: str | None = None) -> tuple[Value, Value]:
    """Logits (batch, K) and head features (batch, H)."""
    if spec.encoder is not None:
        x = _pooled_encoding(g, spec, params, batch)
    else:
        x = batch["x"] if pooling is None else _sentence_embedding(g, batch, pooling)
    features = g.gelu(_linear(g, x, params, "head.dense"))
    return _head_logits(g, params, features, keep), features


def _head_logits(g: Graph, params: Mapping[str, Value], features: Value, keep: Value | None) -> Value:
    """The head's output layer on its (dropped-out) hidden features."""
    return _linear(g, features if keep is None else features * keep, params, "head.out_proj")


def _binary_cross_entropy(g: Graph, spec: ModelSpec, logits: Value, targets: Mapping[str, Value]) -> Value:
    """mean_batch(W_d * sum_k mask_k * BCE(z_k, y_k)) / K, the multi-label loss."""
    magnitude = g.relu(logits) + g.relu(-logits)
    per_label = g.relu(logits) + g.log(1.0 + g.exp(-magnitude)) - targets["y_multi"] * logits
    per_row = g.reduce_sum(targets["label_mask"] * per_label, [1]) * (1.0 / spec.n_classes)
    return g.reduce_mean(targets["row_weights"] * per_row, [0])


def _probabilities(g: Graph, spec: ModelSpec, logits: Value) -> Value:
    """Softmax over the K classes, or (multi-label) each label's sigmoid."""
    if not spec.multi_label:
        return g.softmax(logits)
    return g.node("Sigmoid", [logits], logits.shape)


def _robust_loss(g: Graph, spec: ModelSpec, logits: Value, targets: Mapping[str, Value]) -> Value:
    """mean(W_d * CE) + lambda_nl * NL (see the module docstring); the BCE in multi-label mode."""
    if spec.multi_label:
        return _binary_cross_entropy(g, spec, logits, targets)
    log_p = g.log_softmax(logits)
    y = g.node("Unsqueeze", [targets["y_pos"], g.constant(np.asarray([1], dtype=np.int64))], (BATCH, 1), TensorProto.INT64)
    one_hot = g.cast(g.compare("Equal", y, g.constant(np.arange(spec.n_classes, dtype=np.int64))))
    cross_entropy = -g.reduce_sum(one_hot * log_p, [1])
    weighted_ce = g.reduce_mean(targets["row_weights"] * cross_entropy, [0])

    p = g.exp(log_p)
    others = g.matmul(p, g.constant(1.0 - np.eye(spec.n_classes)))  # 1 - p_k as the sum of the others: no cancellation
    per_row = -g.reduce_sum(targets["negative_mask"] * g.log(others + _TINY), [1])
    return weighted_ce + targets["lambda_nl"] * g.reduce_mean(per_row, [0])


# ---------------------------------------------------------------------------- graph inputs
def _batch_inputs(g: Graph, spec: ModelSpec, pooling: str | None = None) -> dict[str, Value]:
    if spec.encoder is None and pooling is None:
        return {"x": g.input("x", (BATCH, spec.n_features))}
    return {
        "hidden_states": g.input("hidden_states", (BATCH, SEQ, spec.n_features)),
        "attention_mask": g.input("attention_mask", (BATCH, SEQ), TensorProto.INT64),
    }


def _target_inputs(g: Graph, spec: ModelSpec) -> dict[str, Value]:
    if spec.multi_label:
        return {
            "y_multi": g.input("y_multi", (BATCH, spec.n_classes)),
            "label_mask": g.input("label_mask", (BATCH, spec.n_classes)),
            "row_weights": g.input("row_weights", (BATCH,)),
        }
    return {
        "y_pos": g.input("y_pos", (BATCH,), TensorProto.INT64),
        "row_weights": g.input("row_weights", (BATCH,)),
        "negative_mask": g.input("negative_mask", (BATCH, spec.n_classes)),
        "lambda_nl": g.input("lambda_nl", ()),
    }


def _parameter_inputs(g: Graph, spec: ModelSpec) -> dict[str, Value]:
    return {name: g.input(name, shape, requires_grad=True) for name, shape in parameter_shapes(spec).items()}


def _loss_and_gradients(g: Graph, spec: ModelSpec) -> tuple[dict[str, Value], Value, dict[str, Value]]:
    params = _parameter_inputs(g, spec)
    batch = _batch_inputs(g, spec)
    targets = _target_inputs(g, spec)
    keep = g.input("dropout_keep", (BATCH, spec.hidden))
    logits, _ = _forward(g, spec, params, batch, keep)
    loss = _robust_loss(g, spec, logits, targets)
    g.output(loss, "loss")
    return params, loss, g.gradients(loss, list(params.values()))


# ---------------------------------------------------------------------------- public builders
def training_step_model(spec: ModelSpec, dtype: np.dtype | type = np.float32) -> onnx.ModelProto:
    """One full step: forward, loss, backward, AdamW update of every parameter."""
    g = Graph(dtype, name=f"train_step_{spec.mode}")
    params, _, grads = _loss_and_gradients(g, spec)
    step, weight_decay = g.input("step", ()), g.input("weight_decay", ())
    rates = {name: g.input(name, ()) for name in sorted({learning_rate_input(p) for p in params})}
    append_adamw(
        g, list(params.values()), grads, step,
        {p: rates[learning_rate_input(p)] for p in params}, weight_decay,
        decayed=lambda p: len(p.shape) >= 2,
    )
    return g.to_model()


def gradient_model(spec: ModelSpec, dtype: np.dtype | type = np.float32) -> onnx.ModelProto:
    """Loss and ``grad.<p>`` for every parameter, without an update (for gradient checks)."""
    g = Graph(dtype, name=f"gradients_{spec.mode}")
    _, _, grads = _loss_and_gradients(g, spec)
    for name, grad in grads.items():
        g.output(grad, f"grad.{name}")
    return g.to_model()


def head_output_model(spec: ModelSpec, dtype: np.dtype | type = np.float32) -> onnx.ModelProto:
    """``probabilities`` (batch, K) from ``features`` (batch, H) times ``dropout_keep``."""
    g = Graph(dtype, name="head_output")
    shapes = parameter_shapes(spec)
    params = {name: g.input(name, shapes[name]) for name in ("head.out_proj.weight", "head.out_proj.bias")}
    features, keep = g.input("features", (BATCH, spec.hidden)), g.input("dropout_keep", (BATCH, spec.hidden))
    g.output(_probabilities(g, spec, _head_logits(g, params, features, keep)), "probabilities")
    return g.to_model()


def encoding_model(spec: ModelSpec, weights: Mapping[str, np.ndarray], dtype: np.dtype | type = np.float32) -> onnx.ModelProto:
    """``top-layers`` mode: the encoder layers (``weights``, e.g. MiniLM's own from
    :func:`~mollia_edge.al.encoder.load_top_layers`) on ``hidden_states`` (batch, seq, E) and
    ``attention_mask`` (batch, seq) int64, mean-pooled: the sentence ``encoding`` (batch, E)
    the head reads."""
    if spec.encoder is None:
        raise ValueError("encoding_model needs a spec with encoder layers")
    g = Graph(dtype, name="encoding")
    shapes = {name: shape for name, shape in parameter_shapes(spec).items() if name.startswith("encoder.")}
    params = {name: g.constant(np.asarray(weights[name]).reshape(shape), name=name) for name, shape in shapes.items()}
    g.output(_pooled_encoding(g, spec, params, _batch_inputs(g, spec)), "encoding")
    return g.to_model()


def inference_model(
    spec: ModelSpec,
    dtype: np.dtype | type = np.float32,
    weights: Mapping[str, np.ndarray] | None = None,
    dropout_input: bool = True,
    pooling: str | None = None,
) -> onnx.ModelProto:
    """Probabilities (batch, K) and features (batch, H).

    Parameters are graph inputs, or initializers when ``weights`` is given (a self-contained
    file). With ``dropout_input`` the graph takes ``dropout_keep`` (batch, H), for MC dropout.
    ``pooling`` (``head`` mode only, one of :data:`POOLINGS`): the graph takes token vectors
    ``hidden_states`` (batch, seq, D) and ``attention_mask`` (batch, seq) int64 instead of
    ``x`` and pools them into the head's input.
    """
    if pooling is not None and (spec.encoder is not None or pooling not in POOLINGS):
        raise ValueError(f"pooling must be None or one of {POOLINGS} (head mode only), not {pooling!r}")
    g = Graph(dtype, name=f"inference_{spec.mode}")
    shapes = parameter_shapes(spec)
    if weights is None:
        params = {name: g.input(name, shape) for name, shape in shapes.items()}
    else:
        params = {name: g.constant(np.asarray(weights[name]).reshape(shape), name=name) for name, shape in shapes.items()}
    batch = _batch_inputs(g, spec, pooling)
    keep = g.input("dropout_keep", (BATCH, spec.hidden)) if dropout_input else None
    logits, features = _forward(g, spec, params, batch, keep, pooling)
    g.output(_probabilities(g, spec, logits), "probabilities")
    g.output(features, "features")
    return g.to_model()
