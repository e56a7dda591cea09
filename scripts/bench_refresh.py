"""molam.refresh_text_annotator off against on: the label job in fresh sessions over the LLM outputs
of earlier bench_label / bench_long_texts runs (their folders below; a copy per arm, so each arm
reads the same stored outputs and computes what it queries anew).

    python scripts/bench_refresh.py stackoverflow rotten-tomatoes yahoo bbc-news   # -> W/results.json

Folders: the work folders of ``scripts/bench_label.py --work`` (SOURCES); edit them for yours.
"""
import json, shutil, sqlite3, subprocess, sys, time
from pathlib import Path
ITEMS = {"rotten-tomatoes": "review", "bbc-news": "news article", "yahoo": "question and answer",
         "stackoverflow": "question title", "20newsgroups": "newsgroup post"}
SOURCES = {"stackoverflow": Path("/tmp/bench/dev2/stackoverflow"), "20newsgroups": Path("/tmp/bench/dev2/20newsgroups"),
           "rotten-tomatoes": Path("/tmp/bench/final5/rotten-tomatoes"), "bbc-news": Path("/tmp/bench/longbbc/bbc-news"),
           "yahoo": Path("/tmp/bench/final5/yahoo")}
WORK = Path("/tmp/bench/refresh")
results = json.loads((WORK / "results.json").read_text()) if (WORK / "results.json").exists() else {}
for name in sys.argv[1:]:
    for arm in ("off", "on"):
        key = f"{name}/{arm}"
        if key in results:
            continue
        folder = WORK / f"{name}-{arm}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        src = SOURCES[name]
        for f in ("task.csv", "labels.txt", "session.sqlite", "session.sqlite.embeddings"):
            if (src / f).is_dir():
                shutil.copytree(src / f, folder / f)
            elif (src / f).exists():
                shutil.copy2(src / f, folder / f)
        db = sqlite3.connect(folder / "session.sqlite")
        for table in ("al_labels", "al_rounds", "al_runs", "session_review", "session_audit", "session_labels", "session_stages", "sessions"):
            db.execute(f"DELETE FROM {table}")
        db.commit(); db.close()
        extra = []
        if arm == "on":
            (folder / "on.toml").write_text("[molam]\nrefresh_text_annotator = true\n")
            extra = ["--config", str(folder / "on.toml")]
        out = folder / "job" / "labelled.csv"
        out.parent.mkdir()
        argv = [sys.executable, "-m", "mollia_edge", "label", str(folder / "task.csv"), "--item", ITEMS[name],
                "--gold-column", "gold", "--quiet", "-o", str(out), "--seed", "0", "--labels-file", str(folder / "labels.txt"),
                "--session", str(folder / "session.sqlite"), *extra]
        t = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd="/work/main")
        if done.returncode:
            print(key, "failed", done.stderr[-800:], flush=True); continue
        r = json.loads(out.with_name(out.name + ".report.json").read_text())
        g = r["gold"]
        results[key] = {"final": g["final"]["accuracy"], "by_source": {s: (v["accuracy"], v["rows"]) for s, v in g["by_source"].items()},
                        "teacher": r["classifier_teacher"]["teacher"], "seconds": round(time.perf_counter() - t, 1),
                        "mode": r["classifier"]["mode"]}
        print(key, results[key], flush=True)
        (WORK / "results.json").write_text(json.dumps(results, indent=1))
