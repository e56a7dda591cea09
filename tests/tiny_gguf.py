"""Tiny random-weight ``llama`` GGUF models, so tests never need real model weights.

Vocabulary (SentencePiece-style, tokenizer model ``llama``)::

    0 <unk>   1 <s> (BOS)   2 </s> (EOS)
    3 <|im_start|>   4 <|im_end|> (EOT, end of generation)      only with chat_tokens=True
    then one token per byte value 0x00..0xFF: ``byte_token_id(b)``

Byte tokens are ``<0xNN>`` (type BYTE) except 0x20: llama.cpp's SPM tokenizer turns every
space into U+2581 "▁" before lookup, so the space token is the NORMAL piece "▁" (which
detokenizes to " "). Any text therefore tokenizes to one token per UTF-8 byte.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import gguf
import numpy as np

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
IM_START_ID, IM_END_ID = 3, 4
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
SPACE_PIECE = "\u2581"

#: The boost used by the ``tiny_model_path`` fixture: "a", "b" and both stop tokens
#: together take most of the next-token mass in every context.
STANDARD_BOOST: dict[bytes | str, float] = {"a": 6.0, "b": 5.0, "</s>": 6.0, "<|im_end|>": 5.0}

# Boost trick: dimension ANCHOR_DIM of every token embedding holds ANCHOR, which no layer
# reads or writes. It dominates the residual stream, so every RMSNorm divides by about
# ANCHOR / sqrt(n_embd); norm weights of ANCHOR / sqrt(n_embd) then make each norm an
# identity on the other dimensions, and the final norm maps the anchor to about 1.0.
ANCHOR_DIM = 0
ANCHOR = 1000.0
EMBD_STD = 0.5  # std of the other embedding dimensions
LAYER_STD = 0.1  # std of attention and feed-forward weights
OUTPUT_STD = 0.05  # std of the output projection (context-dependent part of the logits)
RMS_EPS = 1e-5


def byte_token_id(byte: int, *, chat_tokens: bool = True) -> int:
    """Token id of one UTF-8 byte value (0..255)."""
    if not 0 <= byte <= 255:
        raise ValueError(f"not a byte value: {byte}")
    return len(SPECIAL_TOKENS) + (len(CHAT_TOKENS) if chat_tokens else 0) + byte


def token_id(key: bytes | str, *, chat_tokens: bool = True) -> int:
    """Token id of a special token name (e.g. "</s>") or of a single byte/ASCII character."""
    specials = SPECIAL_TOKENS + (CHAT_TOKENS if chat_tokens else ())
    if key in specials:
        return specials.index(key)
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if len(raw) != 1:
        raise ValueError(f"{key!r} is neither a special token nor a single byte")
    return byte_token_id(raw[0], chat_tokens=chat_tokens)


def _vocab(chat_tokens: bool) -> tuple[list[str], list[gguf.TokenType]]:
    """Token texts and types in id order."""
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens = list(SPECIAL_TOKENS)
    if chat_tokens:
        tokens += CHAT_TOKENS
        types += [gguf.TokenType.CONTROL] * len(CHAT_TOKENS)
    for byte in range(256):
        if byte == 0x20:
            tokens.append(SPACE_PIECE)
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"<0x{byte:02X}>")
            types.append(gguf.TokenType.BYTE)
    return tokens, types


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx_train: int = 4096,
    boost: dict[bytes | str, float] | None = None,
    chat_tokens: bool = True,
) -> Path:
    """Write a float32 random-weight llama model to ``path``; same arguments, same bytes.

    ``boost`` maps tokens (see ``token_id``) to a logit offset added in every context:
    the final norm maps the constant anchor dimension to about 1.0 in every context, and a
    boosted token's output row weights that dimension by the given value.
    """
    if n_embd % n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    path = Path(path)
    tokens, types = _vocab(chat_tokens)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    identity_scale = ANCHOR / math.sqrt(n_embd)
    layer_norm = np.full(n_embd, identity_scale, np.float32)
    layer_norm[ANCHOR_DIM] = 0.0
    output_norm = np.full(n_embd, identity_scale, np.float32)
    output_norm[ANCHOR_DIM] = 1.0 / math.sqrt(n_embd)

    tensors: dict[str, np.ndarray] = {}
    tok_embd = normal(EMBD_STD, n_vocab, n_embd)
    tok_embd[:, ANCHOR_DIM] = ANCHOR
    tensors["token_embd.weight"] = tok_embd
    for i in range(n_layer):
        blk = f"blk.{i}"
        tensors[f"{blk}.attn_norm.weight"] = layer_norm
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors[f"{blk}.{name}.weight"] = normal(LAYER_STD, n_embd, n_embd)
        tensors[f"{blk}.ffn_norm.weight"] = layer_norm
        tensors[f"{blk}.ffn_gate.weight"] = normal(LAYER_STD, n_ff, n_embd)
        tensors[f"{blk}.ffn_up.weight"] = normal(LAYER_STD, n_ff, n_embd)
        tensors[f"{blk}.ffn_down.weight"] = normal(LAYER_STD, n_embd, n_ff)
        tensors[f"{blk}.attn_output.weight"][ANCHOR_DIM] = 0.0
        tensors[f"{blk}.ffn_down.weight"][ANCHOR_DIM] = 0.0
    tensors["output_norm.weight"] = output_norm
    output = normal(OUTPUT_STD, n_vocab, n_embd)
    output[:, ANCHOR_DIM] = 0.0
    for key, value in (boost or {}).items():
        output[token_id(key, chat_tokens=chat_tokens), ANCHOR_DIM] = value
    tensors["output.weight"] = output

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-random-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    if chat_tokens:
        writer.add_eot_token_id(IM_END_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def corrupt_copy(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], mode: str
) -> Path:
    """Copy a GGUF file damaged for error-handling tests.

    ``mode`` "truncate" keeps only the first half of the bytes; "garbage" overwrites the
    header (magic, version, counts) with junk.
    """
    data = Path(src).read_bytes()
    if mode == "truncate":
        damaged = data[: len(data) // 2]
    elif mode == "garbage":
        junk = b"NOT-A-GGUF-FILE!" * 2
        damaged = junk + data[len(junk) :]
    else:
        raise ValueError(f"unknown mode {mode!r}: use 'truncate' or 'garbage'")
    dst = Path(dst)
    dst.write_bytes(damaged)
    return dst
