"""The ONNX sentence encoder, its intermediate hidden states, and the on-disk embedding cache.

Tests that run the encoder need the tokenizer that set-up extracts (`make setup`); they are
skipped without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mollia_edge.al.encoder import (
    HIDDEN_STATE_OUTPUT,
    TOKENIZER_FILE,
    EmbeddingCache,
    Encoder,
    bert_config,
    encode_cached,
    encoder_files_dir,
    encoder_prefix_model,
    load_top_layers,
)
from mollia_edge.errors import ConfigError, ModelError

TEXTS = [
    "How do I reset my password?",
    "A slow, plodding drama that never finds its footing, despite a committed lead performance "
    "and some fine photography of the coast.",
    "meh",
    "Stocks fell sharply after the central bank raised rates again.",
    "Book me a flight to Paris next Tuesday.",
]
LONG_TEXT = " ".join(["the plot meanders and the characters are thin"] * 40)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    tokenizer = encoder_files_dir() / TOKENIZER_FILE
    if not tokenizer.is_file():
        pytest.skip(f"encoder tokenizer not installed at {tokenizer} (run `make setup`)")
    return Encoder()


def test_embeddings_have_one_unit_row_per_text(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert len(encoder.sha256) == 64


def test_rows_follow_input_order_despite_length_sorting(encoder: Encoder) -> None:
    together = encoder.encode(TEXTS, batch_size=2)
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_padding_in_a_batch_does_not_change_an_embedding(encoder: Encoder) -> None:
    alone = encoder.encode(["meh"], normalize=False)
    batched = encoder.encode(["meh", LONG_TEXT, TEXTS[1]], normalize=False)
    assert np.abs(batched[0] - alone[0]).max() < 1e-4


def test_long_texts_are_cut_at_max_length_keeping_cls_and_sep(encoder: Encoder) -> None:
    (tokens,) = encoder.tokenize([LONG_TEXT])
    assert len(tokens.ids) == encoder.max_length
    assert tokens.tokens[0] == "[CLS]" and tokens.tokens[-1] == "[SEP]"
    cut = encoder.encode([LONG_TEXT, LONG_TEXT + " but the ending is wonderful"])
    np.testing.assert_array_equal(cut[0], cut[1])


def test_hidden_states_are_padded_to_the_longest_text_and_index_by_row(encoder: Encoder) -> None:
    states = encoder.hidden_states(TEXTS, below_top=1, batch_size=2)
    lengths = [len(tokens.ids) for tokens in encoder.tokenize(TEXTS)]
    assert states.values.shape == (len(TEXTS), max(lengths), 384) and states.values.dtype == np.float32
    assert states.mask.dtype == np.int64 and states.mask.sum(axis=1).tolist() == lengths
    assert not states.values[states.mask == 0].any()
    picked = states[np.array([3, 0])]
    np.testing.assert_array_equal(picked.values[1], states.values[0])
    assert len(picked) == 2 and len(states[1]) == 1 and len(states[states.mask[:, -1] == 1]) == 1


def test_prefix_model_ends_at_the_input_of_the_top_layers() -> None:
    prefix = encoder_prefix_model(below_top=2)
    onnx.checker.check_model(prefix)
    assert [i.name for i in prefix.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    (output,) = prefix.graph.output
    assert output.name == HIDDEN_STATE_OUTPUT
    assert output.type.tensor_type.shape.dim[-1].dim_value == 384
    assert not any("encoder.layer.4." in name for node in prefix.graph.node for name in node.input)
    with pytest.raises(ConfigError):
        encoder_prefix_model(below_top=6)


def test_top_layer_weights_and_config(encoder: Encoder) -> None:
    config = bert_config()
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (384, 12, 1536)
    top = load_top_layers(1)
    assert len(top) == 16 and all(name.startswith("encoder.layer.5.") for name in top)
    assert top["encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)
    assert len(load_top_layers(2)) == 32
    with pytest.raises(ConfigError):
        load_top_layers(3)


def test_cache_encodes_each_text_once(encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    original = encoder.encode

    def counting_encode(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        encoded.extend(texts)
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting_encode)
    texts = [*TEXTS, TEXTS[0]]
    first = encode_cached(encoder, texts, EmbeddingCache(tmp_path))
    assert sorted(encoded) == sorted(TEXTS)
    (namespace,) = tmp_path.iterdir()
    (namespace / ".shard-0.npy.partial").write_bytes(b"left by a crash")
    again = encode_cached(encoder, texts, EmbeddingCache(tmp_path))
    assert sorted(encoded) == sorted(TEXTS)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, original(texts))
    raw = encode_cached(encoder, TEXTS[:1], EmbeddingCache(tmp_path), normalize=False)
    assert len(encoded) == len(TEXTS) + 1 and not np.isclose(np.linalg.norm(raw), 1.0)


def test_cache_merges_shards_without_losing_vectors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, max_shards=2)
    keys = [f"{i:064x}" for i in range(4)]
    vectors = np.arange(16, dtype=np.float32).reshape(4, 4)
    for key, vector in zip(keys, vectors):
        cache.add("space", [key], vector[None])
    assert len(list((tmp_path / "space").glob("shard-*.npy"))) <= 2
    found = cache.lookup("space", keys)
    np.testing.assert_array_equal(np.stack([found[key] for key in keys]), vectors)


def test_missing_tokenizer_tells_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLLIA_EDGE_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="tokenizer.json is missing; run `mollia-edge setup`"):
        Encoder()
    with pytest.raises(ModelError, match="mollia-edge setup"):
        load_top_layers()


def test_importing_the_encoder_loads_no_model_hub_client() -> None:
    probe = "import sys, mollia_edge.al.encoder; print(sorted({'huggingface_hub', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npz"


def test_embeddings_match_the_fp32_models_reference(encoder: Encoder) -> None:
    """The fp32 all-MiniLM-L6-v2 run by sentence-transformers (scripts/make_reference_embeddings.py,
    build time only) and the shipped int8 ONNX file point the same way: a wrong or damaged
    encoder file fails here."""
    import json

    with np.load(REFERENCE) as reference:
        texts, expected, max_length = json.loads(str(reference["texts"])), reference["embeddings"], int(reference["max_length"])
    assert max_length == encoder.max_length
    cosine = np.sum(encoder.encode(texts) * expected, axis=1)
    assert cosine.min() >= 0.99, cosine.round(4)
    others = expected[np.roll(np.arange(len(texts)), 1)]  # another text's reference: far from this one
    assert np.sum(encoder.encode(texts) * others, axis=1).max() < 0.9


def test_the_top_layers_graph_with_minilms_own_top_layer_is_the_encoders_forward_pass(encoder: Encoder) -> None:
    """The training graphs' encoder layer (al/graphs.py), given MiniLM's top layer and the hidden
    states below it, pools to the encoder's own embedding: the `top-layers` classifier starts
    from the encoder it claims to fine-tune."""
    import onnxruntime as ort

    from mollia_edge.al.graphs import EncoderSpec, ModelSpec, encoding_model

    config = bert_config()
    spec = ModelSpec(n_features=384, n_classes=2, encoder=EncoderSpec(
        layers=(5,), n_heads=config.num_attention_heads, layer_norm_eps=config.layer_norm_eps))
    session = ort.InferenceSession(encoding_model(spec, load_top_layers(1)).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    states = encoder.hidden_states(TEXTS, below_top=1)
    ours = session.run(["encoding"], {"hidden_states": states.values, "attention_mask": states.mask})[0]
    theirs = encoder.encode(TEXTS, normalize=False)
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosine.min() >= 0.99, cosine.round(4)
    transposed = {k: v.T.copy() if v.ndim == 2 else v for k, v in load_top_layers(1).items()}  # (in, out) read as (out, in)
    wrong = encoding_model(spec, transposed)
    broken = ort.InferenceSession(wrong.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["encoding"], {"hidden_states": states.values, "attention_mask": states.mask})[0]
    assert (np.sum(broken * theirs, axis=1) / (np.linalg.norm(broken, axis=1) * np.linalg.norm(theirs, axis=1))).min() < 0.9
