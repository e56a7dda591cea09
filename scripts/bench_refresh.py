"""molam.refresh_text_annotator off against on: the label job in fresh sessions over the LLM outputs
of earlier bench_label / bench_long_texts runs (their folders below; a copy per arm, so each arm
reads the same stored outputs and computes what it queries anew).

    python scripts/bench_refresh.py stackoverflow rotten-tomatoes yahoo bbc-news   # -> W/results.json

Folders: the work folders of ``scripts/bench_label.py --work`` (SOURCES, or ``--source NAME=FOLDER``);
``--work`` (W, default /tmp/bench/refresh) keeps the arms' copies and ``results.json``: an arm
already there is not run again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS = {"rotten-tomatoes": "review", "bbc-news": "news article", "yahoo": "question and answer",
         "stackoverflow": "question title", "20newsgroups": "newsgroup post"}
SOURCES = {"stackoverflow": Path("/tmp/bench/dev2/stackoverflow"), "20newsgroups": Path("/tmp/bench/dev2/20newsgroups"),
           "rotten-tomatoes": Path("/tmp/bench/final5/rotten-tomatoes"), "bbc-news": Path("/tmp/bench/longbbc/bbc-news"),
           "yahoo": Path("/tmp/bench/final5/yahoo")}
WORK = Path("/tmp/bench/refresh")
ARMS = ("off", "on")
SESSION_TABLES = ("al_labels", "al_rounds", "al_runs", "session_review", "session_audit", "session_labels",
                  "session_stages", "sessions")
"""Emptied in each arm's copy of the session store: only the stored LLM outputs are kept."""


def run_arm(name: str, arm: str, source: Path, work: Path, job_args: list[str]) -> dict | None:
    """The label job on a fresh copy of ``source`` with refresh_text_annotator ``arm``; its
    report's figures, or None when the job failed (its error printed)."""
    folder = work / f"{name}-{arm}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in ("task.csv", "labels.txt", "session.sqlite", "session.sqlite.embeddings"):
        if (source / f).is_dir():
            shutil.copytree(source / f, folder / f)
        elif (source / f).exists():
            shutil.copy2(source / f, folder / f)
    db = sqlite3.connect(folder / "session.sqlite")
    for table in SESSION_TABLES:
        db.execute(f"DELETE FROM {table}")
    db.commit()
    db.close()
    extra = []
    if arm == "on":
        (folder / "on.toml").write_text("[molam]\nrefresh_text_annotator = true\n")
        extra = ["--config", str(folder / "on.toml")]
    out = folder / "job" / "labelled.csv"
    out.parent.mkdir()
    argv = [sys.executable, "-m", "mollia_edge", "label", str(folder / "task.csv"), "--item", ITEMS.get(name, "text"),
            "--gold-column", "gold", "--quiet", "-o", str(out), "--seed", "0", "--labels-file", str(folder / "labels.txt"),
            "--session", str(folder / "session.sqlite"), *job_args, *extra]
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        print(f"{name}/{arm}", "failed", done.stderr[-800:], flush=True)
        return None
    r = json.loads(out.with_name(out.name + ".report.json").read_text())
    g = r["gold"]
    return {"final": g["final"]["accuracy"], "by_source": {s: (v["accuracy"], v["rows"]) for s, v in g["by_source"].items()},
            "teacher": r["classifier_teacher"]["teacher"], "seconds": round(time.perf_counter() - t, 1),
            "mode": r["classifier"]["mode"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", help="names of SOURCES (or of --source)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=FOLDER",
                        help="a bench_label work folder for NAME instead of SOURCES' (repeatable)")
    parser.add_argument("--work", type=Path, default=WORK, help=f"the arms' folders and results.json (default: {WORK})")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--job-args", default="",
                        help="more `mollia-edge label` arguments for every job (e.g. '--classifier head')")
    args = parser.parse_args(argv)
    sources = dict(SOURCES)
    for given in args.source:
        name, _, folder = given.partition("=")
        if not name or not folder:
            parser.error(f"--source takes NAME=FOLDER, got {given!r}")
        sources[name] = Path(folder)
    if unknown := [name for name in args.datasets if name not in sources]:
        parser.error(f"no source folder for {', '.join(unknown)}: give --source NAME=FOLDER")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    failed = 0
    for name in args.datasets:
        for arm in args.arms:
            key = f"{name}/{arm}"
            if key in results:
                continue
            result = run_arm(name, arm, sources[name], work, shlex.split(args.job_args))
            if result is None:
                failed += 1
                continue
            results[key] = result
            print(key, results[key], flush=True)
            (work / "results.json").write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
