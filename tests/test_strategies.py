"""Query strategies on fake classifiers whose outputs are known row by row."""

from __future__ import annotations

import numpy as np
import pytest

from mollia_edge.al.strategies import (
    BEMPS,
    STRATEGIES,
    BreakingTies,
    CoreSet,
    EntropySampling,
    NoiseStability,
    QueryStrategy,
    RandomSampling,
    coremse_scores,
    greedy_k_center,
    kmeans,
    make_strategy,
    noise_stability,
)
from mollia_edge.errors import ConfigError, DataError


class TableClassifier:
    """Fake classifier over ``dataset = np.arange(rows)``: every output is looked up by row id.

    ``proba`` (rows, K), ``hidden`` (rows, H), ``samples`` (S, rows, K), ``noisy`` (D, rows, K);
    anything not given is derived from ``proba``.
    """

    def __init__(self, proba, hidden=None, samples=None, noisy=None):
        self.proba = np.asarray(proba, dtype=float)
        self.n_classes_ = self.proba.shape[1]
        self._hidden = self.proba if hidden is None else np.asarray(hidden, dtype=float)
        self.samples = samples
        self.noisy = noisy

    def predict_proba(self, x):
        return self.proba[x]

    def hidden(self, x):
        return self._hidden[x]

    def posterior_samples(self, x, n_samples, seed):
        if self.samples is not None:
            return self.samples[:n_samples, x]
        rng = np.random.default_rng(seed)
        logits = np.log(self.proba[x]) + rng.normal(0, 0.5, (n_samples, len(x), self.n_classes_))
        return softmax(logits)

    def noisy_proba(self, x, noise_scale, n_draws, seed):
        if self.noisy is not None:
            return self.noisy[:n_draws, x]
        rng = np.random.default_rng(seed)
        shift = rng.normal(0, 1, (n_draws, 1, self.n_classes_))  # the same draw for every row
        sensitivity = (np.asarray(x) % 7)[:, None]  # per row, so rows differ in stability
        return softmax(np.log(self.proba[x]) + 100 * noise_scale * shift * sensitivity)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_clf(rows=60, k=3, seed=0):
    return TableClassifier(np.random.default_rng(seed).dirichlet(np.ones(k), rows))


ALL = sorted(STRATEGIES)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n_labelled", [0, 8])
def test_exactly_n_distinct_from_the_pool_and_seeded(name, n_labelled):
    clf = random_clf()
    data = np.arange(60)
    labelled = np.arange(0, 2 * n_labelled, 2)
    pool = np.setdiff1d(data, labelled)[::-1]  # order must not matter
    y = np.zeros(n_labelled, dtype=int)
    for n in (1, 7, len(pool)):
        got = make_strategy(name, 3).query(clf, data, pool, labelled, y, n)
        assert got.dtype == np.int64 and got.shape == (n,)
        assert len(np.unique(got)) == n and np.isin(got, pool).all()
        again = make_strategy(name, 3).query(clf, data, pool[::-1].tolist(), labelled, y, n)
        np.testing.assert_array_equal(got, again)


def test_random_depends_on_the_seed_only():
    clf, data, pool = random_clf(), np.arange(60), np.arange(60)
    draws = {tuple(RandomSampling(seed).query(clf, data, pool, [], [], 10)) for seed in range(5)}
    assert len(draws) == 5


def test_entropy_and_breaking_ties_pick_the_known_rows():
    proba = np.array(
        [
            [0.98, 0.01, 0.01],
            [0.40, 0.30, 0.30],  # highest entropy, margin 0.1
            [0.50, 0.49, 0.01],  # smallest margin
            [0.90, 0.05, 0.05],
            [0.40, 0.35, 0.25],  # second entropy, margin 0.05
            [0.60, 0.30, 0.10],  # margin 0.3
        ]
    )
    clf, data = TableClassifier(proba), np.arange(6)
    assert EntropySampling().query(clf, data, np.arange(6), [], [], 2).tolist() == [1, 4]
    assert BreakingTies().query(clf, data, np.arange(6), [], [], 2).tolist() == [2, 4]
    assert BreakingTies().query(clf, data, [0, 3, 5], [], [], 1).tolist() == [5]


def test_ties_go_to_the_smallest_row_index():
    clf, data = TableClassifier(np.full((10, 2), 0.5)), np.arange(10)
    for strategy in (EntropySampling(), BreakingTies()):
        assert strategy.query(clf, data, [9, 4, 7, 2, 5], [], [], 3).tolist() == [2, 4, 5]


