"""The llama.cpp engine against independent computations on a tiny random-weight model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from llama_cpp import Llama

from mollia_edge.errors import ModelError
from mollia_edge.llm.engine import LlamaEngine, PrefixStates, ScoringJob
from mollia_edge.llm.prompts import PromptSpec
from tiny_gguf import corrupt_copy

LABELS = ("a", "b", "ab", "ba b")  # one-token and multi-token labels (the vocabulary is bytes)
TEXTS = ["great film", "dull and far too long", "zzz", "a b a b", "ok", "The end.\nCredits"]
SAMPLING = {"temperature": 0.7, "top_p": 0.9}


@pytest.fixture(scope="module")
def engine(tiny_model_path: Path) -> LlamaEngine:
    # n_batch 256 makes prompts and continuations span several llama_decode calls
    with LlamaEngine(tiny_model_path, n_ctx=4096, n_batch=256, n_seq_max=256, n_threads=1) as e:
        yield e


def _jobs(engine: LlamaEngine, chat_format: str, n_samples: int = 0,
          saved: PrefixStates | None = None) -> list[ScoringJob]:
    spec = PromptSpec(labels=LABELS, item="review", chat_format=chat_format)
    before, after = spec.split()
    engine.set_prefix(engine.tokenize(before, add_bos=True, special=True), saved)
    continuations = [engine.tokenize_continuation(spec.answer(label)) for label in LABELS]
    return [
        ScoringJob(
            prompt_tokens=engine.tokenize(spec.render(text), add_bos=True, special=True),
            continuations=continuations,
            n_samples=n_samples,
            seed=i,
        )
        for i, text in enumerate(TEXTS)
    ]


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    peak = row.max()
    return row - peak - np.log(np.exp(row - peak).sum())


@pytest.fixture(scope="module")
def naive(tiny_model_path: Path) -> Llama:
    return Llama(
        model_path=str(tiny_model_path), n_ctx=1024, logits_all=True, flash_attn=True, n_threads=1, verbose=False
    )


def _naive_label_logprob(llm: Llama, prompt: list[int], continuation: list[int]) -> float:
    """Prompt and label evaluated from scratch with the high-level API, every position's logits."""
    llm.reset()
    llm.eval(prompt + continuation)
    scores = np.array(llm.scores[: len(prompt) + len(continuation)])
    return sum(
        _log_softmax(scores[len(prompt) - 1 + j])[token] for j, token in enumerate(continuation)
    )


@pytest.mark.parametrize("chat_format", ["chatml", "none"])
def test_label_logprob_equals_naive_evaluation_batched_and_one_by_one(engine, naive, chat_format):
    jobs = _jobs(engine, chat_format)
    assert [len(c) for c in jobs[0].continuations] == [1, 1, 2, 4] if chat_format == "chatml" else [2, 2, 3, 5]
    batched = engine.run(jobs, **SAMPLING, max_new_tokens=8)
    one_by_one = [engine.run([job], **SAMPLING, max_new_tokens=8)[0] for job in jobs]
    for job, together, alone in zip(jobs, batched, one_by_one):
        expected = [
            _naive_label_logprob(naive, list(job.prompt_tokens), list(c)) for c in job.continuations
        ]
        np.testing.assert_allclose(together.label_logprob, expected, atol=1e-3)
        np.testing.assert_allclose(alone.label_logprob, expected, atol=1e-3)


def test_exact_consistency_matches_frequency_of_real_samples(engine):
    """2,400 answers drawn by llama.cpp's own sampler vs the T→∞ expectation."""
    job = _jobs(engine, "chatml")[0]
    draws = [ScoringJob(job.prompt_tokens, job.continuations, n_samples=200, seed=s) for s in range(12)]
    results = engine.run(draws, **SAMPLING, max_new_tokens=8)
    samples = [tuple(tokens) for r in results for tokens in r.samples]
    assert len(samples) == 2400
    expected = results[0].label_sample_prob
    assert all(np.array_equal(r.label_sample_prob, expected) for r in results)
    assert expected[:3].min() > 0.01  # the boosted labels are likely enough to test
    for k, continuation in enumerate(job.continuations):
        observed = samples.count(tuple(continuation)) / len(samples)
        standard_error = np.sqrt(max(expected[k] * (1 - expected[k]), 1e-4) / len(samples))
        assert abs(observed - expected[k]) <= 3 * standard_error, (LABELS[k], observed, expected[k])


def test_samples_are_reproducible_and_independent_of_batch_mates(engine):
    jobs = _jobs(engine, "chatml", n_samples=10)
    together = engine.run(jobs, **SAMPLING, max_new_tokens=8)
    alone = engine.run(jobs[2:3], **SAMPLING, max_new_tokens=8)[0]
    assert together[2].samples == alone.samples
    assert engine.run(jobs, **SAMPLING, max_new_tokens=8)[0].samples == together[0].samples
    assert together[0].samples != together[1].samples  # other seed, other draws


def test_sampled_answers_never_exceed_max_new_tokens(engine):
    job = _jobs(engine, "chatml", n_samples=50)[0]
    (result,) = engine.run([job], temperature=2.0, top_p=1.0, max_new_tokens=3)
    assert all(len(s) <= 4 for s in result.samples)
    assert any(s and s[-1] is None for s in result.samples)  # marked as never finished


def test_prefix_is_evaluated_once_and_reused(engine, naive):
    jobs = _jobs(engine, "none")
    engine.set_prefix(engine._prefix)  # unchanged prefix: nothing evaluated, nothing cleared
    first = engine.run(jobs[:1], **SAMPLING, max_new_tokens=8)[0]
    expected = [_naive_label_logprob(naive, list(jobs[0].prompt_tokens), list(c)) for c in jobs[0].continuations]
    np.testing.assert_allclose(first.label_logprob, expected, atol=1e-3)


def test_a_reloaded_model_restores_its_saved_prefix_and_gives_the_same_numbers(tiny_model_path, monkeypatch):
    """Models taking turns: the second engine on the file restores the prefix's KV state
    (no evaluation) and scores and samples every text exactly as the first did."""
    evaluated = []
    real = LlamaEngine._evaluate_prefix
    monkeypatch.setattr(LlamaEngine, "_evaluate_prefix", lambda self, tokens: (evaluated.append(len(tokens)), real(self, tokens))[1])
    saved, runs = PrefixStates(), []
    for _ in range(2):
        with LlamaEngine(tiny_model_path, n_ctx=4096, n_batch=256, n_seq_max=256, n_threads=1) as e:
            jobs = _jobs(e, "chatml", n_samples=3, saved=saved)
            runs.append(e.run(jobs, **SAMPLING, max_new_tokens=8))
    assert saved.restored == 1 and len(evaluated) == 1
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first.label_logprob, second.label_logprob)
        assert first.samples == second.samples


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
def test_corrupt_model_file_gives_one_clear_error(tiny_model_path, tmp_path, mode):
    broken = corrupt_copy(tiny_model_path, tmp_path / "broken.gguf", mode)
    with pytest.raises(ModelError) as error:
        LlamaEngine(broken, n_ctx=512)
    message = str(error.value)
    assert "cannot load model" in message and "broken.gguf" in message and "\n" not in message


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        LlamaEngine(tmp_path / "absent.gguf")
