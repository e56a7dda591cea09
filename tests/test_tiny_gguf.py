"""Checks of the tiny GGUF test model itself."""

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from tiny_gguf import (
    BOS_ID,
    EOS_ID,
    IM_END_ID,
    IM_START_ID,
    STANDARD_BOOST,
    byte_token_id,
    corrupt_copy,
    token_id,
    write_tiny_gguf,
)

PROMPTS = [
    b"Review: a great film.\nLabel:",
    b"<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    b"zzzz qqq 123",
]


@pytest.fixture
def llm(tiny_model_path: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(
        model_path=str(tiny_model_path), n_ctx=512, logits_all=True, verbose=False
    )
    yield model
    model.close()


def next_token_probs(llm: llama_cpp.Llama, prompt: bytes) -> np.ndarray:
    """Next-token distribution (temperature 1) after ``prompt``."""
    tokens = llm.tokenize(prompt, special=True)
    llm.reset()
    llm.eval(tokens)
    logits = np.asarray(llm.scores[len(tokens) - 1], dtype=np.float64)
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


def test_text_tokenizes_to_bytes_and_round_trips(llm: llama_cpp.Llama) -> None:
    assert llm.tokenize(b"ab c", add_bos=True) == [BOS_ID] + [byte_token_id(b) for b in b"ab c"]
    text = "héllo\n wörld <0x41>".encode()
    tokens = llm.tokenize(text, add_bos=False)
    assert tokens == [byte_token_id(b) for b in text]
    assert llm.detokenize(tokens) == text
    # SentencePiece escapes " " as "▁" before lookup, so a literal "▁" reads as a space.
    assert llm.tokenize("▁".encode(), add_bos=False) == [byte_token_id(ord(" "))]
    all_bytes = bytes(range(256))
    assert llm.detokenize(llm.tokenize(all_bytes, add_bos=False)) == all_bytes


def test_special_tokens(llm: llama_cpp.Llama) -> None:
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == [IM_END_ID]
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=False) != [IM_END_ID]
    assert (llm.token_bos(), llm.token_eos()) == (BOS_ID, EOS_ID)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    assert eog == [EOS_ID, IM_END_ID]
    assert not llama_cpp.llama_vocab_is_eog(vocab, IM_START_ID)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf", seed=3, boost=STANDARD_BOOST).read_bytes()
    second = write_tiny_gguf(tmp_path / "b.gguf", seed=3, boost=STANDARD_BOOST).read_bytes()
    other = write_tiny_gguf(tmp_path / "c.gguf", seed=4, boost=STANDARD_BOOST).read_bytes()
    assert first == second
    assert first != other
    assert len(first) < 1_000_000


def test_boosted_tokens_dominate_but_context_matters(llm: llama_cpp.Llama) -> None:
    boosted = sorted(token_id(key) for key in STANDARD_BOOST)
    distributions = [next_token_probs(llm, prompt) for prompt in PROMPTS]
    for probs in distributions:
        assert sorted(np.argsort(-probs)[: len(boosted)]) == boosted
        assert probs[boosted].sum() > 0.5
        assert all(0.01 < probs[t] < 0.8 for t in boosted)
    assert not np.allclose(distributions[0], distributions[1], atol=1e-3)


def test_plain_model_has_no_favourites(tiny_model_path_plain: Path) -> None:
    llm = llama_cpp.Llama(
        model_path=str(tiny_model_path_plain), n_ctx=512, logits_all=True, verbose=False
    )
    try:
        probs = next_token_probs(llm, PROMPTS[0])
    finally:
        llm.close()
    assert probs.max() < 0.1


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
def test_corrupt_copy_fails_to_load(tiny_model_path: Path, tmp_path: Path, mode: str) -> None:
    bad = corrupt_copy(tiny_model_path, tmp_path / f"{mode}.gguf", mode)
    with pytest.raises(ValueError, match="Failed to load model"):
        llama_cpp.Llama(model_path=str(bad), verbose=False)


def test_corrupt_copy_rejects_unknown_mode(tiny_model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        corrupt_copy(tiny_model_path, tmp_path / "x.gguf", "shuffle")
