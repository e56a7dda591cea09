"""The stopping rule (`--rounds auto`) against the fixed 10 rounds: rounds used and final accuracy.

1. The TREC replay (``scripts/bench_al.py``'s: recorded LLM outputs, MoLAM + NL + AD, BEMPS,
   head classifier, 500 test rows, 50 seed rows), per seed: the fixed 10 rounds, and ``auto``
   (stabilising predictions on a stop set of pool rows, at most ``al.max_rounds``); micro-F1 of
   the last round's classifier on the test rows.
2. Label jobs on bundled datasets (``--jobs FOLDER/DATASET``: folders ``scripts/bench_label.py
   --work`` left, whose session stores hold the LLM outputs): the job with 10 rounds and with
   ``--rounds auto``, both run by today's code; final-label accuracy on the non-seed rows.

    python scripts/bench_stop.py ../shared/data/mollia-paper --jobs W/rotten-tomatoes W/bbc-news --out docs/stop/bench_stop.json

``--config FILE``: a mollia-edge configuration (TOML) for both parts instead of the defaults: the
replay's ``[al]`` and ``[molam]`` settings, and every job's ``--config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_al import annotators_for, model_inputs, split
from bench_label import ITEMS, run_job
from bench_report import print_and_save

from mollia_edge.al.loop import ActiveLearningTask, draw_seed_rows, run_active_learning
from replay import load_replay
from mollia_edge.al.stopping import StoppingRule, stop_set
from mollia_edge.config import Config, load_config
from mollia_edge.randomness import derived_seed


def replay(folder: Path, seeds: int, console: Console, settings: Config, test_size: int = 500) -> list[dict]:
    data = load_replay(folder, "trec", None)
    base = settings.al
    inputs = model_inputs(data, "head", 0, console)
    rows = []
    for seed in range(seeds):
        test, pool = split(len(data.gold), test_size, seed)
        seed_rows = draw_seed_rows(pool, base.seed_size, seed)
        task = ActiveLearningTask(inputs, pool, len(data.labels), data.gold, test)
        annotator, config = annotators_for(data, ["mollia"], seed_rows, pool, seed, base, settings.molam,
                                           console)["mollia"]
        fixed = run_active_learning(task, annotator, "bemps", config=config, seed=seed, seed_rows=seed_rows)
        rule = StoppingRule(rows=stop_set(pool, derived_seed(seed, 23)), n_classes=len(data.labels),
                            threshold=base.stop_kappa, window=base.stop_window)
        auto = run_active_learning(task, annotator, "bemps", config=dataclasses.replace(config, rounds=base.max_rounds),
                                   seed=seed, seed_rows=seed_rows, stopping=rule)
        rows.append({"seed": seed, "fixed_rounds": fixed[-1].round, "fixed_f1": fixed[-1].micro_f1,
                     "auto_rounds": auto[-1].round, "auto_f1": auto[-1].micro_f1, "stopped": auto[-1].stopped,
                     "kappas": [m.stop_kappa for m in auto]})
        console.print(f"trec seed {seed}: fixed {fixed[-1].micro_f1:.4f} at {fixed[-1].round}, auto {auto[-1].micro_f1:.4f} "
                      f"at {auto[-1].round} ({auto[-1].stopped})")
    return rows


def job(folder: Path, console: Console, config: Path | None = None) -> dict:
    """The bench_label job on ``folder`` with 10 rounds and with ``--rounds auto``, today's code,
    one session store (its LLM outputs are reused); ``config``: every job's ``--config``."""
    reports = {}
    for name, extra in (("fixed", []), ("auto", ["--rounds", "auto"])):
        out = folder / name / "labelled.csv"
        if out.parent.exists():
            shutil.rmtree(out.parent)
        shared = ["--seed", "0", "--labels-file", str(folder / "labels.txt"), "--session", str(folder / "session.sqlite")]
        if config is not None:
            shared += ["--config", str(config)]
        reports[name], seconds = run_job(folder / "task.csv", out, ITEMS.get(folder.name, "text"), [*shared, *extra])
        reports[name]["wall_seconds"] = seconds
    fixed, auto = reports["fixed"], reports["auto"]
    stop = auto.get("al_stop") or {}
    console.print(f"{folder.name}: fixed {fixed['gold']['final']['accuracy']:.3f} at {fixed['rounds']}, auto "
                  f"{auto['gold']['final']['accuracy']:.3f} at {auto['rounds']} ({stop.get('stopped')})")
    return {"dataset": folder.name, "fixed_rounds": fixed["rounds"], "fixed_accuracy": fixed["gold"]["final"]["accuracy"],
            "auto_rounds": auto["rounds"], "auto_accuracy": auto["gold"]["final"]["accuracy"],
            "stopped": stop.get("stopped"), "kappas": stop.get("kappas"),
            "fixed_stage_seconds": fixed["seconds"], "auto_stage_seconds": auto["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with the recorded TREC files")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=Path, nargs="*", default=[], help="bench_label work folders, one per dataset")
    parser.add_argument("--test-size", type=int, default=500, help="TREC replay: test rows per seed")
    parser.add_argument("--config", type=Path, help="mollia-edge configuration (TOML) for the replay and every job")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    console = Console(width=150)
    settings = load_config(args.config)
    trec = replay(args.data, args.seeds, console, settings, args.test_size) if args.seeds else []
    jobs = [job(folder, console, args.config) for folder in args.jobs]
    al, kappa = settings.al, f"{settings.al.stop_kappa:g}".lstrip("0")
    table = Table(title=f"fixed {al.rounds} rounds vs --rounds auto (kappa >= {kappa} for "
                        f"{al.stop_window} rounds, at most {al.max_rounds}): rounds used and final accuracy (TREC replay: "
                        f"micro-F1 on {args.test_size} test rows, mean over seeds; jobs: final labels)")
    for column in ("data", "fixed rounds", "fixed", "auto rounds", "auto"):
        table.add_column(column, justify="left" if column == "data" else "right")
    if trec:
        table.add_row(f"TREC replay ({args.seeds} seeds)", str(al.rounds), f"{np.mean([r['fixed_f1'] for r in trec]):.4f}",
                      " ".join(str(r["auto_rounds"]) for r in trec), f"{np.mean([r['auto_f1'] for r in trec]):.4f}")
    for r in jobs:
        table.add_row(r["dataset"], str(r["fixed_rounds"]), f"{r['fixed_accuracy']:.3f}", str(r["auto_rounds"]),
                      f"{r['auto_accuracy']:.3f}")
    print_and_save(console, table, {"trec": trec, "jobs": jobs}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
