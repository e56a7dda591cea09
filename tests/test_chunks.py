"""Long texts read whole: sentence chunks for the LLMs (signals combined) and for the encoder
(embeddings averaged), counted in the output, never cut silently."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mollia_edge.al.encoder import TOKENIZER_FILE, Encoder, cache_namespace, encoder_files_dir
from mollia_edge.chunks import chunk_spans, pack_chunks, split_sentences
from mollia_edge.config import LLMConfig
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.prompts import PromptSpec
from mollia_edge.llm.signals import TextSignals, combine_chunks
from mollia_edge.store import Store

WORDS = len  # a "tokenizer" that counts characters, for the pure tests
STORY = ("The film opens at dawn. A fisherman finds a box! Nobody knows who left it?\n\n"
         "Years later, his daughter opens it. Inside: a letter, unsigned.")


def test_sentences_split_after_their_end_and_join_back():
    parts = split_sentences(STORY)
    assert "".join(parts) == STORY
    assert parts[:3] == ["The film opens at dawn. ", "A fisherman finds a box! ", "Nobody knows who left it?\n\n"]
    assert split_sentences("no end") == ["no end"]


@pytest.mark.parametrize("budget", [1, 7, 30, 60, 500])
def test_chunks_stay_within_the_budget_and_give_the_text_back(budget):
    chunks = pack_chunks(STORY, WORDS, budget)
    assert "".join(chunks) == STORY
    assert all(WORDS(c) <= budget for c in chunks)
    if budget >= len(STORY):
        assert chunks == [STORY]


def test_whole_sentences_are_packed_before_a_sentence_is_cut():
    chunks = pack_chunks(STORY, WORDS, 60)
    assert chunks[0] == "The film opens at dawn. A fisherman finds a box! "
    assert all(c.rstrip().endswith((".", "!", "?")) for c in chunks)
    assert chunk_spans([1, 3, 2]) == [slice(0, 1), slice(1, 4), slice(4, 6)]


def test_chunk_signals_combine_by_mean_or_max():
    parts = [TextSignals(np.log([0.6, 0.1]), np.array([0.7, 0.1]), 0.2, ("a",)),
             TextSignals(np.log([0.2, 0.5]), np.array([0.3, 0.5]), 0.2, ("b",))]
    mean, top = combine_chunks(parts, "mean"), combine_chunks(parts, "max")
    np.testing.assert_allclose(mean.label_logprob, np.log([0.6 * 0.2, 0.1 * 0.5]) / 2)
    np.testing.assert_allclose(top.label_logprob, np.log([0.6, 0.5]))
    np.testing.assert_allclose(mean.consistency, [0.5, 0.3])
    assert mean.chunks == 2 and mean.answers == ("a", "b") and combine_chunks(parts[:1], "mean") is parts[0]


LONG = " ".join(f"Sentence number {i} says the film was fine." for i in range(12))
FAST = LLMConfig(n_ctx=2048, n_batch=128, n_seq_max=64, n_threads=1, max_text_tokens=120)


def _annotate(model, store, texts, **llm):
    spec = PromptSpec(labels=("a", "b"), chat_format="chatml")
    with LLMAnnotator(model, spec, dataclasses.replace(FAST, **llm), store) as annotator:
        return annotator.annotate(texts), annotator.computed


def test_a_long_text_is_read_in_chunks_whose_signals_it_combines(tiny_model_path, tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        whole, _ = _annotate(tiny_model_path, store, [LONG, "short"])
        assert whole.chunks.tolist()[1] == 1 and whole.chunks[0] > 1 and not whole.truncated.any()
        pieces = pack_chunks(LONG, lambda s: len(s.encode()), 120)  # the tiny model: one token per byte
        assert len(pieces) == whole.chunks[0]
        alone, _ = _annotate(tiny_model_path, store, pieces)
        np.testing.assert_allclose(whole.label_logprob[0], alone.label_logprob.mean(axis=0), atol=0.02)
        np.testing.assert_allclose(whole.consistency[0], alone.consistency.mean(axis=0), atol=0.02)
        top, _ = _annotate(tiny_model_path, store, [LONG], chunk_combine="max")
        np.testing.assert_allclose(top.label_logprob[0], alone.label_logprob.max(axis=0), atol=0.02)


def test_truncating_instead_is_recorded_and_a_cut_text_is_read_again_in_chunks(tiny_model_path, tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        cut, computed = _annotate(tiny_model_path, store, [LONG, "short"], long_texts="truncate")
        assert cut.truncated.tolist() == [True, False] and cut.chunks.tolist() == [1, 1] and computed == 2
        again, computed = _annotate(tiny_model_path, store, [LONG, "short"])
        assert computed == 1 and again.chunks[0] > 1 and not again.truncated[0]  # only the cut text
        _, computed = _annotate(tiny_model_path, store, [LONG, "short"], long_texts="truncate")
        assert computed == 1  # the chunked reading is not what truncation reads
        few, _ = _annotate(tiny_model_path, store, [LONG], max_chunks=2)
        assert few.chunks[0] == 2 and few.truncated[0]  # past max_chunks: cut, and said so


def test_a_long_texts_chunks_share_one_group_where_they_fit(tiny_model_path):
    medium = " ".join(f"Sentence number {i} says the film was fine." for i in range(4))  # two chunks
    spec = PromptSpec(labels=("a", "b"), chat_format="chatml")
    with LLMAnnotator(tiny_model_path, spec, FAST) as annotator:
        texts = ["one", medium, "two", LONG, "three"]
        hashes = [str(i) for i in range(len(texts))]
        jobs, _, counts = annotator._jobs(texts, hashes)
        assert counts[1] == 2 and counts[3] > 2
        ends = np.cumsum(annotator.engine.group_sizes(jobs, 16, counts)).tolist()
        starts = [0, *ends[:-1]]
        text_ends = np.cumsum(counts).tolist()
        long_jobs = range(text_ends[2], text_ends[3])  # too many cells for one group: groups of its own
        assert all(end in text_ends or end in long_jobs for end in ends)
        assert text_ends[2] in starts and text_ends[3] in starts
        assert sum(annotator.group_sizes(texts, hashes)) == len(texts)


def test_the_encoder_averages_the_chunks_of_a_long_text():
    if not (encoder_files_dir() / TOKENIZER_FILE).is_file():
        pytest.skip("encoder tokenizer not installed (run `make setup`)")
    chunked = Encoder(long_texts="chunk", max_length=32, intra_op_threads=1)
    cut = Encoder(long_texts="truncate", max_length=32, intra_op_threads=1)
    texts = ["short text", LONG]
    assert chunked.too_long(texts).tolist() == [False, True]
    a, b = chunked.encode(texts), cut.encode(texts)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    count = lambda s: len(chunked._counter.encode(s, add_special_tokens=False).ids)  # noqa: E731
    pieces = pack_chunks(LONG, count, 30)
    mean = cut.encode(pieces).mean(axis=0)
    np.testing.assert_allclose(a[1], mean / np.linalg.norm(mean), atol=1e-5)
    assert float(a[1] @ b[1]) < 0.999
    assert cache_namespace(chunked, True) != cache_namespace(cut, True)


def test_a_huge_word_is_cut_in_time_linear_in_its_length():
    """A 100,000-character word (a pasted hash, base64...) was cut by counting what was left of
    it again for each cut: minutes of tokenizing for one text. Each character is counted a few
    times now, and with ``most`` the chunks past it are not made at all."""
    counted = []

    def count(piece: str) -> int:  # one token per character
        counted.append(len(piece))
        return len(piece)

    word = "y" * 100_000
    chunks = pack_chunks(word, count, 1_000)
    assert "".join(chunks) == word and all(len(c) <= 1_000 for c in chunks)
    assert sum(counted) <= 10 * len(word), sum(counted)  # cut by recounting the rest: 100 times more
    counted.clear()
    first = pack_chunks(word + " and more. " * 2_000, count, 1_000, most=16)
    assert first[:16] == chunks[:16] and len(first) == 17 and sum(counted) <= 10 * len(word)
