"""A tiny ONNX graph-building DSL with reverse-mode differentiation, and AdamW as graph nodes.

Record forward operations on :class:`Value` objects of a :class:`Graph` (``a @ w + b``,
``g.gelu(h)``, ``g.log_softmax(z)`` ...); :meth:`Graph.gradients` then appends the backward
nodes, and :func:`append_adamw` appends one AdamW update per parameter. The result is a plain
ONNX model that stock onnxruntime runs: no PyTorch, no onnxruntime-training.

Shapes are static tuples whose entries are ints or names of dynamic dimensions (``"batch"``).
Broadcasting follows numpy; a gradient is reduced back to its operand's shape with
``ReduceSum`` over the broadcast axes, which are known statically (a named dimension is never
broadcast), so the batch size stays dynamic.

Float64 graphs are supported for finite-difference checks. onnxruntime has no float64 ``Erf``
kernel, so in float64 graphs ``erf`` is computed by its everywhere-convergent series
``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (2n+1)!!`` (|x| clipped at 5.5, error
below 1e-14); float32 graphs use the ``Erf`` operator.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str
Shape = tuple[Dim, ...]

OPSET = 17
IR_VERSION = 10  # onnxruntime 1.20+ reads IR 10; onnx 1.23 would otherwise write a newer one
_FLOAT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
_ERF_SERIES_TERMS = 100
_ERF_SERIES_CLIP = 5.5


class Value:
    """One tensor in the graph: its ONNX name, static shape and whether gradients flow into it."""

    def __init__(self, graph: Graph, name: str, shape: Shape, elem_type: int, requires_grad: bool):
        self.graph = graph
        self.name = name
        self.shape = tuple(shape)
        self.elem_type = elem_type
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return f"Value({self.name!r}, shape={self.shape})"

    def __add__(self, other: Value | float) -> Value:
        return self.graph.add(self, other)

    def __radd__(self, other: float) -> Value:
        return self.graph.add(other, self)

    def __sub__(self, other: Value | float) -> Value:
        return self.graph.sub(self, other)

    def __rsub__(self, other: float) -> Value:
        return self.graph.sub(other, self)

    def __mul__(self, other: Value | float) -> Value:
        return self.graph.mul(self, other)

    def __rmul__(self, other: float) -> Value:
        return self.graph.mul(other, self)

    def __truediv__(self, other: Value | float) -> Value:
        return self.graph.div(self, other)

    def __rtruediv__(self, other: float) -> Value:
        return self.graph.div(other, self)

    def __neg__(self) -> Value:
        return self.graph.neg(self)

    def __matmul__(self, other: Value) -> Value:
        return self.graph.matmul(self, other)


Backward = Callable[[Value], Sequence[Callable[[], Value] | None]]


def broadcast_shapes(a: Shape, b: Shape) -> Shape:
    """Numpy broadcasting of two static shapes; a named dimension only matches itself or 1."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


