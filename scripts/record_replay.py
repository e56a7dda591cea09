"""Record a replay folder with the bundled LLMs: ``NAME_<llm>.jsonl`` in the paper's row format.

The paper published its five LLMs' outputs for TREC only. This runs models through the
product's own annotator (``mollia_edge.annotate``: the same prompts, engine and store as
``label``) over rows of a bundled dataset and writes, per model, one JSON object per row:
``text``, gold ``label``, ``llm_logits`` (each label's sequence probability, not normalised,
as the paper's scores) and ``llm_label`` (the ``--samples`` sampled answers, normalised), so
that ``scripts/bench_al.py FOLDER --dataset NAME`` replays the loop on it.

Demonstrations (``--shots`` per label) come from ``--demo-pool`` extra rows drawn beside the
recorded ones and never recorded: no recorded row is shown with its own answer.

    python scripts/record_replay.py --dataset rotten-tomatoes --n 1500 --out results/replay-rotten
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mollia_edge.annotate import AnnotationRequest, annotate_with_models
from mollia_edge.config import LLMConfig
from mollia_edge.datasets import load_dataset
from mollia_edge.store import Store


def replay_rows(texts: list[str], gold: list[str], labels: tuple[str, ...], mass: np.ndarray,
                answers: tuple[tuple[str, ...], ...]) -> list[dict]:
    """One recorded row per text: mass (n, K) label sequence probabilities, answers per text."""
    return [{"text": t, "label": g, "llm_logits": [float(v) for v in m], "llm_label": list(a)}
            for t, g, m, a in zip(texts, gold, mass, answers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="rotten-tomatoes")
    parser.add_argument("--n", type=int, default=1500, help="rows recorded")
    parser.add_argument("--demo-pool", type=int, default=40, help="extra rows the demonstrations come from")
    parser.add_argument("--shots", type=int, default=2, help="demonstrations per label")
    parser.add_argument("--samples", type=int, default=10, help="sampled answers per text (the paper: 10)")
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    parser.add_argument("--item", default="text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, help="session store (outputs reused on a rerun)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: the configuration's, every core)")
    parser.add_argument("--out", type=Path, required=True, help="the replay folder to write")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset).sample(args.n + args.demo_pool, args.seed)
    labels = tuple(data.label_names)
    gold = [labels[g] for g in data.labels]
    llm = LLMConfig(consistency="sampled", samples=args.samples, shots=args.shots, seed=args.seed, n_threads=args.threads)
    request = AnnotationRequest(texts=list(data.texts), labels=labels, item=args.item,
                                gold=[None] * args.n + gold[args.n:], models=args.models.split(","),
                                llm=llm, seed=args.seed)
    store_path = args.store or Path(tempfile.mkdtemp(prefix="record-replay-")) / "store.sqlite"
    args.out.mkdir(parents=True, exist_ok=True)
    with Store(store_path) as store, Progress() as bar:
        tasks: dict[str, int] = {}

        def progress(model: str, done: int, total: int) -> None:
            if model not in tasks:  # one bar per model (setdefault would add a bar on every call)
                tasks[model] = bar.add_task(model, total=total)
            bar.update(tasks[model], completed=done, total=total)

        report = annotate_with_models(request, store, progress)
    for run in report.runs:
        s = run.signals
        rows = replay_rows(list(data.texts[: args.n]), gold[: args.n], labels,
                           np.exp(s.label_logprob[: args.n]), s.answers[: args.n])
        name = run.model.split("-")[0].lower()
        path = args.out / f"{args.dataset}_{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        right = np.mean(s.label_logprob[: args.n].argmax(axis=1) == np.asarray(data.labels[: args.n]))
        print(f"{path}: {args.n} rows, accuracy {right:.3f}, {run.seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
