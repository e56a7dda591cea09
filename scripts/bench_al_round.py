"""One active-learning round (train + query) on a large synthetic pool, for each query strategy.

The pool is ``--pool`` rows of ``--dim``-d embeddings drawn around ``--classes`` centres;
``--labelled`` rows are labelled. A round trains a fresh head-mode OnnxClassifier on the
labelled rows (default epochs and early stopping on a 15% slice) and queries B = 50 rows.
Goal: ≤ 5 s per round on 2 cores for a 100k-row pool of 384-d embeddings.

    OPENBLAS_NUM_THREADS=1 python scripts/bench_al_round.py --out results/bench_al_round.json
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

from mollia_edge.al.classifier import OnnxClassifier
from mollia_edge.al.strategies import STRATEGIES, make_strategy


def synthetic_pool(rows: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (rows, dim) float32 around one random centre per class, and their classes (rows,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, rows)
    x = centres[y] + 2.0 * rng.normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--labelled", type=int, default=550)
    parser.add_argument("--batch", type=int, default=50, help="B: rows queried")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    x, y = synthetic_pool(args.pool, args.dim, args.classes, seed=0)
    labelled = np.random.default_rng(1).choice(args.pool, args.labelled, replace=False)
    unlabelled = np.setdiff1d(np.arange(args.pool), labelled)
    report: dict = {"pool": args.pool, "dim": args.dim, "labelled": args.labelled, "strategies": {}}
    for name in args.strategies.split(","):
        started = time.perf_counter()
        clf = OnnxClassifier("head", n_classes=args.classes, seed=0, threads=args.threads)
        split = int(0.85 * labelled.size)
        clf.fit(x[labelled[:split]], y[labelled[:split]], x_val=x[labelled[split:]], y_val=y[labelled[split:]])
        trained = time.perf_counter()
        picked = make_strategy(name, seed=0).query(clf, x, unlabelled, labelled, y[labelled], args.batch)
        done = time.perf_counter()
        assert np.unique(picked).size == args.batch
        report["strategies"][name] = {"train_seconds": trained - started, "query_seconds": done - trained,
                                      "round_seconds": done - started}

    table = Table(title=f"one round on a {args.pool:,}-row pool of {args.dim}-d embeddings, {args.labelled} labelled")
    for column in ("strategy", "train s", "query s", "round s", "≤ 5 s"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, r in report["strategies"].items():
        table.add_row(name, f"{r['train_seconds']:.2f}", f"{r['query_seconds']:.2f}", f"{r['round_seconds']:.2f}",
                      "yes" if r["round_seconds"] <= 5 else "no")
    print_and_save(Console(width=120), table, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