class Graph:
    """Records ONNX nodes; differentiable operations also go on a tape for :meth:`gradients`."""

    def __init__(self, dtype: np.dtype | type = np.float32, name: str = "graph"):
        self.dtype = np.dtype(dtype)
        if self.dtype not in _FLOAT_TYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.float_type = _FLOAT_TYPES[self.dtype]
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._tape: list[tuple[Value, Sequence[Value], Backward]] = []
        self._recording = True
        self._counter = itertools.count()

    # ------------------------------------------------------------------ building blocks
    def _fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._counter)}"

    def input(self, name: str, shape: Shape, elem_type: int | None = None, requires_grad: bool = False) -> Value:
        """Declare a graph input; ``requires_grad`` marks a parameter to differentiate."""
        elem_type = self.float_type if elem_type is None else elem_type
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return Value(self, name, shape, elem_type, requires_grad and self._recording)

    def constant(self, array: np.ndarray | float, name: str | None = None) -> Value:
        """A constant initializer; python floats become scalars of the graph's float type."""
        arr = np.asarray(array)
        if arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        name = name or self._fresh("const")
        self.initializers.append(numpy_helper.from_array(arr, name))
        return Value(self, name, arr.shape, helper.np_dtype_to_tensor_dtype(arr.dtype), False)

    def output(self, value: Value, name: str) -> None:
        """Expose ``value`` as graph output ``name``."""
        self.nodes.append(helper.make_node("Identity", [value.name], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, value.elem_type, list(value.shape)))

    def node(self, op_type: str, inputs: Sequence[Value], shape: Shape, elem_type: int | None = None, **attrs) -> Value:
        """A raw, non-differentiable ONNX node with one output."""
        name = self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, [v.name for v in inputs], [name], **attrs))
        return Value(self, name, shape, self.float_type if elem_type is None else elem_type, False)

    def _op(self, op_type: str, inputs: Sequence[Value], shape: Shape, backward: Backward, **attrs) -> Value:
        out = self.node(op_type, inputs, shape, **attrs)
        if self._recording and any(v.requires_grad for v in inputs):
            out.requires_grad = True
            self._tape.append((out, tuple(inputs), backward))
        return out

    def _lift(self, x: Value | float) -> Value:
        return x if isinstance(x, Value) else self.constant(float(x))

    @contextlib.contextmanager
    def no_grad(self) -> Iterator[None]:
        """Nodes built inside are not recorded for differentiation."""
        previous, self._recording = self._recording, False
        try:
            yield
        finally:
            self._recording = previous

    def _axes(self, axes: Sequence[int]) -> Value:
        return self.constant(np.asarray(axes, dtype=np.int64))

    def shape_of(self, x: Value) -> Value:
        return self.node("Shape", [x], (len(x.shape),), TensorProto.INT64)

    def cast(self, x: Value, elem_type: int | None = None) -> Value:
        """Non-differentiable cast (to the graph's float type by default)."""
        elem_type = self.float_type if elem_type is None else elem_type
        return self.node("Cast", [x], x.shape, elem_type, to=elem_type)

    def compare(self, op_type: str, a: Value | float, b: Value | float) -> Value:
        """``Greater``/``Less``/``Equal`` as a boolean tensor."""
        a, b = self._lift(a), self._lift(b)
        return self.node(op_type, [a, b], broadcast_shapes(a.shape, b.shape), TensorProto.BOOL)

    def unbroadcast(self, g: Value, shape: Shape) -> Value:
        """Sum ``g`` over the axes along which an operand of ``shape`` was broadcast."""
        lead = len(g.shape) - len(shape)
        if lead:
            g = self.reduce_sum(g, range(lead), keepdims=False)
        axes = [i for i, (gd, d) in enumerate(zip(g.shape, shape)) if d == 1 and gd != 1]
        return self.reduce_sum(g, axes, keepdims=True) if axes else g

    # ------------------------------------------------------------------ elementwise
    def _binary(self, op_type: str, a: Value | float, b: Value | float, grads: Callable) -> Value:
        a, b = self._lift(a), self._lift(b)
        out_shape = broadcast_shapes(a.shape, b.shape)

        def backward(g: Value) -> tuple:
            ga, gb = grads(g, a, b)
            return (lambda: self.unbroadcast(ga(), a.shape), lambda: self.unbroadcast(gb(), b.shape))

        return self._op(op_type, [a, b], out_shape, backward)

    def add(self, a: Value | float, b: Value | float) -> Value:
        return self._binary("Add", a, b, lambda g, a, b: (lambda: g, lambda: g))

    def sub(self, a: Value | float, b: Value | float) -> Value:
        return self._binary("Sub", a, b, lambda g, a, b: (lambda: g, lambda: -g))

    def mul(self, a: Value | float, b: Value | float) -> Value:
        return self._binary("Mul", a, b, lambda g, a, b: (lambda: g * b, lambda: g * a))

    def div(self, a: Value | float, b: Value | float) -> Value:
        return self._binary("Div", a, b, lambda g, a, b: (lambda: g / b, lambda: -(g * a) / (b * b)))

    def _unary(self, op_type: str, x: Value, grad: Callable[[Value, Value], Value]) -> Value:
        out: Value | None = None

        def backward(g: Value) -> tuple:
            return (lambda: grad(g, out),)

        out = self._op(op_type, [x], x.shape, backward)
        return out

    def neg(self, x: Value) -> Value:
        return self._unary("Neg", x, lambda g, out: -g)

    def exp(self, x: Value) -> Value:
        return self._unary("Exp", x, lambda g, out: g * out)

    def log(self, x: Value) -> Value:
        return self._unary("Log", x, lambda g, out: g / x)

    def sqrt(self, x: Value) -> Value:
        return self._unary("Sqrt", x, lambda g, out: g * 0.5 / out)

    def tanh(self, x: Value) -> Value:
        return self._unary("Tanh", x, lambda g, out: g * (1.0 - out * out))

    def relu(self, x: Value) -> Value:
        return self._unary("Relu", x, lambda g, out: g * self.cast(self.compare("Greater", x, 0.0)))

    def erf(self, x: Value) -> Value:
        """Error function; d/dx erf(x) = 2/sqrt(pi) * exp(-x^2)."""

        def backward(g: Value) -> tuple:
            return (lambda: g * (2.0 / math.sqrt(math.pi)) * self.exp(-(x * x)),)

        if self.float_type == TensorProto.FLOAT:
            return self._op("Erf", [x], x.shape, backward)
        with self.no_grad():
            out = self._erf_series(x)
        if self._recording and x.requires_grad:
            out.requires_grad = True
            self._tape.append((out, (x,), backward))
        return out

    def _erf_series(self, x: Value) -> Value:
        limit = self.constant(_ERF_SERIES_CLIP)
        x = self.node("Min", [self.node("Max", [x, -limit], x.shape), limit], x.shape)
        two_x2 = 2.0 * x * x
        term = total = x
        for n in range(1, _ERF_SERIES_TERMS):
            term = term * two_x2 / float(2 * n + 1)
            total = total + term
        return (2.0 / math.sqrt(math.pi)) * self.exp(-(x * x)) * total

    def gelu(self, x: Value) -> Value:
        """Exact GELU as in BERT: 0.5 x (1 + erf(x / sqrt(2)))."""
        return 0.5 * x * (1.0 + self.erf(x * (1.0 / math.sqrt(2.0))))

    def where(self, condition: Value, a: Value | float, b: Value | float) -> Value:
        """``condition ? a : b`` (condition is boolean and not differentiated)."""
        a, b = self._lift(a), self._lift(b)
        shape = broadcast_shapes(condition.shape, broadcast_shapes(a.shape, b.shape))

        def backward(g: Value) -> tuple:
            return (
                None,
                lambda: self.unbroadcast(self.where(condition, g, 0.0), a.shape),
                lambda: self.unbroadcast(self.where(condition, 0.0, g), b.shape),
            )

        return self._op("Where", [condition, a, b], shape, backward)

    # ------------------------------------------------------------------ last-axis normalisers
    def softmax(self, x: Value) -> Value:
        out: Value | None = None

        def backward(g: Value) -> tuple:
            return (lambda: out * (g - self.reduce_sum(g * out, [-1], keepdims=True)),)

        out = self._op("Softmax", [x], x.shape, backward, axis=-1)
        return out

    def log_softmax(self, x: Value) -> Value:
        out: Value | None = None

        def backward(g: Value) -> tuple:
            return (lambda: g - self.exp(out) * self.reduce_sum(g, [-1], keepdims=True),)

        out = self._op("LogSoftmax", [x], x.shape, backward, axis=-1)
        return out

    # ------------------------------------------------------------------ reductions and layout
    def reduce_sum(self, x: Value, axes: Sequence[int], keepdims: bool = False) -> Value:
        rank = len(x.shape)
        axes = sorted(a % rank for a in axes)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keepdims or i not in axes)

        def backward(g: Value) -> tuple:
            def grad() -> Value:
                kept = g if keepdims else self.node("Unsqueeze", [g, self._axes(axes)], x.shape)
                return self.node("Expand", [kept, self.shape_of(x)], x.shape)

            return (grad,)

        return self._op("ReduceSum", [x, self._axes(axes)], shape, backward, keepdims=int(keepdims))

    def count(self, x: Value, axes: Sequence[int]) -> Value:
        """Number of elements of ``x`` over ``axes`` as a float scalar (dynamic dims allowed)."""
        dims = [x.shape[a] for a in axes]
        if all(isinstance(d, int) for d in dims):
            return self.constant(float(np.prod(dims)))
        picked = self.node("Gather", [self.shape_of(x), self._axes(axes)], (len(axes),), TensorProto.INT64)
        return self.cast(self.node("ReduceProd", [picked], (), TensorProto.INT64, keepdims=0))

    def reduce_mean(self, x: Value, axes: Sequence[int], keepdims: bool = False) -> Value:
        return self.reduce_sum(x, axes, keepdims) / self.count(x, axes)

    def matmul(self, a: Value, b: Value) -> Value:
        """Batched matrix product of tensors of rank >= 2 (numpy ``@``)."""
        if len(a.shape) < 2 or len(b.shape) < 2:
            raise ValueError("matmul needs operands of rank 2 or more")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ in {a.shape} @ {b.shape}")
        shape = broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])

        def backward(g: Value) -> tuple:
            def grad_b() -> Value:
                if len(b.shape) == 2 and len(a.shape) > 2:  # shared weight: one 2-D product over all rows
                    return self.swap_last_axes(self._rows(a)) @ self._rows(g)
                return self.unbroadcast(self.swap_last_axes(a) @ g, b.shape)

            return (lambda: self.unbroadcast(g @ self.swap_last_axes(b), a.shape), grad_b)

        return self._op("MatMul", [a, b], shape, backward)

    def _rows(self, x: Value) -> Value:
        """Non-differentiable flattening (..., n) -> (rows, n)."""
        target = self.constant(np.asarray([-1, x.shape[-1]], dtype=np.int64))
        return self.node("Reshape", [x, target], ("rows", x.shape[-1]))

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        perm = list(perm)
        inverse = list(np.argsort(perm))

        def backward(g: Value) -> tuple:
            return (lambda: self.transpose(g, inverse),)

        return self._op("Transpose", [x], tuple(x.shape[p] for p in perm), backward, perm=perm)

    def swap_last_axes(self, x: Value) -> Value:
        perm = list(range(len(x.shape)))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return self.transpose(x, perm)

    def reshape(self, x: Value, shape: Shape) -> Value:
        """Reshape; a named dimension must sit where it sits in ``x`` (it is copied, ONNX 0)."""
        target = []
        for i, d in enumerate(shape):
            if isinstance(d, str):
                if i >= len(x.shape) or x.shape[i] != d:
                    raise ValueError(f"reshape {x.shape} -> {shape}: dynamic dim {d!r} must keep its position")
                target.append(0)
            else:
                target.append(d)

        def backward(g: Value) -> tuple:
            return (lambda: self.node("Reshape", [g, self.shape_of(x)], x.shape),)

        return self._op("Reshape", [x, self.constant(np.asarray(target, dtype=np.int64))], tuple(shape), backward)

    # ------------------------------------------------------------------ differentiation
    def gradients(self, loss: Value, wrt: Sequence[Value]) -> dict[str, Value]:
        """Append backward nodes; returns d loss / d v for each ``v`` in ``wrt`` (by name).

        ``loss`` must be a scalar. A parameter the loss does not depend on gets zeros.
        """
        if loss.shape != ():
            raise ValueError(f"loss must be a scalar, got shape {loss.shape}")
        pending: dict[str, list[Value]] = {}
        with self.no_grad():
            pending[loss.name] = [self.constant(1.0)]
            for out, inputs, backward in reversed(self._tape):
                if out.name not in pending:
                    continue
                g = self._sum(pending.pop(out.name))
                for inp, grad in zip(inputs, backward(g)):
                    if grad is not None and inp.requires_grad:
                        pending.setdefault(inp.name, []).append(grad())
            result = {}
            for v in wrt:
                grads = pending.get(v.name)
                result[v.name] = self._sum(grads) if grads else self.node(
                    "Mul", [v, self.constant(0.0)], v.shape
                )
        return result

    def _sum(self, values: list[Value]) -> Value:
        return values[0] if len(values) == 1 else self.node("Sum", values, values[0].shape)

    def to_model(self) -> onnx.ModelProto:
        """The recorded graph as a checked ONNX model (opset 17)."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
            producer_name="mollia_edge.al.autodiff",
        )
        onnx.checker.check_model(model)
        return model


def adam_state_names(name: str) -> tuple[str, str]:
    """Graph input names of the first and second AdamW moments of parameter ``name``."""
    return f"adam.m.{name}", f"adam.v.{name}"


def updated_name(name: str) -> str:
    """Graph output name carrying the next value of input ``name`` after one step."""
    return f"next.{name}"


def append_adamw(
    g: Graph,
    params: Sequence[Value],
    grads: Mapping[str, Value],
    step: Value,
    learning_rates: Mapping[str, Value],
    weight_decay: Value,
    decayed: Callable[[Value], bool],
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> None:
    """Append one AdamW step (decoupled weight decay, PyTorch's formulation) for every parameter.

    Adds inputs ``adam.m.<p>``/``adam.v.<p>`` and outputs ``next.<p>``, ``next.adam.m.<p>``,
    ``next.adam.v.<p>``. ``step`` is the float scalar step count t >= 1 (bias correction
    1 - beta^t); ``learning_rates[p.name]`` the scalar lr of each parameter; weight decay
    applies to the parameters where ``decayed(p)`` is true:

        p <- p (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
        p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """
    with g.no_grad():
        correction1 = 1.0 - g.node("Pow", [g.constant(beta1), step], ())
        correction2 = 1.0 - g.node("Pow", [g.constant(beta2), step], ())
        for p in params:
            m_name, v_name = adam_state_names(p.name)
            m, v = g.input(m_name, p.shape), g.input(v_name, p.shape)
            grad, lr = grads[p.name], learning_rates[p.name]
            decayed_p = p * (1.0 - lr * weight_decay) if decayed(p) else p
            m_next = beta1 * m + (1.0 - beta1) * grad
            v_next = beta2 * v + (1.0 - beta2) * grad * grad
            p_next = decayed_p - lr * (m_next / correction1) / (g.sqrt(v_next / correction2) + eps)
            g.output(p_next, updated_name(p.name))
            g.output(m_next, updated_name(m_name))
            g.output(v_next, updated_name(v_name))
