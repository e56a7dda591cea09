"""Collect, per dataset, what the LLM value check sees and what it should decide.

For each dataset: a seeded sample (``--n`` rows, the first ``--seeds`` keep their label), the
job's stages up to the seed scoring (encoder, text annotator, each LLM's demonstrations chosen
on the seed rows), then each LLM's signals on the seed rows and on ``--held`` other rows. The
arrays go to ``OUT/NAME.npz``; :mod:`mollia_edge.llm_value` rules are then compared on them
offline (whether a model adds to the text annotator on the held rows, against gold, is what the
rule should predict from the seed rows alone).

    python scripts/dev_llm_value.py --datasets stackoverflow 20newsgroups imdb --out results/llm_value
    python scripts/dev_llm_value.py --evaluate results/llm_value --draws 10 --json results/llm_value/evaluation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mollia_edge.config import Config, LLMConfig
from mollia_edge.data import write_table_atomic
from mollia_edge.datasets import load_dataset
from mollia_edge.label.context import signals, start
from mollia_edge.label.job import LabelJob
from mollia_edge.label.llm_stages import encode, score_seeds
from mollia_edge.label.prepare import check_settings, prepare


def collect(name: str, n: int, seeds: int, held: int, seed: int, work: Path, out: Path) -> None:
    data = load_dataset(name).sample(n, seed)
    labels = tuple(data.label_names)
    gold = np.asarray(data.labels, np.int64)
    task = work / f"{name}.csv"
    write_table_atomic(task, [{"text": t, "label": labels[g] if i < seeds else ""}
                              for i, (t, g) in enumerate(zip(data.texts, gold))], ("text", "label"))
    job = LabelJob(task, work / f"{name}-out.csv", labels=labels, llm_sample=0, rounds=0, seed=seed,
                   session=out / f"{name}.session.sqlite",
                   config=Config(llm=LLMConfig(prune="off")))  # every model's signals: the rule is judged on them
    with ExitStack() as stack:
        prep = prepare(job, check_settings(job))
        context = start(job, prep, stack, lambda m: None, None)
        encoded = encode(context)
        scored = score_seeds(context, encoded)
        rows = np.arange(seeds + held)
        s, c = signals(context, scored.text_proba, rows)
    np.savez(out / f"{name}.npz", scores=s, consistency=c, gold=gold[rows], seeds=seeds,
             names=np.array(context.panel.names), x=encoded.x[rows])
    print(name, {m: v["seed_accuracy"] for m, v in scored.shots.items()}, flush=True)


def _held_scores(parts: list[np.ndarray], seed_rows: np.ndarray, held: np.ndarray, gold: np.ndarray,
                 k: int) -> tuple[float, float]:
    """(accuracy, log-loss) on the ``held`` rows of the stacked regression on ``parts`` (each (n, K))
    fitted on the seed rows."""
    from sklearn.linear_model import LogisticRegression

    from mollia_edge.llm_value import STACK_C, stack_features

    feats = stack_features(parts)
    model = LogisticRegression(C=STACK_C, max_iter=2000).fit(feats[seed_rows], gold[seed_rows])
    p = np.full((len(held), k), 1e-6)
    p[:, model.classes_] = model.predict_proba(feats[held])
    return (float(np.mean(p.argmax(1) == gold[held])),
            float(-np.log(np.clip(p[np.arange(len(held)), gold[held]], 1e-6, 1)).mean()))


def evaluate(folder: Path, draws: int, seeds: int) -> dict[str, list[dict]]:
    """Per dataset and draw: ``seeds`` random rows of the collected ones are the seed rows, the
    rest held out. Per LLM, against the text annotator alone (as the job's
    :class:`~mollia_edge.llm_value.ValueCheck`; until 2026-12-08 a forward selection in panel
    order, which docs/label/llm_value_dev.json was made with): its gain and standard error on the
    seed rows and, against gold on the held rows, the accuracy and log-loss of the stacked
    regression fitted on the seed rows with and without it."""
    from mollia_edge.llm_value import stacked_losses
    from mollia_edge.text_annotator import text_annotator_fit

    out: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.npz")):
        data = np.load(path)
        scores, gold, x, names = data["scores"], data["gold"], data["x"], list(data["names"])
        k, n = scores.shape[2], len(gold)
        records = []
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            seed_rows = np.sort(rng.choice(n, seeds, replace=False))
            held = np.setdiff1d(np.arange(n), seed_rows)
            text, _ = text_annotator_fit(x, seed_rows, gold[seed_rows], k, seed=draw)
            kept = [text]  # each model against the text annotator alone
            for m, name in enumerate(names):
                llm = scores[:, m, :]
                before = stacked_losses([p[seed_rows] for p in kept], gold[seed_rows], k, draw)
                after = stacked_losses([p[seed_rows] for p in [*kept, llm]], gold[seed_rows], k, draw)
                gain = before - after

                acc0, loss0 = _held_scores(kept, seed_rows, held, gold, k)
                acc1, loss1 = _held_scores([*kept, llm], seed_rows, held, gold, k)
                records.append({"draw": draw, "model": name, "seed_accuracy": float(np.mean(llm[seed_rows].argmax(1) == gold[seed_rows])),
                                "gain": float(gain.mean()), "se": float(gain.std(ddof=1) / np.sqrt(len(gain))),
                                "held_accuracy_gain": acc1 - acc0, "held_loss_gain": loss0 - loss1})
        out[path.stem] = records
    return out


def print_evaluation(result: dict[str, list[dict]]) -> None:
    """Per dataset and model: the mean numbers, and what each rule "gain > c se" keeps."""
    for name, records in result.items():
        for model in sorted({r["model"] for r in records}):
            rs = [r for r in records if r["model"] == model]
            print(f"{name:16s} {model:24s} seed acc {np.mean([r['seed_accuracy'] for r in rs]):.3f} "
                  f"gain {np.mean([r['gain'] for r in rs]):+.3f} (se {np.mean([r['se'] for r in rs]):.3f}) "
                  f"held acc gain {np.mean([r['held_accuracy_gain'] for r in rs]):+.3f} "
                  f"held loss gain {np.mean([r['held_loss_gain'] for r in rs]):+.3f}")
            for c in (-1.0, 0.0, 0.5, 1.0):
                keep = [r for r in rs if r["gain"] > c * r["se"] + 1e-6]
                released = [r for r in rs if r not in keep]
                print(f"    keep if gain > {c:+.1f} se: kept {len(keep)}/{len(rs)}; held acc gain when kept "
                      f"{np.mean([r['held_accuracy_gain'] for r in keep]) if keep else float('nan'):+.3f}, "
                      f"when released {np.mean([r['held_accuracy_gain'] for r in released]) if released else float('nan'):+.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["stackoverflow", "20newsgroups", "imdb"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--held", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="the folder the collection writes (NAME.npz per dataset)")
    parser.add_argument("--evaluate", type=Path, help="compare the rules on a collection's folder instead")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--json", type=Path, help="with --evaluate: every draw's numbers to this file")
    args = parser.parse_args(argv)
    if args.evaluate:
        result = evaluate(args.evaluate, args.draws, args.seeds)
        print_evaluation(result)
        if args.json:
            args.json.write_text(json.dumps(result))
        return 0
    if args.out is None:
        parser.error("give --out (collect) or --evaluate FOLDER")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in args.datasets:
            collect(name, args.n, args.seeds, args.held, args.seed, Path(work), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
