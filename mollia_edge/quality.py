"""How good the final labels are, where the user has gold labels (``--gold-column``).

Only rows that are not seeds count (a seed's label is the user's own), and only rows with a
gold label. Accuracy and macro-F1 (scikit-learn's) of the final labels, of each label source
(``llm_mixture``, ``classifier``...), and of each LLM's own label on the label job's random
sample of rows (the rows the active-learning loop queried are left out: they are chosen hard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .calibration import confidence_ece
from .errors import quoted


def _scores(truth: np.ndarray, predicted: np.ndarray, k: int, confidence: np.ndarray | None = None) -> dict[str, Any]:
    out = {
        "rows": int(len(truth)),
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(float(f1_score(truth, predicted, labels=np.arange(k), average="macro", zero_division=0)), 4),
    }
    if confidence is not None:
        out["mean_confidence"] = round(float(np.mean(confidence)), 4)
        out["ece"] = round(confidence_ece(confidence, truth == predicted, 10), 4)
    return out


def gold_quality(
    truth: np.ndarray,
    final: np.ndarray,
    sources: Sequence[str],
    scored: np.ndarray,
    llm_rows: np.ndarray,
    llm_labels: Mapping[str, np.ndarray],
    k: int,
    confidence: np.ndarray | None = None,
) -> dict[str, Any]:
    """Quality against gold.

    truth (n,): gold class index, -1 where there is none; final (n,): final class index;
    sources (n,): each row's label source; scored (n,) bool: rows that count (not seeds);
    llm_rows (m,): rows the LLMs annotated; llm_labels: each LLM's own class index (m,) there;
    confidence (n,): the stated confidence of each final label (its ECE against gold, 10 bins).
    """
    rows = np.flatnonzero(scored & (truth >= 0))
    conf = (lambda chosen: None if confidence is None else np.asarray(confidence, np.float64)[chosen])
    report: dict[str, Any] = {"final": _scores(truth[rows], final[rows], k, conf(rows)) if len(rows) else None}
    by_source = {}
    source_array = np.asarray(sources)
    for source in sorted(set(source_array[rows].tolist())):
        chosen = rows[source_array[rows] == source]
        by_source[source] = _scores(truth[chosen], final[chosen], k, conf(chosen))
    report["by_source"] = by_source
    position = {int(r): i for i, r in enumerate(llm_rows)}
    on_llm = np.array([r for r in rows if int(r) in position], dtype=np.int64)
    report["by_llm"] = {
        name: _scores(truth[on_llm], own[[position[int(r)] for r in on_llm]], k)
        for name, own in llm_labels.items()
    } if len(on_llm) else {}
    return report


def quality_lines(quality: Mapping[str, Any]) -> list[str]:
    """The summary's lines for :func:`gold_quality`'s report."""
    final = quality.get("final")
    if not final:
        return ["against gold: no non-seed row has a gold label"]
    lines = [f"against gold ({final['rows']} non-seed rows): accuracy {final['accuracy']:.3f}, "
             f"macro-F1 {final['macro_f1']:.3f}"
             + (f", mean confidence {final['mean_confidence']:.3f} (ECE {final['ece']:.3f})" if "ece" in final else "")]
    parts = [f"{source} {s['accuracy']:.3f} ({s['rows']})" for source, s in quality["by_source"].items()]
    lines.append("  by label source: " + ", ".join(parts))
    if quality["by_llm"]:
        parts = [f"{quoted(name, quote=False)} {s['accuracy']:.3f}" for name, s in quality["by_llm"].items()]
        lines.append(f"  each LLM alone on the {next(iter(quality['by_llm'].values()))['rows']} sampled for it: "
                     + ", ".join(parts))
    return lines
