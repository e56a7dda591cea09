"""Recorded LLM outputs of the MoLLIA paper, replayed instead of running the LLMs.

The paper's reference code published, for TREC-6, one ``trec_<llm>.jsonl`` per LLM with the
same rows in the same order: ``text``, gold ``label``, ``llm_logits`` (K label scores: top-100
next-token probabilities credited to every label they match; non-negative, not normalised) and
``llm_label`` (the T = 10 sampled answers). :func:`load_replay` turns the files of any dataset
recorded that way (``NAME_<llm>.jsonl``, any number of LLMs) into the arrays MoLAM and the
annotators take: scores and consistency, each (n, N, K).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mollia_edge.errors import DataError

TREC_LABELS = ("abbreviation", "entity", "description", "human", "location", "numeric")
"""Label order of the recorded TREC files (class index = position)."""
TREC_LLMS = ("gemma", "llama", "mistral", "qwen", "yi")
"""LLM order of the recorded TREC files: gemma-2-9b-it, Llama-3.1-8B, Mistral-7B, Qwen2.5-Coder-7B, Yi-1.5-9B."""


class ReplayData(NamedTuple):
    """Texts, gold labels and the LLMs' recorded signals, row-aligned."""

    texts: list[str]
    gold: np.ndarray
    """(n,) int64 class indices into ``labels``."""
    scores: np.ndarray
    """(n, N, K) float64: the recorded ``llm_logits``, as given."""
    consistency: np.ndarray
    """(n, N, K) float64: share of the sampled answers equal to each label (stripped, lower-cased)."""
    llm_names: tuple[str, ...]
    labels: tuple[str, ...] = TREC_LABELS
    """The label set in the order of ``llm_logits`` (class index = position)."""


def _read_llm_file(path: Path, labels: tuple[str, ...]) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """(texts, gold, scores (n, K), consistency (n, K)) of one recorded LLM file."""
    index = {label: k for k, label in enumerate(labels)}
    texts, gold, scores, consistency = [], [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"recorded LLM file {path} is missing: the folder needs NAME_<llm>.jsonl for every LLM") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(filter(str.strip, lines), start=1):
        try:
            record = json.loads(line)
            text, label, logits, answers = record["text"], record["label"], record["llm_logits"], record["llm_label"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path} row {number} is not a JSON object with text, label, llm_logits, llm_label") from None
        if label not in index:
            raise DataError(f"{path} row {number}: label {label!r} is not one of {', '.join(labels)}")
        if len(logits) != len(labels) or not answers:
            raise DataError(f"{path} row {number}: needs {len(labels)} llm_logits and at least one sampled answer")
        said = [str(answer).strip().lower() for answer in answers]
        texts.append(text)
        gold.append(index[label])
        scores.append(logits)
        consistency.append([said.count(name) / len(said) for name in labels])
    if not texts:
        raise DataError(f"{path} has no rows")
    score_array = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(score_array)) or np.any(score_array < 0):
        raise DataError(f"{path}: llm_logits must be finite and non-negative")
    return texts, gold, score_array, np.asarray(consistency, dtype=np.float64)


def load_trec_replay(folder: str | Path, llms: tuple[str, ...] = TREC_LLMS) -> ReplayData:
    """Read ``trec_<llm>.jsonl`` for each of ``llms`` from ``folder``; checks the files agree row by row."""
    return load_replay(folder, "trec", TREC_LABELS, llms)


def _gold_labels(path: Path) -> tuple[str, ...]:
    """The distinct gold labels of a recorded file, sorted."""
    found = set()
    try:
        for line in filter(str.strip, path.read_text(encoding="utf-8").splitlines()):
            label = json.loads(line).get("label")
            if isinstance(label, str):
                found.add(label)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise DataError(f"cannot read the gold labels of {path}: {exc}") from None
    return tuple(sorted(found))


def load_replay(folder: str | Path, dataset: str = "trec", labels: tuple[str, ...] | None = None,
                llms: tuple[str, ...] | None = None) -> ReplayData:
    """Read ``DATASET_<llm>.jsonl`` for each of ``llms`` (default: every such file, sorted by
    name) from ``folder``; checks the files agree row by row. ``labels``: the order of the
    files' ``llm_logits``; default :data:`TREC_LABELS` for ``trec``, else the files' gold labels
    sorted (say it when the recording used another order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder with the recorded {dataset}_<llm>.jsonl files")
    if llms is None:
        llms = tuple(sorted(p.name[len(dataset) + 1: -len(".jsonl")] for p in folder.glob(f"{dataset}_*.jsonl")))
    if not llms:
        raise DataError(f"no {dataset}_<llm>.jsonl file in {folder}: name a recorded dataset and at least one LLM")
    if labels is None:
        labels = TREC_LABELS if dataset == "trec" else _gold_labels(folder / f"{dataset}_{llms[0]}.jsonl")
    if len(labels) < 2:
        raise DataError(f"{dataset}: at least two labels are needed, got {', '.join(labels) or 'none'}")
    per_llm = [_read_llm_file(folder / f"{dataset}_{name}.jsonl", labels) for name in llms]
    texts, gold = per_llm[0][0], per_llm[0][1]
    for name, (other_texts, other_gold, _, _) in zip(llms[1:], per_llm[1:]):
        if other_texts != texts or other_gold != gold:
            raise DataError(f"{dataset}_{name}.jsonl does not have the same rows in the same order as "
                            f"{dataset}_{llms[0]}.jsonl")
    return ReplayData(
        texts=texts,
        gold=np.asarray(gold, dtype=np.int64),
        scores=np.stack([scores for _, _, scores, _ in per_llm], axis=1),
        consistency=np.stack([consistency for _, _, _, consistency in per_llm], axis=1),
        llm_names=tuple(llms),
        labels=tuple(labels),
    )
