"""Multi-label classifier graphs: the binary cross-entropy's gradients against finite
differences (head and top-layers), its value against the formula, sigmoid outputs, and an
OnnxClassifier that learns independent labels."""

import numpy as np
import onnxruntime as ort
import pytest

from mollia_edge.al.classifier import OnnxClassifier, fitted_state, from_fitted_state
from mollia_edge.al.graphs import EncoderSpec, ModelSpec, gradient_model, inference_model, parameter_shapes

HEAD = ModelSpec(n_features=6, n_classes=3, hidden=5, multi_label=True)
TOP = ModelSpec(n_features=8, n_classes=3, hidden=5, encoder=EncoderSpec((4, 5), width=8, n_heads=2, ffn=16),
                multi_label=True)
BATCH = 4


def _session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _feeds(spec, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {n: rng.normal(0, 0.8, s) for n, s in parameter_shapes(spec).items()}
    if spec.encoder is None:
        feeds["x"] = rng.normal(size=(BATCH, spec.n_features))
    else:
        feeds["hidden_states"] = rng.normal(size=(BATCH, 5, spec.n_features))
        feeds["attention_mask"] = np.array([[1, 1, 1, 0, 0], [1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], np.int64)
    feeds.update(
        y_multi=np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0.2, 1, 0.9]]),  # soft targets too
        label_mask=np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float64),
        row_weights=np.array([1.0, 0.5, 1.0, 0.3]),
        dropout_keep=(rng.random((BATCH, spec.hidden)) > 0.2) / 0.8,
    )
    return feeds


@pytest.mark.parametrize("spec", [HEAD, TOP], ids=["head", "top-layers"])
def test_bce_gradients_match_central_differences(spec):
    session = _session(gradient_model(spec, np.float64))
    feeds = _feeds(spec)
    analytic = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    rng, h = np.random.default_rng(1), 1e-6
    for name, shape in parameter_shapes(spec).items():
        for flat in rng.choice(int(np.prod(shape)), size=min(3, int(np.prod(shape))), replace=False):
            index = np.unravel_index(flat, shape)
            shifted = feeds[name].copy()
            shifted[index] += h
            plus = session.run(["loss"], {**feeds, name: shifted})[0]
            shifted[index] -= 2 * h
            minus = session.run(["loss"], {**feeds, name: shifted})[0]
            assert analytic[f"grad.{name}"][index] == pytest.approx((plus - minus) / (2 * h), rel=1e-4, abs=1e-8), name


def test_the_bce_follows_the_documented_formula_and_outputs_are_sigmoids():
    loss = _session(gradient_model(HEAD, np.float64))
    probe = _session(inference_model(HEAD, np.float64))
    feeds = _feeds(HEAD)
    p = probe.run(["probabilities"], {k: feeds[k] for k in [*parameter_shapes(HEAD), "x", "dropout_keep"]})[0]
    assert not np.allclose(p.sum(axis=1), 1.0)  # independent labels, not a softmax
    y, mask = feeds["y_multi"], feeds["label_mask"]
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    expected = np.mean(feeds["row_weights"] * (mask * bce).sum(axis=1)) / 3
    assert loss.run(["loss"], feeds)[0] == pytest.approx(expected, rel=1e-10)
    far = {**feeds, "head.out_proj.bias": np.array([80.0, -80.0, 0.0])}  # no overflow far from 0
    assert np.isfinite(loss.run(["loss"], far)[0])


def test_a_multi_label_classifier_learns_independent_labels_and_survives_its_fitted_state():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0.5, (x[:, 0] > 0) & (x[:, 2] > 0)], axis=1)  # co-occurring labels
    clf = OnnxClassifier("head", n_classes=3, hidden=32, epochs=60, learning_rate=0.01, multi_label=True, seed=1).fit(x[:200], y[:200])
    predicted = clf.predict(x[200:])
    assert predicted.shape == (100, 3) and predicted.dtype == bool
    assert np.mean(predicted == y[200:]) > 0.9
    assert predicted.sum(axis=1).max() >= 2  # several labels on one row
    again = from_fitted_state(*fitted_state(clf))
    np.testing.assert_allclose(again.predict_proba(x[200:]), clf.predict_proba(x[200:]), atol=1e-6)


def test_multi_label_targets_are_checked_up_front():
    from mollia_edge.errors import DataError

    clf = OnnxClassifier("head", n_classes=3, multi_label=True)
    with pytest.raises(DataError, match=r"targets in \[0, 1\]"):
        clf.fit(np.zeros((4, 2), np.float32), np.array([0, 1, 2, 1]))
