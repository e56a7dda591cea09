"""ONNX training graphs: gradients against finite differences, AdamW against numpy, loss terms."""

import numpy as np
import onnxruntime as ort
import pytest

from mollia_edge.al.graphs import (
    EncoderSpec,
    ModelSpec,
    gradient_model,
    inference_model,
    parameter_shapes,
    training_step_model,
)

HEAD = ModelSpec(n_features=6, n_classes=3, hidden=5)
TOP = ModelSpec(n_features=8, n_classes=3, hidden=5, encoder=EncoderSpec((4, 5), width=8, n_heads=2, ffn=16))
BATCH = 4


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _feeds(spec, dtype=np.float64, lambda_nl=0.7, seed=0):
    """Parameters, a batch with padding, weights, negatives and a dropout mask with zeros."""
    rng = np.random.default_rng(seed)
    feeds = {n: rng.normal(0, 0.5, s).astype(dtype) for n, s in parameter_shapes(spec).items()}
    if spec.encoder is None:
        feeds["x"] = rng.normal(size=(BATCH, spec.n_features)).astype(dtype)
    else:
        feeds["hidden_states"] = rng.normal(size=(BATCH, 5, spec.n_features)).astype(dtype)
        feeds["attention_mask"] = np.array([[1, 1, 1, 0, 0], [1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], np.int64)
    feeds.update(
        y_pos=np.array([0, 1, 2, 1], np.int64),
        row_weights=np.array([1.0, 0.5, 1.0, 0.3], dtype),
        negative_mask=np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype),
        lambda_nl=np.asarray(lambda_nl, dtype),
        dropout_keep=(rng.random((BATCH, spec.hidden)) > 0.2).astype(dtype) / 0.8,
    )
    return feeds


@pytest.fixture(scope="module")
def gradient_sessions():
    return {spec.mode: _session(gradient_model(spec, np.float64)) for spec in (HEAD, TOP)}


@pytest.mark.parametrize("spec", [HEAD, TOP], ids=["head", "top-layers"])
def test_gradients_match_central_differences(spec, gradient_sessions):
    session = gradient_sessions[spec.mode]
    feeds = _feeds(spec)
    names = [o.name for o in session.get_outputs()]
    analytic = dict(zip(names, session.run(None, feeds)))
    rng = np.random.default_rng(1)
    h = 1e-6
    for name, shape in parameter_shapes(spec).items():
        flat_indices = rng.choice(int(np.prod(shape)), size=min(3, int(np.prod(shape))), replace=False)
        for index in map(lambda i: np.unravel_index(i, shape), flat_indices):
            shifted = feeds[name].copy()
            shifted[index] += h
            plus = session.run(["loss"], {**feeds, name: shifted})[0]
            shifted[index] -= 2 * h
            minus = session.run(["loss"], {**feeds, name: shifted})[0]
            numeric = (plus - minus) / (2 * h)
            assert analytic[f"grad.{name}"][index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), name


def test_loss_terms_follow_the_documented_formula():
    session, probe = _session(gradient_model(HEAD, np.float64)), _session(inference_model(HEAD, np.float64))
    feeds = _feeds(HEAD)
    p = probe.run(["probabilities"], {k: feeds[k] for k in [*parameter_shapes(HEAD), "x", "dropout_keep"]})[0]
    ce = -np.log(p[np.arange(BATCH), feeds["y_pos"]])
    neg = feeds["negative_mask"]
    nl = -(neg * np.log(1 - p)).sum(axis=1)  # Eq. 7: sum over y-; a row without negatives adds 0
    expected = np.mean(feeds["row_weights"] * ce + 0.7 * nl)  # Eq. 9, averaged over the batch
    assert session.run(["loss"], feeds)[0] == pytest.approx(expected, rel=1e-12)
    plain = {**feeds, "row_weights": np.ones(BATCH), "lambda_nl": np.asarray(0.0)}
    assert session.run(["loss"], plain)[0] == pytest.approx(np.mean(ce), rel=1e-12)


