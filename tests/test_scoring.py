"""Nucleus maths against a brute-force reference; next-token stats; answer normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from mollia_edge.llm.scoring import answer_shares, next_token_stats, normalise_answer, nucleus


def _reference_nucleus(logits: np.ndarray, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Full stable sort of softmax(logits / T); smallest prefix with cumulative prob >= top_p
    (every token when top_p >= 1, as llama.cpp's sampler)."""
    probs = softmax(logits.astype(np.float64) / temperature)
    order = np.argsort(-probs, kind="stable")
    if top_p >= 1:
        return order, probs[order]
    reached = np.cumsum(probs[order]) >= top_p
    size = int(np.argmax(reached)) + 1 if reached.any() else probs.size
    kept = order[:size]
    return kept, probs[kept] / probs[kept].sum()


def _logits(kind: str, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = {"flat": 0.01, "normal": 2.0, "peaked": 40.0}[kind]
    logits = rng.normal(scale=scale, size=size)
    if kind == "peaked":
        logits[rng.integers(size)] += 30.0
    return logits.astype(np.float32)


@pytest.mark.parametrize("size", [50, 50_000])
@pytest.mark.parametrize("kind", ["flat", "normal", "peaked"])
@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.0, 0.5), (0.7, 1.0), (2.0, 0.99)])
def test_nucleus_matches_brute_force(size: int, kind: str, temperature: float, top_p: float) -> None:
    for seed in range(2):
        logits = _logits(kind, size, seed)
        kept, prob = nucleus(logits, temperature, top_p)
        ref_kept, ref_prob = _reference_nucleus(logits, temperature, top_p)
        # float32 arithmetic, as in llama.cpp: near-ties may swap places, never membership
        by_id, ref_by_id = np.argsort(kept), np.argsort(ref_kept)
        np.testing.assert_array_equal(kept[by_id], ref_kept[ref_by_id])
        np.testing.assert_allclose(prob[by_id], ref_prob[ref_by_id], rtol=1e-5, atol=1e-12)
        assert prob.sum() == pytest.approx(1.0, abs=1e-12)
        assert np.all(np.diff(prob) <= 0)


def test_nucleus_keeps_every_token_of_a_flat_distribution_at_top_p_one() -> None:
    kept, prob = nucleus(_logits("flat", 50_000, 0), 0.7, 1.0)
    assert sorted(kept.tolist()) == list(range(50_000))
    assert prob.min() > 0


def test_nucleus_keeps_only_the_top_token_of_a_peaked_distribution() -> None:
    logits = np.zeros(1000)
    logits[123] = 50.0
    kept, prob = nucleus(logits, 0.7, 0.9)
    assert kept.tolist() == [123]
    assert prob.tolist() == [1.0]


def test_nucleus_stops_at_the_first_prefix_reaching_top_p() -> None:
    probs = np.array([0.1, 0.5, 0.3, 0.1])
    kept, prob = nucleus(np.log(probs), 1.0, 0.79)
    assert kept.tolist() == [1, 2]
    np.testing.assert_allclose(prob, [0.625, 0.375])
    kept, _ = nucleus(np.log(probs), 1.0, 0.81)
    assert kept.tolist() == [1, 2, 0]


def test_next_token_stats_logprob_sample_prob_and_stop_prob() -> None:
    logits = _logits("normal", 5000, 7)
    temperature, top_p = 0.7, 0.9
    kept, kept_prob = _reference_nucleus(logits, temperature, top_p)
    outside = np.setdiff1d(np.arange(logits.size), kept)
    tokens = [int(kept[0]), int(kept[2]), int(outside[0]), int(kept[0])]
    stop_mask = np.zeros(logits.size, dtype=bool)
    stop_mask[[kept[1], kept[3], outside[1]]] = True

    stats = next_token_stats(logits, tokens, stop_mask, temperature, top_p)

    np.testing.assert_allclose(stats.logprob, log_softmax(logits.astype(np.float64))[tokens], atol=1e-5)
    np.testing.assert_allclose(stats.sample_prob, [kept_prob[0], kept_prob[2], 0.0, kept_prob[0]], rtol=1e-6)
    assert stats.sample_prob[2] == 0.0
    assert stats.stop_prob == pytest.approx(kept_prob[1] + kept_prob[3], rel=1e-6)


def test_next_token_stats_without_stop_mask_has_zero_stop_prob() -> None:
    logits = np.array([3.0, 2.0, 1.0, 0.0])
    stats = next_token_stats(logits, [0, 3], None, 1.0, 1.0)
    assert stats.stop_prob == 0.0
    np.testing.assert_allclose(stats.logprob, log_softmax(logits)[[0, 3]], rtol=1e-6)
    np.testing.assert_allclose(stats.sample_prob, softmax(logits)[[0, 3]], rtol=1e-6)


# --- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Positive", "positive"),
        ("  positive\n", "positive"),
        ('"negative"', "negative"),
        ("'Negative'", "negative"),
        ("“positive”", "positive"),
        ("positive.", "positive"),
        ("positive!", "positive"),
        ("Label: Positive", "positive"),
        ("Category: sports", "sports"),
        ("Output:positive", "positive"),
        ("the positive", "positive"),
        ("The Positive.", "positive"),
        ("an entity", "entity"),
        ("**positive**", "positive"),
        ("**Positive**.", "positive"),
        ('"positive."', "positive"),
        ("human,  entity", "human, entity"),
        ("Science  and\ttechnology", "science and technology"),
        ("theory", "theory"),
    ],
)
def test_normalise_answer(answer: str, expected: str) -> None:
    assert normalise_answer(answer) == expected


def test_answer_shares_counts_normalised_matches_and_the_invalid_share() -> None:
    shares, invalid = answer_shares(["Positive", '"negative"', "human, entity", "positive."], ("negative", "positive"))
    np.testing.assert_allclose(shares, [0.25, 0.5])
    assert invalid == pytest.approx(0.25)
    assert shares.sum() + invalid == pytest.approx(1.0)


def test_answer_shares_normalises_the_labels_too() -> None:
    shares, invalid = answer_shares(["world", "sci/tech", "Sci/Tech"], ("World", "Sci/Tech"))
    np.testing.assert_allclose(shares, [1 / 3, 2 / 3])
    assert invalid == pytest.approx(0.0)


def test_answer_shares_of_no_answers_is_all_invalid() -> None:
    shares, invalid = answer_shares([], ("negative", "positive"))
    assert shares.tolist() == [0.0, 0.0]
    assert invalid == 1.0