def test_coreset_goes_to_the_far_clusters_first():
    rng = np.random.default_rng(0)
    near = rng.normal(0, 0.1, (30, 2))
    far_a = rng.normal(0, 0.1, (3, 2)) + [10, 0]
    far_b = rng.normal(0, 0.1, (3, 2)) + [0, -6]
    hidden = np.vstack([near, far_a, far_b])
    clf = TableClassifier(np.full((36, 2), 0.5), hidden=hidden)
    got = CoreSet(0).query(clf, np.arange(36), np.arange(10, 36), np.arange(10), np.zeros(10, int), 2)
    assert 30 <= got[0] < 33 and got[1] >= 33


def test_greedy_k_center_without_centres_is_exact_even_with_duplicates():
    features = np.zeros((12, 3))
    features[5] = 1.0
    got = greedy_k_center(features, 12, np.empty((0, 3)), first=3)
    assert got[0] == 3 and got[1] == 5 and sorted(got) == list(range(12))


def test_noise_stability_returns_exactly_n_and_prefers_unstable_rows():
    rows, draws, k = 40, 10, 3
    rng = np.random.default_rng(1)
    clean = rng.dirichlet(np.ones(k), rows)
    noisy = np.repeat(clean[None], draws, axis=0)
    noisy[:, 17] = rng.dirichlet(np.ones(k), draws)  # the only unstable row
    clf, data = TableClassifier(clean, noisy=noisy), np.arange(rows)
    got = NoiseStability(0).query(clf, data, np.arange(rows), [], [], 1)
    assert got.tolist() == [17]
    # most rows coincide (zero change): a naive budget would stop early; 35 are still returned
    got = NoiseStability(0).query(clf, data, np.arange(5, rows), np.arange(5), np.zeros(5, int), 35)
    assert len(np.unique(got)) == 35 and got[0] == 17
    direct = noise_stability(clean, noisy, clean[:0], noisy[:, :0], rows)
    assert sorted(direct) == list(range(rows))


def brute_force_rr(samples, reference):
    """rr(x, x') (N, R) straight from the definition in coremse_scores."""
    s, n, k = samples.shape
    u = np.full(s, 1 / s)

    def q(w, xp):  # expected MSE of the w-weighted predictive on reference row xp
        pred = reference[:, xp]  # (S, K)
        return float(np.sum(w * ((pred - w @ pred) ** 2).sum(axis=1)))

    rr = np.zeros((n, reference.shape[1]))
    for x in range(n):
        for xp in range(reference.shape[1]):
            after = 0.0
            for y in range(k):
                p_y = samples[:, x, y].mean()
                if p_y > 0:
                    after += p_y * q(samples[:, x, y] / samples[:, x, y].sum(), xp)
            rr[x, xp] = q(u, xp) - after
    return rr


