"""The error guarantee (``--target-error``) against gold: one table and a JSON file.

For each dataset a seeded sample of ``--n`` rows is encoded once (MiniLM, cached); each of
``--draws`` draws picks ``--seeds`` random seed rows. The job's classifier path without LLMs
labels the other rows: the text's own annotator (the self-trained regression on the embeddings,
:func:`~mollia_edge.text_annotator.text_annotator_fit`), its seed rows cross-fitted, a temperature
fitted there, and the acceptance threshold of :mod:`mollia_edge.guarantee` at the confidence
level (one source: the whole level). Per target error E:

* ``accepted``: the share of the non-seed rows accepted (mean over draws);
* ``error``: the realised error among them against gold (mean over the draws that accepted any);
* ``exceeded``: how often it was above E (must be <= 1 - level within binomial noise);
* then after 25, 50 and 100 simulated reviews (gold answers for the rows the Review screen shows,
  in its order: random checks first, then the doubtful rows nearest the threshold), each
  answer a training label and each random check a calibration row: the share accepted and how
  often the error exceeded E. ``--order`` compares other orders (:data:`ORDERS`): ``turns``,
  doubtful rows and random checks taking turns (the screen's order until 2026-12-08);
  ``doubtful``, the rows nearest the threshold only (every answer a training label, none a
  calibration row).

The LLMs take no part (their outputs differ per draw of the seed rows, the demonstrations, and
would cost hours per draw); ``scripts/bench_label.py`` runs the whole job once per dataset.

    python scripts/bench_guarantee.py --datasets rotten-tomatoes bbc-news yahoo stackoverflow --out results/bench_guarantee.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.al.encoder import EmbeddingCache, Encoder, encode_cached
from mollia_edge.calibration import fit_temperature, temper
from mollia_edge.config import ActiveLearningConfig
from mollia_edge.datasets import load_dataset
from mollia_edge.guarantee import acceptance_threshold
from mollia_edge.label.accept import RANDOM_CHECKS, review_order
from mollia_edge.randomness import derived_seed
from mollia_edge.text_annotator import text_annotator_fit

REVIEWS = (25, 50, 100)
ORDERS = ("screen", "turns", "doubtful")
"""``screen``: the Review screen's order (:func:`~mollia_edge.label.accept.review_order`: random
checks first, then the doubtful rows)."""


def evaluate(x: np.ndarray, gold: np.ndarray, k: int, labelled: np.ndarray, calibration: np.ndarray,
             target: float, delta: float, seed: int) -> dict:
    """The threshold chosen on the cross-fitted ``calibration`` rows (a subset of ``labelled``), the
    rows accepted among the others, and the realised error there."""
    al = ActiveLearningConfig()
    proba, _ = text_annotator_fit(x, labelled, gold[labelled], k, seed, self_training=al.self_training)
    temperature = fit_temperature(proba[labelled], gold[labelled])
    p = temper(proba, temperature)
    confidence, right = p.max(axis=1), p.argmax(axis=1) == gold
    chosen = acceptance_threshold(confidence[calibration], right[calibration], target, delta)
    rest = np.setdiff1d(np.arange(len(gold)), labelled)
    accepted = rest[confidence[rest] >= chosen.threshold] if chosen.threshold is not None else rest[:0]
    error = float(np.mean(~right[accepted])) if len(accepted) else None
    return {"threshold": chosen.threshold, "accepted": len(accepted) / len(rest), "error": error,
            "exceeded": error is not None and error > target, "confidence": confidence, "rest": rest}


def queue(state: dict, rng: np.random.Generator, order: str = "screen") -> list[tuple[int, bool]]:
    """(row, is a random check) in ``order`` (:data:`ORDERS`); ``screen``: the Review screen's
    (:func:`~mollia_edge.label.accept.review_order`): random checks of the unlabelled rows first,
    then the rows not accepted nearest the threshold."""
    rest, confidence, threshold = state["rest"], state["confidence"], state["threshold"]
    accepted = set(rest[confidence[rest] >= threshold].tolist()) if threshold is not None else set()
    doubtful = sorted((r for r in rest.tolist() if r not in accepted),
                      key=lambda r: (abs((threshold if threshold is not None else 1.0) - confidence[r]), r))
    checks = rng.permutation(rest).tolist()
    if order == "doubtful":
        return [(int(r), False) for r in doubtful]
    if order == "turns":
        return in_turns(doubtful, checks)
    return review_order(doubtful, checks)


def in_turns(doubtful: list[int], checks: list[int]) -> list[tuple[int, bool]]:
    """The Review screen's order until 2026-12-08 (what ``--order screen`` measured then): a
    doubtful row and a random check in turn for the first :data:`RANDOM_CHECKS` checks, then the
    other doubtful rows, each row once (a row already shown is skipped)."""
    order: list[tuple[int, bool]] = []
    seen: set[int] = set()
    rest = iter(doubtful)
    for check in checks[:RANDOM_CHECKS]:
        for row, is_check in ((next(rest, None), False), (check, True)):
            if row is not None and row not in seen:
                order.append((int(row), is_check))
                seen.add(row)
    order.extend((int(row), False) for row in rest if row not in seen)
    return order


def one_draw(x: np.ndarray, gold: np.ndarray, k: int, seeds: int, target: float, delta: float, draw: int,
             order: str = "screen") -> dict:
    rng = np.random.default_rng(derived_seed(draw, 41))
    labelled = np.sort(rng.choice(len(gold), seeds, replace=False))
    calibration = labelled.copy()
    state = evaluate(x, gold, k, labelled, calibration, target, delta, draw)
    out = {"0": {key: state[key] for key in ("threshold", "accepted", "error", "exceeded")}}
    done = 0
    for reviews in REVIEWS:
        answered = queue(state, rng, order)[: reviews - done]
        done = reviews
        rows = np.array([r for r, _ in answered], np.int64)
        checks = np.array([r for r, check in answered if check], np.int64)
        labelled, calibration = np.union1d(labelled, rows), np.union1d(calibration, checks)
        state = evaluate(x, gold, k, labelled, calibration, target, delta, draw)
        out[str(reviews)] = {key: state[key] for key in ("threshold", "accepted", "error", "exceeded")}
    return out


def bench_dataset(name: str, args: argparse.Namespace) -> list[dict]:
    data = load_dataset(name).sample(args.n, args.seed)
    gold, k = np.asarray(data.labels, np.int64), len(data.label_names)
    al = ActiveLearningConfig()
    cache = args.work / name / "embeddings"
    cache.mkdir(parents=True, exist_ok=True)
    x = encode_cached(Encoder(max_length=al.max_length, long_texts=al.long_texts), list(data.texts), EmbeddingCache(cache))
    results = []
    for target in args.targets:
        began = time.perf_counter()
        draws = [one_draw(x, gold, k, args.seeds, target, 1 - args.level, d, args.order) for d in range(args.draws)]
        summary = {"dataset": name, "target_error": target, "level": args.level, "order": args.order, "draws": draws,
                   "seconds": round(time.perf_counter() - began, 1)}
        for step in ("0", *map(str, REVIEWS)):
            picked = [d[step] for d in draws]
            errors = [p["error"] for p in picked if p["error"] is not None]
            summary[step] = {"accepted": float(np.mean([p["accepted"] for p in picked])),
                             "error": float(np.mean(errors)) if errors else None,
                             "exceeded": float(np.mean([p["exceeded"] for p in picked]))}
        results.append(summary)
        print(f"{name} E={target}: accepted {summary['0']['accepted']:.3f} -> {summary['100']['accepted']:.3f} "
              f"after 100 reviews ({summary['seconds']:.0f} s)", flush=True)
    return results


def table(results: list[dict], title: str) -> Table:
    out = Table(title=title)
    for column in ("dataset", "E", "accepted", "error", "exceeded", *(f"+{r} accepted" for r in REVIEWS),
                   *(f"+{r} exceeded" for r in REVIEWS)):
        out.add_column(column, justify="left" if column == "dataset" else "right")
    for r in results:
        first = r["0"]
        out.add_row(r["dataset"], f"{r['target_error']:.2f}", f"{first['accepted']:.3f}",
                    "-" if first["error"] is None else f"{first['error']:.3f}", f"{first['exceeded']:.2f}",
                    *(f"{r[str(n)]['accepted']:.3f}" for n in REVIEWS), *(f"{r[str(n)]['exceeded']:.2f}" for n in REVIEWS))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news", "yahoo", "stackoverflow"])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.02, 0.05, 0.10])
    parser.add_argument("--level", type=float, default=0.9, help="confidence level (default 0.9)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the dataset sample's seed")
    parser.add_argument("--order", choices=ORDERS, default="screen", help="the order of the simulated reviews")
    parser.add_argument("--work", type=Path, default=Path("results/bench_guarantee_work"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    title = (f"error guarantee vs gold: {args.n} rows, {args.seeds} random seed rows, {args.draws} draws, "
             f"level {args.level}, reviews in {args.order} order; share of non-seed rows accepted, realised error, share of draws above E")
    results: list[dict] = []
    for name in args.datasets:  # the JSON after each dataset: a long run keeps what it measured
        results.extend(bench_dataset(name, args))
        report = {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2))
    print_and_save(Console(), table(results, title), report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