def test_negative_learning_keeps_its_gradient_where_the_model_is_most_confidently_wrong():
    """A negative class predicted with p = 1 - 1e-9: log(1 - p) stays finite and its gradient
    pushes the class's logit down (a clamp at 1 - 1e-6 gave exactly 0 there)."""
    grads = _session(gradient_model(HEAD, np.float64))
    feeds = _feeds(HEAD)
    feeds["head.out_proj.bias"] = np.array([0.0, 25.0, 0.0])  # class 1: p near 1 - 2e-11 on every row
    feeds["negative_mask"] = np.zeros_like(feeds["negative_mask"])
    feeds["negative_mask"][:, 1] = 1.0
    feeds["row_weights"] = np.zeros_like(feeds["row_weights"])  # the negative-learning term alone
    out = dict(zip([o.name for o in grads.get_outputs()], grads.run(None, feeds)))
    assert np.isfinite(out["loss"]) and out["loss"] > 5
    assert out["grad.head.out_proj.bias"][1] > 0.5  # descent lowers the wrongly sure logit


def _numpy_adamw(p, g, m, v, t, lr, wd, decay, b1=0.9, b2=0.999, eps=1e-8):
    if decay:
        p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, m, v


def test_training_steps_match_numpy_adamw_with_state_kept_as_ort_values():
    train, grads = _session(training_step_model(TOP, np.float64)), _session(gradient_model(TOP, np.float64))
    feeds = _feeds(TOP)
    params = {n: feeds.pop(n) for n in parameter_shapes(TOP)}
    lr = {"lr.head": 1e-2, "lr.encoder": 1e-3}
    ref = {n: (p, np.zeros_like(p), np.zeros_like(p)) for n, p in params.items()}
    state = {n: ort.OrtValue.ortvalue_from_numpy(p) for n, p in params.items()}
    for n, p in params.items():
        state[f"adam.m.{n}"] = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(p))
        state[f"adam.v.{n}"] = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(p))

    def scalar(value):
        out = ort.OrtValue.ortvalue_from_shape_and_type([], np.float64)
        out.update_inplace(np.asarray(value, np.float64))
        return out

    batch = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items() if k != "lambda_nl"}
    outputs = [o.name for o in train.get_outputs()]
    for t in (1, 2, 3):
        g = dict(zip([o.name for o in grads.get_outputs()], grads.run(None, {**feeds, **{n: r[0] for n, r in ref.items()}})))
        ref = {
            n: _numpy_adamw(*ref[n][:1], g[f"grad.{n}"], *ref[n][1:], t, lr["lr.encoder" if n.startswith("encoder.") else "lr.head"], 0.05, ref[n][0].ndim >= 2)
            for n in ref
        }
        extra = {"step": scalar(t), "weight_decay": scalar(0.05), "lambda_nl": scalar(0.7), **{k: scalar(v) for k, v in lr.items()}}
        result = dict(zip(outputs, train.run_with_ort_values(outputs, {**state, **batch, **extra})))
        state = {name: result[f"next.{name}"] for name in state}
    for n, (p, m, v) in ref.items():
        np.testing.assert_allclose(state[n].numpy(), p, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(state[f"adam.v.{n}"].numpy(), v, rtol=1e-10, atol=1e-15)


def test_training_steps_lower_the_loss_on_a_separable_problem():
    spec = ModelSpec(n_features=6, n_classes=3, hidden=16)
    session = _session(training_step_model(spec))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    x = (np.eye(3, 6)[y] * 3 + rng.normal(size=(60, 6)) * 0.3).astype(np.float32)
    feeds = {n: rng.uniform(-0.3, 0.3, s).astype(np.float32) for n, s in parameter_shapes(spec).items()}
    for n in parameter_shapes(spec):
        feeds[f"adam.m.{n}"] = feeds[f"adam.v.{n}"] = np.zeros_like(feeds[n])
    fixed = dict(x=x, y_pos=y, row_weights=np.ones(60, np.float32), negative_mask=np.zeros((60, 3), np.float32),
                 lambda_nl=np.array(0, np.float32), dropout_keep=np.ones((60, 16), np.float32), weight_decay=np.array(0.01, np.float32))
    fixed["lr.head"] = np.array(0.02, np.float32)
    names = [o.name for o in session.get_outputs()]
    losses = []
    for t in range(1, 31):
        out = dict(zip(names, session.run(None, {**feeds, **fixed, "step": np.array(t, np.float32)})))
        losses.append(float(out["loss"]))
        feeds = {k: out[f"next.{k}"] for k in feeds}
    assert losses[-1] < 0.1 * losses[0]
