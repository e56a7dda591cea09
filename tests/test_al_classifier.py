"""OnnxClassifier: learning, robust-loss effects, determinism, MC dropout, noise, export."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mollia_edge.al.classifier import OnnxClassifier
from mollia_edge.al.graphs import EncoderSpec, ModelSpec, parameter_shapes
from mollia_edge.errors import ConfigError, DataError

K = 3


class FakeHiddenStates:
    """Stand-in for the cached hidden states: ``.values`` (n, T, E), ``.mask`` (n, T)."""

    def __init__(self, values, mask):
        self.values, self.mask = values, mask

    def __getitem__(self, rows):
        return FakeHiddenStates(self.values[rows], self.mask[rows])


def _blobs(n=120, d=10, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    return (np.eye(K, d)[y] * 2 + rng.normal(size=(n, d)) * noise).astype(np.float32), y


def _head(**settings):
    return OnnxClassifier(n_classes=K, **{"hidden": 16, "epochs": 15, "batch_size": 20, "learning_rate": 1e-2, **settings})


@pytest.fixture(scope="module")
def fitted():
    x, y = _blobs()
    return _head(seed=3).fit(x[:80], y[:80]), x, y


def test_head_learns_a_separable_problem(fitted):
    clf, x, y = fitted
    p = clf.predict_proba(x[80:])
    assert p.shape == (40, K) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (p.argmax(axis=1) == y[80:]).mean() >= 0.9
    assert clf.n_classes_ == K and clf.hidden(x[:7]).shape == (7, 16)
    assert clf.history_[-1]["train_loss"] < clf.history_[0]["train_loss"]


def test_same_seed_gives_identical_probabilities(fitted):
    clf, x, y = fitted
    again = _head(seed=3).fit(x[:80], y[:80])
    other = _head(seed=4).fit(x[:80], y[:80])
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))
    assert not np.array_equal(other.predict_proba(x), clf.predict_proba(x))


def test_negative_labels_push_their_class_down_and_weights_matter():
    x, y = _blobs(noise=2.0, seed=1)
    base = _head(epochs=5).fit(x, y)
    negatives = np.zeros((len(y), K))
    negatives[:, 0] = y != 0
    with_nl = _head(epochs=5).fit(x, y, negatives=negatives, lambda_nl=1.0)
    assert with_nl.predict_proba(x)[:, 0].mean() < base.predict_proba(x)[:, 0].mean()
    weights = np.where(y == 1, 0.1, 1.0)
    down = _head(epochs=5).fit(x, y, weights=weights)
    assert down.predict_proba(x)[:, 1].mean() < base.predict_proba(x)[:, 1].mean()


def test_early_stopping_keeps_the_best_epoch():
    x, y = _blobs(noise=2.0, seed=2)
    clf = _head(epochs=40, patience=2, learning_rate=5e-2).fit(x[:60], y[:60], x_val=x[60:], y_val=y[60:])
    val = [h["val_loss"] for h in clf.history_]
    assert len(val) < 40 and clf.best_epoch_ == int(np.argmin(val))
    p = clf.predict_proba(x[60:])
    assert -np.mean(np.log(p[np.arange(60), y[60:]])) == pytest.approx(min(val), rel=1e-5)


def test_early_stopping_on_accuracy_keeps_the_most_accurate_epoch():
    x, y = _blobs(noise=2.0, seed=2)
    clf = _head(epochs=30, patience=3, learning_rate=5e-2, early_stopping="accuracy")
    clf.fit(x[:60], y[:60], x_val=x[60:], y_val=y[60:])
    scores = [(h["val_accuracy"], -h["val_loss"]) for h in clf.history_]
    assert clf.best_epoch_ == max(range(len(scores)), key=scores.__getitem__)
    assert (clf.predict(x[60:]) == y[60:]).mean() == pytest.approx(max(scores)[0])
    with pytest.raises(ConfigError, match="early_stopping"):
        _head(early_stopping="f1")


def test_mc_dropout_and_weight_noise(fitted, monkeypatch):
    clf, x, _ = fitted
    samples = clf.posterior_samples(x[:9], n_samples=4, seed=0)
    assert samples.shape == (4, 9, K) and not np.allclose(samples[0], samples[1])
    np.testing.assert_array_equal(samples, clf.posterior_samples(x[:9], n_samples=4, seed=0))
    kept = clf.samples_from_features(clf.hidden(x[:9]), 4, seed=0)
    np.testing.assert_array_equal(samples, kept)
    np.testing.assert_allclose(samples.sum(axis=2), 1.0, atol=1e-6)
    monkeypatch.setattr(clf, "dropout", 0.0)  # keep every unit: each sample is the ONNX graph's output
    np.testing.assert_allclose(clf.posterior_samples(x[:9], 2, seed=0)[1], clf.predict_proba(x[:9]), atol=1e-6)
    noisy = clf.noisy_proba(x[:9], noise_scale=0.05, n_draws=3, seed=1)
    assert noisy.shape == (3, 9, K) and not np.allclose(noisy[0], noisy[1])


def test_a_posterior_sample_is_one_network_for_every_row(fitted):
    """BEMPS / CoreMSE: sample s comes from the same theta_s for every row, so two copies of a
    text get the same probabilities within a sample (and different ones across samples)."""
    clf, x, _ = fitted
    twins = np.concatenate([x[:1]] * 5)
    samples = clf.posterior_samples(twins, n_samples=6, seed=0)
    np.testing.assert_allclose(samples, np.repeat(samples[:, :1], 5, axis=1), atol=1e-6)
    assert not np.allclose(samples[0], samples[1])
    np.testing.assert_allclose(clf.noisy_proba(x[:9], 0.0, 1, 0)[0], clf.predict_proba(x[:9]), atol=1e-6)


def test_export_head_runs_in_plain_onnxruntime(fitted, tmp_path):
    clf, x, _ = fitted
    clf.export_inference(tmp_path / "head.onnx")
    session = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], {"x": x})[0], clf.predict_proba(x), atol=1e-6)


def test_invalid_inputs_say_what_to_do(fitted):
    clf, x, y = fitted
    with pytest.raises(ConfigError):
        OnnxClassifier("tail", n_classes=K)
    with pytest.raises(ConfigError, match="init_layers"):
        OnnxClassifier("top-layers", n_classes=K)
    with pytest.raises(DataError, match="0..2"):
        _head().fit(x, y + 1)
    with pytest.raises(DataError, match="negatives"):
        _head().fit(x, y, negatives=np.ones((len(y), 2)))
    with pytest.raises(DataError, match="width"):
        clf.predict_proba(x[:, :5])


# ---------------------------------------------------------------------------- top-layers mode
WIDTH, T, VOCAB = 8, 5, 11


def _tiny_layers(rng):
    spec = ModelSpec(WIDTH, K, encoder=EncoderSpec((5,), width=WIDTH, n_heads=2, ffn=16))
    layers = {}
    for name, shape in parameter_shapes(spec).items():
        if name.startswith("encoder."):
            layers[name] = (np.ones(shape) if name.endswith("LayerNorm.weight") else rng.normal(0, 0.3, shape)).astype(np.float32)
    return layers


def _fake_prefix(rng):
    """input_ids/attention_mask/token_type_ids -> embeddings (B, T, E), built with onnx.helper."""
    words, types = rng.normal(size=(VOCAB, WIDTH)), rng.normal(size=(2, WIDTH))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["words", "input_ids"], ["w"]),
         helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
         helper.make_node("Add", ["w", "t"], ["embedded"])],
        "fake_prefix",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"]) for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["b", "s", WIDTH])],
        [numpy_helper.from_array(words.astype(np.float32), "words"), numpy_helper.from_array(types.astype(np.float32), "types")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_top_layers_train_and_export_with_prefix(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    ids = rng.integers(0, VOCAB, (n, T))
    mask = (np.arange(T) < rng.integers(2, T + 1, n)[:, None]).astype(np.int64)
    y = ids[:, 0] % K
    prefix = _fake_prefix(rng)
    tokens = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    embedded = ort.InferenceSession(prefix.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, tokens)[0]
    x = FakeHiddenStates(embedded, mask)
    clf = OnnxClassifier("top-layers", n_classes=K, hidden=8, epochs=30, batch_size=10, learning_rate=1e-2,
                         encoder_learning_rate=1e-3, init_layers=_tiny_layers(rng), n_heads=2)
    clf.fit(x, y)
    assert clf.history_[-1]["train_loss"] < 0.5 * clf.history_[0]["train_loss"]
    assert clf.hidden(x).shape == (n, 8)
    clf.export_inference(tmp_path / "full.onnx", prefix_model=prefix)
    merged = onnx.load(str(tmp_path / "full.onnx"))
    assert [i.name for i in merged.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    session = ort.InferenceSession(str(tmp_path / "full.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], tokens)[0], clf.predict_proba(x), atol=1e-5)


def _padded(x, extra):
    """The same rows with ``extra`` more padding columns (zeros, mask 0)."""
    n, t, e = x.values.shape
    values = np.concatenate([x.values, np.zeros((n, extra, e), np.float32)], axis=1)
    return FakeHiddenStates(values, np.concatenate([x.mask, np.zeros((n, extra), np.int64)], axis=1))


def test_trimming_padding_changes_nothing_but_rounding(monkeypatch):
    import mollia_edge.al.classifier as classifier

    rng = np.random.default_rng(5)
    n, t = 60, 9
    lengths = rng.integers(1, t, n)  # no row uses the last column
    mask = (np.arange(t) < lengths[:, None]).astype(np.int64)
    x = FakeHiddenStates((rng.normal(size=(n, t, WIDTH)) * mask[:, :, None]).astype(np.float32), mask)
    y = rng.integers(0, K, n)
    settings = dict(n_classes=K, hidden=8, epochs=4, batch_size=16, learning_rate=1e-2, encoder_learning_rate=1e-3,
                    init_layers=_tiny_layers(rng), n_heads=2, seed=1)
    trimmed = OnnxClassifier("top-layers", **settings).fit(x, y, x_val=x[:10], y_val=y[:10])
    wide = _padded(x, 23)
    with monkeypatch.context() as patch:  # no trimming: every batch and chunk keeps all columns
        patch.setattr(classifier, "_real_width", lambda mask: mask.shape[1])
        untrimmed = OnnxClassifier("top-layers", **settings).fit(wide, y, x_val=wide[:10], y_val=y[:10])
        untrimmed_p = untrimmed.predict_proba(wide)
    assert untrimmed.best_epoch_ == trimmed.best_epoch_
    np.testing.assert_allclose(trimmed.predict_proba(x), untrimmed_p, atol=1e-5)
    np.testing.assert_allclose(trimmed.predict_proba(wide), trimmed.predict_proba(x), atol=1e-5)
    # chunks run in length order; results come back in row order, one row alone gives the same
    one_by_one = np.concatenate([trimmed.predict_proba(x[[i]]) for i in range(n)])
    np.testing.assert_allclose(one_by_one, trimmed.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(trimmed.posterior_samples(x, 2, seed=3), trimmed.posterior_samples(wide, 2, seed=3), atol=1e-5)


def test_length_bucketed_batches_cover_every_row_once():
    from mollia_edge.al.classifier import bucketed_batches

    lengths = np.random.default_rng(0).integers(2, 40, 233)
    batches = bucketed_batches(lengths, 20, 4, np.random.default_rng(1))
    assert sorted(len(b) for b in batches) == [13] + [20] * 11
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(233))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)  # similar lengths share a batch
    again = bucketed_batches(lengths, 20, 4, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_top_layers_with_length_buckets_learns():
    rng = np.random.default_rng(2)
    n = 60
    lengths = rng.integers(2, T + 1, n)
    mask = (np.arange(T) < lengths[:, None]).astype(np.int64)
    y = rng.integers(0, K, n)
    values = (rng.normal(size=(n, T, WIDTH)) * 0.3 + np.eye(K, WIDTH)[y][:, None, :] * 2) * mask[:, :, None]
    x = FakeHiddenStates(values.astype(np.float32), mask)
    clf = OnnxClassifier("top-layers", n_classes=K, hidden=8, epochs=20, batch_size=10, learning_rate=1e-2,
                         encoder_learning_rate=1e-3, init_layers=_tiny_layers(rng), n_heads=2, length_buckets=3)
    clf.fit(x, y)
    assert (clf.predict(x) == y).mean() >= 0.9
    with pytest.raises(ConfigError, match="length_buckets"):
        OnnxClassifier(n_classes=K, length_buckets=-1)


def test_heads_averaged_are_one_head_with_the_members_mean_logits(tmp_path):
    from mollia_edge.al.classifier import average_heads

    x, y = _blobs(noise=1.5, seed=4)
    members = [_head(seed=s).fit(x[:80], y[:80]) for s in range(3)]
    mean = average_heads(members)
    assert mean.spec_.hidden == 48 and mean.members_ == 3
    logits = np.mean([np.log(m.predict_proba(x[80:])) for m in members], axis=0)  # log-softmax: logits up to a row shift
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(mean.predict_proba(x[80:]), expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    mean.export_inference(tmp_path / "mean.onnx")  # runs and exports like any head
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "mean.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: x[80:] for i in session.get_inputs() if i.name == "x"}
    np.testing.assert_allclose(session.run(["probabilities"], feeds)[0], mean.predict_proba(x[80:]), atol=1e-5)
    with pytest.raises(ConfigError, match="fitted head-mode"):
        average_heads([])
