"""Label names alone vs names with one-line descriptions (a task file), per starter model.

For each dataset, a seeded sample of ``--n`` texts (none used for anything else here) is
annotated zero-shot by each starter model twice: with the paper's prompt and bare label
names, and with the dataset's task file in ``docs/tasks/`` (the same prompt plus a list of
one-line label descriptions in the shared prefix). Texts are cut to ``--max-text-tokens`` for
both (the comparison is about the prompt, and long articles would take most of the time).
Accuracy of the argmax label and the mean invalid share (probability of an answer that is no
label). One table, one JSON file.

    python scripts/bench_task.py --out docs/tasks/bench_task.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.annotate import AnnotationRequest, annotate_with_models
from mollia_edge.config import LLMConfig
from mollia_edge.datasets import load_dataset
from mollia_edge.task import load_task

TASKS = Path(__file__).resolve().parents[1] / "docs" / "tasks"


def bench_dataset(name: str, args: argparse.Namespace, llm: LLMConfig) -> list[dict]:
    task = load_task(TASKS / f"{name}.toml")
    data = load_dataset(name).sample(args.n, args.seed)
    labels = tuple(data.label_names)
    gold = [labels[i] for i in data.labels]
    rows = []
    for wording, with_task in (("names", None), ("descriptions", task)):
        request = AnnotationRequest(texts=data.texts, labels=labels, gold=gold, item=task.item or "text",
                                    llm=llm, seed=args.seed, task=with_task)
        started = time.perf_counter()
        report = annotate_with_models(request, store=None)
        seconds = time.perf_counter() - started
        for run in report.runs:
            rows.append({"dataset": name, "prompt": wording, "model": run.model, "accuracy": run.accuracy,
                         "invalid": float(np.mean(run.signals.invalid)), "seconds": seconds})
    return rows


def table(rows: list[dict], title: str) -> Table:
    out = Table(title=title)
    for column in ("dataset", "model", "names", "+ descriptions", "invalid names", "invalid + descr."):
        out.add_column(column, justify="left" if column in ("dataset", "model") else "right")
    pairs: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["dataset"], r["model"]), {})[r["prompt"]] = r
    for (dataset, model), by in pairs.items():
        a, b = by["names"], by["descriptions"]
        best = max(a["accuracy"], b["accuracy"])
        cell = lambda v: f"[bold]{v:.3f}[/bold]" if v == best and a["accuracy"] != b["accuracy"] else f"{v:.3f}"  # noqa: E731
        out.add_row(dataset, model, cell(a["accuracy"]), cell(b["accuracy"]), f"{a['invalid']:.3f}",
                    f"{b['invalid']:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news", "yahoo", "20newsgroups"])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-text-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: the configuration's, every core)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    llm = dataclasses.replace(LLMConfig(), shots=0, long_texts="truncate", max_text_tokens=args.max_text_tokens,
                              n_threads=args.threads)
    rows = [row for name in args.datasets for row in bench_dataset(name, args, llm)]
    report = {"n": args.n, "seed": args.seed, "max_text_tokens": args.max_text_tokens, "rows": rows}
    title = (f"zero-shot accuracy, {args.n} texts per dataset (seed {args.seed}), texts cut to "
             f"{args.max_text_tokens} tokens; task files in docs/tasks/")
    print_and_save(Console(width=140), table(rows, title), report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
