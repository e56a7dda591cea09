"""The label job at scale: models taking turns, annotating ahead, Ray; one table and a JSON file.

One 1,000-row job (rotten-tomatoes, 50 seed rows, seed 0, defaults) with three models - the
two starters and a third given as a path (the README's Qwen2.5-Coder-0.5B Q4_K_M, benchmark-only)
- run once per variant, each in a process of its own with a session store of its own (cold: no
LLM output is reused), one after the other on the same machine:

* ``all-resident``: the default memory budget keeps the three models loaded together;
* ``one-resident``: ``--max-resident-models 1``, models take turns;
* ``ahead-one-resident``: ``--annotate-ahead --max-resident-models 1`` (the paper's way);
* ``ray-local-2``: ``--ray local --ray-actors 2`` (each actor 1 CPU: one llama.cpp model per actor);
* ``largest-only``: the third model alone (the peak RSS one resident model should stay near).

With ``--repeats R`` the variants run R times, interleaved (all-resident, one-resident, all-resident,
...), each time in a fresh folder: job seconds are the median, the ratio is the median of each
repeat's ratio to the ``all-resident`` run beside it, and every repeat's ratio is listed. The
same for CPU seconds (user + system of the job's process and the children it waits for; Ray's
actors are not among them): other tenants of a shared machine stretch wall time far more.

Columns: job seconds and their ratio to ``all-resident`` (measured in the same run), the job's
peak RSS (the driver process; Ray's actors are other processes and not counted), the models'
loads, and whether the labelled file is byte-identical to ``all-resident``'s (it must be for
``one-resident`` and Ray; annotating ahead labels other rows by design).

    python scripts/bench_scale.py --third models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --out docs/scale/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_report import print_and_save

from mollia_edge.data import write_table_atomic
from mollia_edge.datasets import load_dataset

VARIANTS = {
    "all-resident": [],
    "one-resident": ["--max-resident-models", "1"],
    "ahead-one-resident": ["--annotate-ahead", "--max-resident-models", "1"],
    "ray-local-2": ["--ray", "local", "--ray-actors", "2"],
    "largest-only": [],
}
"""Each variant's extra arguments; ``largest-only`` runs the third (largest) model alone: the
peak RSS that ``one-resident`` should stay near (its output differs: one model)."""


def write_task(folder: Path, n: int, seeds: int, seed: int) -> Path:
    data = load_dataset("rotten-tomatoes").sample(n, seed)
    labels = tuple(data.label_names)
    task = folder / "task.csv"
    write_table_atomic(task, [{"text": t, "label": labels[g] if i < seeds else "", "gold": labels[g]}
                              for i, (t, g) in enumerate(zip(data.texts, data.labels))], ("text", "label", "gold"))
    return task


def run_variant(task: Path, folder: Path, models: str, extra: list[str], seed: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "labelled.csv"
    argv = [sys.executable, "-m", "mollia_edge", "label", str(task), "--item", "review", "--gold-column", "gold",
            "--models", models, "--chat-format", "chatml", "--seed", str(seed), "--quiet", "-o", str(out), *extra]
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"label job failed ({' '.join(extra)}): {done.stderr.strip()[-500:]}")
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mib": report["peak_rss_mib"],
            "loads": report["llm_residency"]["loads"], "resident": report["llm_residency"]["resident"],
            "accuracy": report["gold"]["final"]["accuracy"], "stage_seconds": report["seconds"],
            "output": out.read_bytes()}


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: on a shared machine
    whose other tenants slow every stage alike, less noisy than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def table(results: dict[str, dict], title: str) -> Table:
    out = Table(title=title)
    columns = ("variant", "job s", "x all-resident", "each repeat", "CPU s", "x CPU", "peak RSS MiB", "loads", "same output", "accuracy")
    for column in columns:
        out.add_column(column, justify="left" if column in ("variant", "loads", "each repeat") else "right")
    for name, r in results.items():
        out.add_row(name, f"{r['seconds']:.0f}", f"{r['ratio']:.2f}", " ".join(f"{x:.2f}" for x in r["ratios"]),
                    f"{r['cpu_seconds']:.0f}", f"{r['cpu_ratio']:.2f}",
                    f"{r['peak_rss_mib']:.0f}", " ".join(f"{m.split('-')[0]} {v}" for m, v in r["loads"].items()),
                    "yes" if r["same_output"] else "no", f"{r['accuracy']:.3f}")
    return out


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: the median seconds of its repeats, the median and each of its per-repeat
    ratios to the all-resident run of the same repeat, the largest peak RSS, and whether every
    repeat's output equals the first all-resident output."""
    base, reference = runs["all-resident"], runs["all-resident"][0]["output"]
    results = {}
    for name, each in runs.items():
        ratios = [r["seconds"] / b["seconds"] for r, b in zip(each, base)]
        cpu_ratios = [r["cpu_seconds"] / b["cpu_seconds"] for r, b in zip(each, base)]
        results[name] = {**{k: v for k, v in each[0].items() if k != "output"},
                         "seconds": round(float(np.median([r["seconds"] for r in each])), 1),
                         "runs": [r["seconds"] for r in each], "ratio": round(float(np.median(ratios)), 3),
                         "ratios": [round(x, 3) for x in ratios],
                         "cpu_seconds": round(float(np.median([r["cpu_seconds"] for r in each])), 1),
                         "cpu_runs": [r["cpu_seconds"] for r in each], "cpu_ratio": round(float(np.median(cpu_ratios)), 3),
                         "cpu_ratios": [round(x, 3) for x in cpu_ratios],
                         "peak_rss_mib": max(r["peak_rss_mib"] for r in each),
                         "same_output": all(r["output"] == reference for r in each),
                         "stage_seconds": [r["stage_seconds"] for r in each]}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--third", type=Path, required=True, help="the third model's .gguf file (chatml)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budget-words", type=int, help="llm.budget_words for every variant (default: the job's)")
    parser.add_argument("--repeats", type=int, default=1, help="run the variants this many times, interleaved")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--job-args", default="",
                        help="more `mollia-edge label` arguments for every job (e.g. '--classifier head')")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not args.third.is_file():
        raise SystemExit(f"no such model file: {args.third} (see the README's quantization section)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    task = write_task(work, args.n, args.seeds, args.seed)
    models = f"smollm2-135m-instruct,gemma3-270m,{args.third.resolve()}"
    extra = shlex.split(args.job_args)
    if args.budget_words is not None:
        (work / "budget.toml").write_text(f"[llm]\nbudget_words = {args.budget_words}\n", encoding="utf-8")
        extra += ["--config", str(work / "budget.toml")]
    variants = ["all-resident", *[v for v in args.variants if v != "all-resident"]]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in variants:
            chosen = str(args.third.resolve()) if name == "largest-only" else models
            folder = work / name if args.repeats == 1 else work / f"{name}-{repeat}"
            runs[name].append(run_variant(task, folder, chosen, [*VARIANTS[name], *extra], args.seed))
            print(f"{name} ({repeat + 1}/{args.repeats}): {runs[name][-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    results = summarise(runs)
    title = (f"label job at scale: {args.n} rotten-tomatoes rows, {args.seeds} seed rows, seed {args.seed}, "
             f"3 models (SmolLM2-135M, Gemma-3-270M, {args.third.name}), "
             f"{'defaults' if args.budget_words is None else f'llm.budget_words = {args.budget_words}'}, one process per variant"
             f"{f', {args.repeats} repeats interleaved (medians)' if args.repeats > 1 else ''}")
    report = {"settings": vars(args) | {"work": str(work), "out": str(args.out), "third": str(args.third)},
              "results": results}
    print_and_save(Console(width=160), table(results, title), report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
