"""Long texts: read in chunks (LLMs and encoder) against cut, in the label job's final labels.

The label job of ``scripts/bench_label.py`` (same sample: ``--n`` rows, ``--seeds`` seed
rows, seed ``--seed``, starter models, defaults) on a dataset of long texts, three ways:

* ``truncate``: the LLMs read the first ``llm.max_text_tokens`` tokens, the encoder the first
  ``al.max_length`` (what the job did before);
* ``chunk (mean)``: both read every chunk (:mod:`mollia_edge.chunks`); a text's label
  log-probabilities are the mean of its chunks', its embedding the mean of theirs (default);
* ``chunk (max)``: the same with the chunks' maximum log-probability per label.

The jobs share one session store (LLM outputs of a text read the same way are computed once).
Also: a logistic regression on the embeddings trained on the seed rows alone, cut vs chunked
(the classifier's side of the difference). One table, one JSON file.

    python scripts/bench_long_texts.py --dataset 20newsgroups --work W --out docs/long/bench_long_texts.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_label import ITEMS, _cell, run_job
from bench_report import print_and_save

from mollia_edge.al.encoder import EmbeddingCache, Encoder, encode_cached
from mollia_edge.data import write_table_atomic
from mollia_edge.datasets import load_dataset
from mollia_edge.text_annotator import text_annotator_proba

VARIANTS = {
    "truncate": '[llm]\nlong_texts = "truncate"\n[al]\nlong_texts = "truncate"\n',
    "chunk (mean)": "",
    "chunk (max)": '[llm]\nchunk_combine = "max"\n',
}


def seed_only(texts: list[str], gold: np.ndarray, seeds: int, k: int, cache: Path, long_texts: str) -> float:
    x = encode_cached(Encoder(long_texts=long_texts), texts, EmbeddingCache(cache))
    p = text_annotator_proba(x, np.arange(seeds), gold[:seeds], k)
    return float(np.mean(p[seeds:].argmax(axis=1) == gold[seeds:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="20newsgroups")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, help="folder for the task, outputs and session (default: temporary)")
    parser.add_argument("--job-args", default="",
                        help="more `mollia-edge label` arguments for every job (e.g. '--classifier head')")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-long-"))
    folder = work / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset).sample(args.n, args.seed)
    labels, gold = tuple(data.label_names), np.asarray(data.labels, np.int64)
    task = folder / "task.csv"
    write_table_atomic(task, [{"text": t, "label": labels[g] if i < args.seeds else "", "gold": labels[g]}
                              for i, (t, g) in enumerate(zip(data.texts, gold))], ("text", "label", "gold"))
    (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    shared = ["--seed", str(args.seed), "--labels-file", str(folder / "labels.txt"),
              "--session", str(folder / "session.sqlite"), *shlex.split(args.job_args)]
    results = []
    for variant in args.variants:
        name = variant.split()[0] + ("-max" if "max" in variant else "")
        config = folder / f"{name}.toml"
        config.write_text(VARIANTS[variant], encoding="utf-8")
        report, seconds = run_job(task, folder / name / "labelled.csv", ITEMS.get(args.dataset, "text"),
                                  [*shared, "--config", str(config)])
        results.append({"variant": variant, "gold": report["gold"], "seconds": seconds,
                        "chunked_for_llms": report.get("chunked_for_llms"),
                        "truncated_for_llms": report["truncated_for_llms"],
                        "encoder": report.get("long_texts_for_encoder"), "teacher": report["classifier_teacher"]})
    cache = folder / "session.sqlite.embeddings"
    k = len(labels)
    baseline = {mode: seed_only(list(data.texts), gold, args.seeds, k, cache, mode) for mode in ("truncate", "chunk")}
    out = {"dataset": args.dataset, "rows": args.n, "seeds": args.seeds, "seed": args.seed, "variants": results,
           "seed_only": baseline}
    table = Table(title=f"{args.dataset}: {args.n} rows, {args.seeds} seed rows, seed {args.seed}; accuracy on the "
                        f"non-seed rows (seed-only LR: cut {baseline['truncate']:.3f}, chunked {baseline['chunk']:.3f})")
    for column in ("variant", "final", "mixture", "classifier", "LLM rows chunked / cut", "encoder rows long", "job s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in results:
        encoder = r["encoder"] or {}
        table.add_row(r["variant"], _cell(r["gold"]), _cell(r["gold"], "llm_mixture"), _cell(r["gold"], "classifier"),
                      f"{r['chunked_for_llms'] or 0} / {r['truncated_for_llms']}", str(encoder.get("rows", "-")),
                      f"{r['seconds']:.0f}")
    print_and_save(Console(width=150), table, out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
