"""Demonstrations shared by every text vs retrieved per text: accuracy and seconds per text.

For each starter model, on ``--n`` texts of a bundled dataset (``--seeds`` other rows are the
labelled seed rows):

* ``zero-shot``: no demonstrations;
* ``shared``: ``--shots`` demonstrations per label chosen to cover each label (what the label
  job uses): one prompt prefix for all texts, evaluated once and reused from the KV cache;
* ``retrieved``: the ``--shots`` seed rows of each label nearest to the text (cosine on the
  MiniLM embeddings): a prompt prefix per text, evaluated for every text.

Every text is evaluated (no cache); seconds per text are wall time on this machine, the three
settings of a model measured one after the other in one run.

    python scripts/bench_demos.py --dataset imdb --n 80 --out results/bench_demos.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.al.encoder import Encoder
from mollia_edge.config import LLMConfig
from mollia_edge.datasets import load_dataset
from mollia_edge.llm.annotator import LLMAnnotator
from mollia_edge.llm.catalog import load_catalog
from mollia_edge.llm.demonstrations import PromptPlan, clip_words
from mollia_edge.llm.prompts import PromptSpec


def retrieved_prompt(base: PromptSpec, x: np.ndarray, i: int, seeds: np.ndarray, y: np.ndarray,
                     texts: list[str], shots: int, words: int) -> PromptSpec:
    """The ``shots`` seed rows of each label nearest to row ``i``, nearest last."""
    similarity = x[seeds] @ x[i]
    chosen = []
    for label in np.unique(y):
        members = seeds[y == label]
        order = np.argsort(-similarity[y == label])[:shots]
        chosen.extend((similarity[y == label][j], members[j]) for j in order)
    chosen.sort()
    demos = tuple((clip_words(texts[r], words), base.labels[int(y[seeds == r][0])]) for _, r in chosen)
    return PromptSpec(labels=base.labels, item=base.item, chat_format=base.chat_format, demonstrations=demos)


def measure(annotator: LLMAnnotator, prompts: list[PromptSpec], texts: list[str]) -> tuple[np.ndarray, float]:
    """Label probabilities (n, K) and seconds per text, each text under its prompt (one prompt: shared)."""
    started = time.perf_counter()
    if len(prompts) == 1:
        annotator.use_prompt(prompts[0])
        z = annotator.annotate(texts).scores
    else:
        rows = []
        for prompt, text in zip(prompts, texts):
            annotator.use_prompt(prompt)
            rows.append(annotator.annotate([text]).scores[0])
        z = np.array(rows)
    return z, (time.perf_counter() - started) / len(texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imdb")
    parser.add_argument("--item", default="review")
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: the configuration's, every core)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset).sample(args.n + args.seeds, args.seed)
    texts, labels = list(data.texts), tuple(data.label_names)
    gold = np.asarray(data.labels)
    seeds, evaluated = np.arange(args.seeds), np.arange(args.seeds, args.seeds + args.n)
    x = Encoder().encode(texts)
    catalog = load_catalog()
    results = {}
    for name in catalog.starter:
        model = catalog.resolve(name)
        base = PromptSpec(labels=labels, item=args.item, chat_format=model.spec.chat_format)
        shared = PromptPlan.with_demonstrations(base, args.shots, texts, x, seeds, gold[seeds], args.words).main
        settings = {
            "zero-shot": [base],
            "shared": [shared],
            "retrieved": [retrieved_prompt(base, x, i, seeds, gold[seeds], texts, args.shots, args.words)
                          for i in evaluated],
        }
        with LLMAnnotator(model.path, base, LLMConfig(n_threads=args.threads)) as annotator:
            annotator.annotate(texts[:1])  # load the model before timing
            for setting, prompts in settings.items():
                z, seconds = measure(annotator, prompts, [texts[i] for i in evaluated])
                accuracy = float(np.mean(z.argmax(axis=1) == gold[evaluated]))
                results[f"{name} {setting}"] = {"accuracy": accuracy, "s_per_text": seconds,
                                               "accuracy_per_second": accuracy / seconds}
    table = Table(title=f"{args.n} {args.dataset} texts, {args.seeds} seed rows, {args.shots} shots per label")
    for column in ("model and demonstrations", "accuracy", "s/text"):
        table.add_column(column, justify="left" if column.startswith("model") else "right")
    for key, value in results.items():
        table.add_row(key, f"{value['accuracy']:.3f}", f"{value['s_per_text']:.3f}")
    print_and_save(Console(width=120), table, {"settings": vars(args) | {"out": str(args.out)}, "results": results},
                   args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
