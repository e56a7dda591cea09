"""The `label` job against gold: its final labels vs the best single LLM vs a seed-only classifier.

A seeded sample of a bundled labelled dataset becomes a labelling task (``--seeds`` rows keep
their label; the others' gold is kept aside). The job runs with the given settings and the
bundled starter models; then, on every non-seed row:

* the job's final labels (and per label source: llm_mixture, classifier);
* each LLM's own label (argmax of its label probabilities; the job's cached outputs are reused);
* a classifier trained on the seed rows alone (same embeddings and training as the job's).

Also the job's wall time and peak RSS (of this process, taken as the job returns).

    python scripts/bench_label.py --dataset rotten-tomatoes --n 300 --out results/bench_label.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.al.encoder import EmbeddingCache, Encoder, encode_cached
from mollia_edge.al.loop import LabelledSet, train_classifier
from mollia_edge.config import Config, load_config
from mollia_edge.data import write_table_atomic
from mollia_edge.datasets import load_dataset
from mollia_edge.label import LabelJob, run_label_job
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.catalog import load_catalog
from mollia_edge.llm.prompts import PromptSpec
from mollia_edge.session import open_session_store


def llm_labels(texts: list[str], labels: tuple[str, ...], item: str, session: Path, config: Config) -> dict[str, np.ndarray]:
    """Each starter LLM's own label index (n,) of ``texts``, outputs cached in the job's session store."""
    catalog = load_catalog()
    own = {}
    with open_session_store(session) as store:
        for name in catalog.starter:
            model = catalog.resolve(name)
            prompt = PromptSpec(labels=labels, item=item, chat_format=model.spec.chat_format)
            with LLMAnnotator(model.path, prompt, config.llm, store) as annotator:
                own[name] = annotator.annotate(texts).label_prob.argmax(axis=1)
    return own


def seed_only(texts: list[str], seeds: np.ndarray, gold: np.ndarray, k: int, cache: Path, config: Config) -> np.ndarray:
    """Labels (n,) of a head-mode classifier trained on the seed rows alone."""
    x = encode_cached(Encoder(max_length=config.al.max_length), texts, EmbeddingCache(cache))
    seeded = LabelledSet(seeds, gold[seeds], np.ones(len(seeds), np.float32), np.zeros((len(seeds), k), bool))
    clf = train_classifier(x, seeded, k, 0.0, config.al, {"mode": "head"}, config.seed, config.seed + 1)
    return clf.predict(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--item", default="review", help="what a text is, in the prompt")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--llm-sample", type=int, default=500)
    parser.add_argument("--strategy", default="bemps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="folder for the task, output and session (default: a temporary one)")
    parser.add_argument("--config", type=Path, help="TOML configuration of the job (default: the paper's settings)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    console = Console(width=140)
    config = load_config(args.config)

    data = load_dataset(args.dataset).sample(args.n, args.seed)
    labels = tuple(data.label_names)
    gold = np.asarray(data.labels, np.int64)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-label-"))
    work.mkdir(parents=True, exist_ok=True)
    task = work / "task.csv"
    write_table_atomic(task, [{"text": t, "label": labels[g] if i < args.seeds else ""}
                              for i, (t, g) in enumerate(zip(data.texts, gold))], ("text", "label"))
    job = LabelJob(input=task, output=work / "labelled.csv", labels=labels, item=args.item, strategy=args.strategy,
                   rounds=args.rounds, batch=args.batch, llm_sample=args.llm_sample, seed=args.seed,
                   config=config)
    started = time.perf_counter()
    result = run_label_job(job)
    seconds = time.perf_counter() - started
    job_report = json.loads(result.report.read_text())
    peak_gib = job_report["peak_rss_mib"] / 1024

    with result.output.open(encoding="utf-8", newline="") as f:
        out = list(csv.DictReader(f))
    final = np.array([labels.index(row["label"]) for row in out])
    sources = np.array([row["label_source"] for row in out])
    rest = np.arange(args.seeds, args.n)
    seeds = np.arange(args.seeds)
    accuracy = {"final labels": float(np.mean(final[rest] == gold[rest]))}
    for source in ("llm_mixture", "classifier"):
        rows = rest[sources[rest] == source]
        if len(rows):
            accuracy[f"  of which {source} ({len(rows)} rows)"] = float(np.mean(final[rows] == gold[rows]))
    for name, own in llm_labels(list(data.texts), labels, args.item, result.session, config).items():
        accuracy[f"LLM {name} alone"] = float(np.mean(own[rest] == gold[rest]))
    cache = result.session.with_name(result.session.name + ".embeddings")
    accuracy["classifier on the seed rows alone"] = float(
        np.mean(seed_only(list(data.texts), seeds, gold, len(labels), cache, config)[rest] == gold[rest])
    )

    table = Table(title=f"label job on {args.n} {args.dataset} rows ({args.seeds} seeds): accuracy on the "
                        f"{len(rest)} non-seed rows; job {seconds:.0f} s, peak RSS {peak_gib:.2f} GiB")
    table.add_column("labels")
    table.add_column("accuracy", justify="right")
    for name, value in accuracy.items():
        table.add_row(name, f"{value:.4f}")
    report = {"settings": vars(args) | {"work": str(work), "out": str(args.out)}, "accuracy": accuracy,
              "job_seconds": seconds, "peak_rss_gib": peak_gib, "stage_seconds": job_report["seconds"]}
    print_and_save(console, table, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
