"""The multi-label `label` job against gold (``bench_label.py --multi-label`` runs this): one table, a JSON file.

Per dataset, ``--n`` rows of :func:`mollia_edge.multilabel.datasets.topic_pairs` (half of them two
documents of different topics joined, each cut to its opening), the first ``--seeds`` keep their
label sets; ``mollia-edge label --multi-label`` with its defaults and the starter models, a
process of its own. On the non-seed rows: micro-/macro-F1, subset accuracy and Hamming loss of
the final labels; the same of each LLM alone on the job's LLM sample; the seed-only baseline (one
logistic regression per label on the same embeddings, trained on the seed rows alone, C by CV on
them; ``+self``: the same self-trained as the job's regressions are: how much of the job's gain is
not the LLMs'); the job's seconds and peak RSS. yahoo is the dev set, bbc-news the report set.

    python scripts/bench_label.py --multi-label --datasets yahoo bbc-news --n 1000 --out docs/label/bench_multilabel.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mollia_edge.al.encoder import EmbeddingCache, Encoder, encode_cached
from mollia_edge.config import ActiveLearningConfig
from mollia_edge.data import write_table_atomic
from mollia_edge.multilabel.datasets import topic_pairs
from mollia_edge.multilabel.labels import format_set, multilabel_quality
from mollia_edge.text_annotator import embedding_model_proba

ITEMS = {"bbc-news": "news article", "yahoo": "question and answer"}


def seed_only(texts: list[str], gold: np.ndarray, seeds: int, cache: Path) -> dict[str, dict[str, float]]:
    """One-vs-rest logistic regression on the job's embeddings, C by CV on the seed rows:
    ``seed_only`` plain, ``seed_only_self_trained`` self-trained as the job's regressions are."""
    al = ActiveLearningConfig()
    x = encode_cached(Encoder(max_length=al.max_length, long_texts=al.long_texts), texts, EmbeddingCache(cache))
    rows, rest = np.arange(seeds), np.arange(seeds, len(texts))
    out = {}
    for key, setting in (("seed_only", (0, 1)), ("seed_only_self_trained", al.self_training)):
        predicted = np.zeros((len(rest), gold.shape[1]), bool)
        for k in range(gold.shape[1]):
            column = gold[rows, k].astype(np.int64)
            if column.min() == column.max():
                predicted[:, k] = bool(column[0])
                continue
            p, _ = embedding_model_proba(x, rows, column, 2, self_training=setting)
            predicted[:, k] = p[rest, 1] >= 0.5
        out[key] = multilabel_quality(predicted, gold[rest])
    return out


def bench_dataset(name: str, args: argparse.Namespace, work: Path, run_job) -> dict:
    data = topic_pairs(name, args.n, args.seed)
    folder = work / f"{name}-pairs"
    folder.mkdir(parents=True, exist_ok=True)
    task = folder / "task.csv"
    names = data.label_names
    write_table_atomic(task, [{"text": t, "label": format_set(y, names) if i < args.seeds else "",
                               "gold": format_set(y, names)} for i, (t, y) in enumerate(zip(data.texts, data.labels))],
                       ("text", "label", "gold"))
    (folder / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    extra = ["--multi-label", "--seed", str(args.seed), "--labels-file", str(folder / "labels.txt"),
             "--session", str(folder / "session.sqlite"), *shlex.split(args.job_args)]
    report, seconds = run_job(task, folder / "job" / "labelled.csv", ITEMS.get(name, "text"), extra)
    return {"dataset": f"{name}-pairs", "rows": args.n, "seeds": args.seeds, "job": report["gold"],
            "job_seconds": seconds, "stage_seconds": report["seconds"], "llm_seconds": report["llm_seconds"],
            "peak_rss_mib": report["peak_rss_mib"], "llm_rows": report["llm_rows"],
            **seed_only(data.texts, data.labels, args.seeds, folder / "session.sqlite.embeddings")}


def table(results: list[dict], title: str) -> Table:
    out = Table(title=title)
    for column in ("dataset", "final micro-F1", "macro-F1", "subset acc", "Hamming", "mixture micro-F1",
                   "classifier micro-F1", "seed-only micro-F1", "seed-only macro-F1", "+self micro-F1",
                   "LLMs alone micro-F1",
                   "job s", "LLM s", "RSS GiB"):
        out.add_column(column, justify="left" if column == "dataset" else "right")
    for r in results:
        final, by_source = r["job"]["final"], r["job"]["by_source"]
        alone = ", ".join(f"{m} {q['micro_f1']:.3f}" for m, q in r["job"]["by_llm"].items()) or "-"
        out.add_row(r["dataset"], f"{final['micro_f1']:.3f}", f"{final['macro_f1']:.3f}",
                    f"{final['subset_accuracy']:.3f}", f"{final['hamming_loss']:.3f}",
                    *(f"{by_source[s]['micro_f1']:.3f} ({by_source[s]['rows']})" if s in by_source else "-"
                      for s in ("llm_mixture", "classifier")),
                    f"{r['seed_only']['micro_f1']:.3f}", f"{r['seed_only']['macro_f1']:.3f}",
                    f"{r['seed_only_self_trained']['micro_f1']:.3f}" if "seed_only_self_trained" in r else "-", alone,
                    f"{r['job_seconds']:.0f}", f"{sum(r['llm_seconds'].values()):.0f}",
                    f"{r['peak_rss_mib'] / 1024:.2f}")
    return out