def test_coremse_scores_equal_the_definition():
    rng = np.random.default_rng(2)
    samples = rng.dirichlet(np.ones(3), (4, 9))  # S=4, N=9, K=3
    samples[:, 0] = [1.0, 0.0, 0.0]  # a row every sample agrees on (zero probabilities too)
    reference = samples[:, [1, 4, 6, 7]]
    rr = brute_force_rr(samples, reference)
    total, coords = coremse_scores(samples, reference, chunk=4)
    np.testing.assert_allclose(total, rr.sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(coords @ coords.T, rr @ rr.T, atol=1e-12)  # isometric
    assert (rr >= -1e-12).all() and abs(total[0]) < 1e-12


def test_bemps_prefers_rows_whose_label_moves_the_ensemble():
    rows, s = 200, 5
    rng = np.random.default_rng(3)
    samples = np.empty((s, rows, 2))
    # rows 0-99: the samples agree (half confident, half all at 0.5): a label changes nothing
    samples[:, :50] = [0.95, 0.05]
    samples[:, 50:100] = [0.5, 0.5]
    # rows 100-199: the samples disagree, so a label reweights them
    p = rng.uniform(0.05, 0.95, (s, 100))
    samples[:, 100:, 0], samples[:, 100:, 1] = p, 1 - p
    clf, data = TableClassifier(samples.mean(axis=0), samples=samples), np.arange(rows)
    got = BEMPS(0).query(clf, data, np.arange(rows), [], [], 8)
    assert (got >= 100).all() and len(np.unique(got)) == 8
    # entropy instead goes for the aleatoric 0.5/0.5 rows
    assert (EntropySampling().query(clf, data, np.arange(rows), [], [], 8) < 100).all()


def test_bemps_fills_duplicate_nearest_rows_with_top_scores():
    samples = np.full((5, 30, 2), 0.5)  # no disagreement anywhere: all scores and vectors are 0
    clf = TableClassifier(samples[0], samples=samples)
    got = BEMPS(1).query(clf, np.arange(30), np.arange(30), [], [], 6)
    assert got.tolist() == [0, 1, 2, 3, 4, 5]


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(4)
    points = np.vstack([rng.normal(c, 0.05, (20, 2)) for c in ([0, 0], [5, 5], [0, 5])])
    centres, labels = kmeans(points, 3, seed=0)
    assert sorted(np.bincount(labels).tolist()) == [20, 20, 20]
    np.testing.assert_allclose(sorted(centres.round().tolist()), [[0, 0], [0, 5], [5, 5]])


@pytest.mark.parametrize(
    ("unlabeled", "labeled", "y", "n", "message"),
    [
        ([], [], [], 1, "pool is empty"),
        ([1, 2, 3], [], [], 4, "cannot query 4 rows from a pool of 3"),
        ([1, 2, 3], [], [], 0, "at least 1"),
        ([1, 2, 3], [], [], 1.5, "must be an integer"),
        ([1, 2, 2, 3], [], [], 1, "indices_unlabeled contains duplicate indices"),
        ([1, 2, 3], [4, 4], [0, 0], 1, "indices_labeled contains duplicate"),
        ([1, 2, 3], [3], [0], 1, "both labelled and unlabelled"),
        ([1, -2, 3], [], [], 1, "negative index"),
        ([1.0, 2.0], [], [], 1, "integer row indices"),
        ([[1, 2]], [], [], 1, "1-D"),
        ([1, 2, 3], [4, 5], [0], 1, "one label per labelled row"),
    ],
)
def test_validation(unlabeled, labeled, y, n, message):
    with pytest.raises(DataError, match=message):
        EntropySampling().query(random_clf(), np.arange(60), unlabeled, labeled, y, n)


def test_bad_classifier_output_is_reported():
    clf = random_clf()
    clf.proba[4, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        EntropySampling().query(clf, np.arange(60), np.arange(10), [], [], 2)
    with pytest.raises(DataError, match="posterior_samples returned shape"):
        five = TableClassifier(np.full((9, 2), 0.5), samples=np.full((5, 9, 2), 0.5))
        BEMPS(0, n_samples=7).query(five, np.arange(9), np.arange(9), [], [], 2)


def test_registry_and_settings():
    assert set(STRATEGIES) == {"random", "entropy", "breaking-ties", "coreset", "bemps", "noise-stability"}
    for name, cls in STRATEGIES.items():
        strategy = make_strategy(name, 7)
        assert isinstance(strategy, cls) and isinstance(strategy, QueryStrategy) and strategy.seed == 7
    with pytest.raises(ConfigError, match="choose one of random, entropy, breaking-ties"):
        make_strategy("margin", 0)
    bad_settings = [
        (BEMPS, {"n_samples": 1}),
        (BEMPS, {"keep_fraction": 0}),
        (BEMPS, {"reference_fraction": 1.5}),
        (BEMPS, {"max_reference": 0}),
        (NoiseStability, {"noise_scale": -1}),
        (NoiseStability, {"n_draws": 0}),
        (RandomSampling, {"seed": -1}),
    ]
    for cls, kwargs in bad_settings:
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            cls(**kwargs)


def test_candidate_subset_for_costly_strategies():
    from mollia_edge.al.strategies import BEMPS, NoiseStability, candidate_positions

    picked = candidate_positions(1000, 100, seed=3)
    assert picked.size == 100 and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(candidate_positions(50, 100, seed=3), np.arange(50))
    clf = random_clf(rows=400)
    x = np.arange(400)
    pool = np.arange(20, 400)
    for strategy in (BEMPS(seed=1, max_candidates=60), NoiseStability(seed=1, max_candidates=60)):
        out = strategy.query(clf, x, pool, np.arange(20), np.zeros(20, int), 10)
        assert len(np.unique(out)) == 10 and np.isin(out, pool).all()
        np.testing.assert_array_equal(out, strategy.query(clf, x, pool, np.arange(20), np.zeros(20, int), 10))
        # n above the candidate cap still gives n rows
        assert len(np.unique(strategy.query(clf, x, pool, np.arange(20), np.zeros(20, int), 80))) == 80
