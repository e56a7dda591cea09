"""A smoke test for every script in scripts/ (issue 31): each runs its real code path (its
``main(argv)`` in-process) on the tiniest inputs and its output (the JSON table, or the files it
writes) must be there with the keys its readers use, so a change that breaks a benchmark fails here.

Tiny inputs: random GGUF models (``tests/tiny_gguf.py``) stand in for the starter models through a
models folder of their own (:func:`starter_catalog`), a few rows of the bundled datasets, synthetic
replay files, one round, one seed, one draw. A script that needs what CI cannot have (PyTorch, the
paper's recorded outputs) runs the part it can, or is skipped with the reason.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import io
import json
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from jobs import write_csv
from tiny_gguf import STANDARD_BOOST, write_tiny_gguf

from mollia_edge.al.encoder import encoder_files_dir, encoder_files_problem
from mollia_edge.datasets import DATASETS
from mollia_edge.llm.catalog import MODELS_DIR_ENV

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

PAPER_META = ROOT.parent / "shared" / "data" / "mollia-paper" / "meta"
"""The MoLLIA paper's recorded MoLAM features: ../shared beside the checkout (read-only in CI)."""

STARTERS = ("smollm2-135m-instruct", "gemma3-270m")
CATALOG = "".join(
    f'[models."{name}"]\ndisplay_name = "tiny {name}"\nchat_format = "chatml"\nsource = "tests/tiny_gguf.py"\n'
    f'n_threads = 1\nfiles.F32 = {{ file = "tiny-{i}.gguf" }}\n'  # one thread: a tiny model gains nothing from two
    for i, name in enumerate(STARTERS)
) + f"[defaults]\nstarter = {json.dumps(list(STARTERS))}\n"
FAST_JOB = "--classifier head"
"""Every label job's extra arguments: a head classifier (top-layers training would take most of the time)."""
TREC_LABELS = ("abbreviation", "entity", "description", "human", "location", "numeric")


def script(name: str) -> ModuleType:
    """scripts/NAME.py, imported (each script puts the checkout on sys.path itself)."""
    return importlib.import_module(name)


def read_json(path: Path) -> dict:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text(encoding="utf-8"))


def needs_dataset(name: str) -> None:
    package = DATASETS[name].package[0]
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"dataset {name} needs the {package} data package (make setup installs it)")


def write_trec_replay(folder: Path, rows: int = 60, llms: tuple[str, ...] = ("alpha", "beta", "gamma")) -> Path:
    """Recorded-output files ``trec_<llm>.jsonl`` in the paper's row format: one cue word per
    label in each text, LLMs right about 70% of the time."""
    rng = random.Random(0)
    texts = [(f"{TREC_LABELS[r % 6][:4]}{rng.randrange(3)} what {rng.choice('xyz')} {r}?", TREC_LABELS[r % 6])
             for r in range(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    for llm in llms:
        with (folder / f"trec_{llm}.jsonl").open("w", encoding="utf-8") as handle:
            for text, gold in texts:
                said = gold if rng.random() < 0.7 else rng.choice(TREC_LABELS)
                logits = [0.05] * 6
                logits[TREC_LABELS.index(said)] = 0.8
                handle.write(json.dumps({"text": text, "label": gold, "llm_logits": logits,
                                         "llm_label": [said, said, said, rng.choice(TREC_LABELS)]}) + "\n")
    return folder


def reviews(path: Path, rows: int = 8) -> Path:
    """A table of short reviews with a text and a gold column."""
    rng = random.Random(1)
    words = {"positive": "good great lovely fine", "negative": "bad awful poor terrible"}
    table = []
    for i in range(rows):
        gold = ("positive", "negative")[i % 2]
        text = " ".join(rng.choice(words[gold].split()) for _ in range(4)) + f" film #{i}"
        table.append({"text": text, "gold": gold})
    return write_csv(path, table)


@pytest.fixture(scope="module")
def starter_catalog(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    """A models folder whose catalog names tiny random GGUF files after the starter models (the
    names the scripts use by default) and which links the set-up encoder files: with
    MOLLIA_EDGE_MODELS_DIR on it every script runs its defaults on tiny models."""
    problem = encoder_files_problem(encoder_files_dir())
    if problem:
        pytest.skip(f"the encoder files are not set up ({problem}): make setup")
    folder = tmp_path_factory.mktemp("starter-models")
    shutil.copyfile(tiny_model_path, folder / "tiny-0.gguf")
    write_tiny_gguf(folder / "tiny-1.gguf", seed=1, boost=STANDARD_BOOST)
    (folder / "encoders").symlink_to(encoder_files_dir().parent, target_is_directory=True)
    (folder / "catalog.toml").write_text(CATALOG, encoding="utf-8")
    return folder


@pytest.fixture
def starter_models(starter_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MODELS_DIR_ENV, str(starter_catalog))
    return starter_catalog


@pytest.fixture(scope="module")
def bench_label_work(starter_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """scripts/bench_label.py on 8 rotten-tomatoes rows, 4 of them seeds: (its work folder, its JSON).
    bench_refresh.py reads that folder, as it reads bench_label's in a benchmark."""
    needs_dataset("rotten-tomatoes")
    work = tmp_path_factory.mktemp("bench-label")
    out = work / "bench_label.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODELS_DIR_ENV, str(starter_catalog))
        assert script("bench_label").main(["--datasets", "rotten-tomatoes", "--n", "8", "--seeds", "4", "--skip-before",
                                           "--work", str(work), "--job-args", FAST_JOB, "--out", str(out)]) == 0
    return work, out


# ------------------------------------------------------------------------- the MoLLIA paper's data
@pytest.mark.skipif(not PAPER_META.is_dir(), reason=f"the paper's recorded MoLAM features are not here ({PAPER_META})")
def test_bench_molam(tmp_path):
    """Table 2 on 101 IMDB rows (50 seeds, 51 scored), one draw: the stacked MoLAM (molam.combine's
    default) once broke it. The leave-one-dataset-out grid (--leave-one-out) would take ten times
    longer: not run here."""
    out = tmp_path / "bench_molam.json"
    assert script("bench_molam").main([str(PAPER_META), "--datasets", "imdb", "--draws", "1", "--rows", "101",
                                       "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"draws", "seed_rows", "datasets"} and list(report["datasets"]) == ["imdb"]
    assert report["datasets"]["imdb"].keys() == {
        "molam", "molam_sd", "mol", "mol_sd", "vote", "score_avg", "label_model", "best_single", "singles",
        "fit_seconds", "final_fit_seconds", "ece", "ece_uncalibrated", "base_dawid_skene_share", "seed_accuracy",
        "paper_molam_leaky", "negatives"}
    assert 0 <= report["datasets"]["imdb"]["base_dawid_skene_share"] <= 1 + 1e-9


# ------------------------------------------------------------------------- replayed LLM outputs
def test_replay(tmp_path):
    """replay.py is the library of the replaying benchmarks: its loader on a tiny recording."""
    data = script("replay").load_replay(write_trec_replay(tmp_path, rows=12), "trec")
    assert data.scores.shape == data.consistency.shape == (12, 3, 6) and data.llm_names == ("alpha", "beta", "gamma")
    assert data.gold.tolist() == [r % 6 for r in range(12)]


def test_lexical():
    """lexical.py is a library of bench_al.py: hashed TF-IDF n-grams beside embeddings."""
    lexical = script("lexical")
    texts = ["how many people live here", "who wrote it", "how many"]
    features = lexical.hashed_tfidf(texts, bits=8)
    assert features.shape == (3, 256) and np.allclose(np.linalg.norm(features, axis=1), 1)
    assert lexical.with_lexical_features(np.ones((3, 4)), texts, bits=8).shape == (3, 260)


def test_bench_al(tmp_path, monkeypatch):
    """The AL loop replayed: 60 recorded rows, one seed, one round of 6 queries, MoLAM + vote + oracle."""
    monkeypatch.chdir(tmp_path)  # its caches go to results/cache
    out = tmp_path / "bench_al.json"
    assert script("bench_al").main([str(write_trec_replay(tmp_path / "replay")), "--seeds", "1", "--rounds", "1",
                                    "--test-size", "12", "--seed-size", "12", "--query-size", "6",
                                    "--strategies", "random", "--annotators", "mollia,vote,oracle",
                                    "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"settings", "round10", "round_seconds", "curves", "label_noise"}
    assert report["round10"]["head"]["random"].keys() == {"mollia", "vote", "oracle"}
    assert len(report["curves"]["head"]["random"]["oracle"]["mean"]) == 2  # rounds 0 and 1


def test_bench_stop(tmp_path, monkeypatch):
    """The stopping rule, its TREC replay part: 60 recorded rows, one seed, 1 fixed round against
    --rounds auto (at most 3). Its label-job part (--jobs FOLDER) is not run here: two more label
    jobs (about 4 s each) through bench_label.run_job, the function test_bench_label runs."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "small.toml"
    config.write_text("[al]\nseed_size = 12\nquery_size = 6\nrounds = 1\nmax_rounds = 3\n", encoding="utf-8")
    out = tmp_path / "bench_stop.json"
    assert script("bench_stop").main([str(write_trec_replay(tmp_path / "replay")), "--seeds", "1", "--test-size", "12",
                                      "--config", str(config), "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"trec", "jobs"} and report["jobs"] == []
    assert report["trec"][0].keys() == {"seed", "fixed_rounds", "fixed_f1", "auto_rounds", "auto_f1", "stopped",
                                        "kappas"}
    assert report["trec"][0]["fixed_rounds"] == 1 and 1 <= report["trec"][0]["auto_rounds"] <= 3


def test_bench_al_round(tmp_path):
    """One round per query strategy on a 200-row pool of 16-d embeddings."""
    out = tmp_path / "bench_al_round.json"
    assert script("bench_al_round").main(["--pool", "200", "--dim", "16", "--labelled", "30", "--batch", "5",
                                          "--threads", "1", "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"pool", "dim", "labelled", "strategies"}
    assert set(report["strategies"]) == set(script("bench_al_round").STRATEGIES)


# ------------------------------------------------------------------------- tiny LLMs
def test_bench_annotate(tmp_path, starter_models, monkeypatch):
    """Engine against the fair port and the floor: 2 texts, zero-shot, one model, one timed run."""
    needs_dataset("rotten-tomatoes")
    import llama_cpp

    # the script replaces llama.cpp's default model parameters for its whole process: undone after the test
    defaults = llama_cpp.llama_cpp.llama_model_default_params
    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", defaults)
    out = tmp_path / "bench_annotate.json"
    assert script("bench_annotate").main(["--n", "2", "--shots", "0", "--repeat", "1", "--models", STARTERS[0],
                                          "--threads", "1", "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"dataset", "n", "backend", "threads", "samples", "repeat", "runs"}
    run = report["runs"][0]
    assert run["model"] == STARTERS[0] and run["same_argmax_exact"] == 1.0
    assert {"engine_exact_s", "fair_exact_s", "floor_s", "speedup_sampled", "profile_exact"} <= run.keys()


def test_bench_demos(tmp_path, starter_models):
    """Zero-shot, shared and retrieved demonstrations: 2 texts, 4 seed rows, both starter models."""
    needs_dataset("rotten-tomatoes")
    out = tmp_path / "bench_demos.json"
    assert script("bench_demos").main(["--dataset", "rotten-tomatoes", "--n", "2", "--seeds", "4", "--shots", "1",
                                       "--threads", "1", "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"settings", "results"}
    assert set(report["results"]) == {f"{m} {s}" for m in STARTERS for s in ("zero-shot", "shared", "retrieved")}


def test_bench_task(tmp_path, starter_models):
    """Label names against a task file's descriptions: 2 rotten-tomatoes texts, both starter models."""
    needs_dataset("rotten-tomatoes")
    out = tmp_path / "bench_task.json"
    assert script("bench_task").main(["--datasets", "rotten-tomatoes", "--n", "2", "--max-text-tokens", "32",
                                      "--threads", "1", "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"n", "seed", "max_text_tokens", "rows"}
    assert {(r["prompt"], r["model"]) for r in report["rows"]} == {(p, m) for p in ("names", "descriptions")
                                                                   for m in STARTERS}


def test_record_replay(tmp_path, starter_models):
    """A replay folder recorded by both starter models (4 rows, 2 samples): one file per model that
    replay.py reads back, as bench_al.py --dataset does."""
    needs_dataset("rotten-tomatoes")
    folder = tmp_path / "replay"
    assert script("record_replay").main(["--n", "4", "--demo-pool", "4", "--shots", "1", "--samples", "2",
                                         "--threads", "1", "--store", str(tmp_path / "store.sqlite"),
                                         "--out", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["rotten-tomatoes_gemma3.jsonl", "rotten-tomatoes_smollm2.jsonl"]
    row = json.loads((folder / "rotten-tomatoes_gemma3.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert row.keys() == {"text", "label", "llm_logits", "llm_label"} and len(row["llm_label"]) == 2
    data = script("replay").load_replay(folder, "rotten-tomatoes")
    assert data.scores.shape == (4, 2, 2)


# ------------------------------------------------------------------------- label jobs
def test_bench_label(bench_label_work):
    """The label job against gold: 8 rows, 4 seeds, one job (--skip-before: the `before` job is
    another one), its classifier `head`."""
    work, out = bench_label_work
    report = read_json(out)
    assert report.keys() == {"settings", "results"}
    result = report["results"][0]
    assert {"dataset", "job", "job_seconds", "stage_seconds", "peak_rss_mib", "classifier", "seed_only",
            "seed_only_self_trained"} <= result.keys()
    assert result["job"]["final"]["rows"] == 4 and (work / "rotten-tomatoes" / "session.sqlite").is_file()


def test_bench_label_multi_label(starter_catalog, tmp_path, monkeypatch):
    """The multi-label job against gold (bench_label --multi-label): 8 topic-pair rows of bbc-news, 4 seeds."""
    needs_dataset("bbc-news")
    monkeypatch.setenv(MODELS_DIR_ENV, str(starter_catalog))
    out = tmp_path / "bench.json"
    assert script("bench_label").main(["--multi-label", "--datasets", "bbc-news", "--n", "8", "--seeds", "4",
                                       "--work", str(tmp_path), "--job-args", FAST_JOB, "--out", str(out)]) == 0
    (result,) = read_json(out)["results"]
    assert result["dataset"] == "bbc-news-pairs" and result["job"]["final"]["rows"] == 4
    assert {"micro_f1", "macro_f1"} <= result["seed_only"].keys() and result["llm_seconds"]
    table = script("bench_multilabel").table([result], "multi-label")  # the script's own table
    assert table.row_count == 1 and "seed-only micro-F1" in [c.header for c in table.columns]


def test_setfit_baseline_and_the_setfit_column(bench_label_work, tmp_path):
    """scripts/setfit_baseline.py needs a venv with setfit and torch (never this project's): its
    ECE is checked here, the training runs only where setfit is installed; bench_label's
    --setfit-python and --reuse are run end to end with a stand-in python that prints what the
    script prints (a log line, then its JSON), on the rows of the reused run."""
    import numpy as np

    baseline = script("setfit_baseline")
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    # bins (.8,.9]: confidences .9 and .8 both right; (.6,.7]: .7 right; (.5,.6]: .6 wrong
    assert baseline._ece(proba, np.array([0, 0, 1, 1])) == pytest.approx(0.5 * 0.15 + 0.25 * 0.3 + 0.25 * 0.6)
    if importlib.util.find_spec("setfit") is not None:
        task = tmp_path / "task.csv"
        task.write_text("text,label,gold\ngood,pos,pos\nbad,neg,neg\nfine,,pos\n", encoding="utf-8")
        assert baseline.main([str(task)]) == 0
    _, reused = bench_label_work
    fake = tmp_path / "python"
    printed = json.dumps({"accuracy": 0.5, "ece": 0.1, "rows": 4, "seeds": 4, "train_seconds": 1.0,
                          "predict_seconds": 0.1})
    fake.write_text(f"#!/bin/sh\necho \"{{'train_runtime': 1}}\"\necho '{printed}'\n", encoding="utf-8")
    fake.chmod(0o755)
    out = tmp_path / "bench.json"
    assert script("bench_label").main(["--datasets", "rotten-tomatoes", "--n", "8", "--seeds", "4", "--reuse",
                                       str(reused), "--setfit-python", str(fake), "--work", str(tmp_path / "w"),
                                       "--out", str(out)]) == 0
    (result,) = read_json(out)["results"]
    assert result["setfit"]["accuracy"] == 0.5 and result["job"] == read_json(reused)["results"][0]["job"]
    assert (tmp_path / "w" / "rotten-tomatoes" / "task.csv").is_file()


def test_bench_refresh(bench_label_work, starter_models, tmp_path):
    """refresh_text_annotator on bench_label's work folder (copied; its stored LLM outputs reused):
    the `on` arm only (--arms on), one label job."""
    work, _ = bench_label_work
    assert script("bench_refresh").main(["rotten-tomatoes", "--source", f"rotten-tomatoes={work / 'rotten-tomatoes'}",
                                         "--work", str(tmp_path), "--arms", "on", "--job-args", FAST_JOB]) == 0
    results = read_json(tmp_path / "results.json")
    assert list(results) == ["rotten-tomatoes/on"]
    assert results["rotten-tomatoes/on"].keys() == {"final", "by_source", "teacher", "seconds", "mode"}


def test_bench_long_texts(tmp_path, starter_models):
    """Long texts cut or chunked: one variant (truncate) of the label job on 8 rotten-tomatoes rows
    (short texts: the code path is the same, and 20newsgroups posts would take several times longer)."""
    needs_dataset("rotten-tomatoes")
    out = tmp_path / "bench_long_texts.json"
    assert script("bench_long_texts").main(["--dataset", "rotten-tomatoes", "--n", "8", "--seeds", "4",
                                            "--variants", "truncate", "--work", str(tmp_path / "work"),
                                            "--job-args", FAST_JOB, "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"dataset", "rows", "seeds", "seed", "variants", "seed_only"}
    assert [v["variant"] for v in report["variants"]] == ["truncate"] and report["seed_only"].keys() == {"truncate",
                                                                                                        "chunk"}


def test_bench_scale(tmp_path, starter_models):
    """The label job at scale: the all-resident variant only, both starters and a third tiny model."""
    needs_dataset("rotten-tomatoes")
    third = write_tiny_gguf(tmp_path / "third.gguf", seed=2, boost=STANDARD_BOOST)
    out = tmp_path / "bench_scale.json"
    assert script("bench_scale").main(["--third", str(third), "--n", "8", "--seeds", "4", "--variants", "all-resident",
                                       "--work", str(tmp_path / "work"), "--job-args", FAST_JOB,
                                       "--out", str(out)]) == 0
    report = read_json(out)
    assert report.keys() == {"settings", "results"} and list(report["results"]) == ["all-resident"]
    result = report["results"]["all-resident"]
    assert result["ratio"] == 1.0 and result["same_output"] is True and len(result["loads"]) == 3


def test_tui_screenshots(tmp_path, starter_models):
    """The scripted TUI session (4 seed rows by key, one round, 2 review answers, the export) on 8
    rows. --svg: the PNG step needs cairosvg, a build-time tool that is not installed."""
    data = reviews(tmp_path / "in.csv")
    docs = tmp_path / "docs"
    docs.mkdir()
    assert script("tui_screenshots").main([str(data), "-o", str(tmp_path / "out.csv"), "--labels", "positive,negative",
                                           "--seeds", "4", "--reviews", "2", "--llm-sample", "4", "--rounds", "1",
                                           "--batch", "2", "--classifier", "head", "--docs", str(docs), "--svg"]) == 0
    assert sorted(p.name for p in docs.iterdir()) == sorted(
        f"tui-{name}.svg" for name in ("setup", "seed", "run", "review", "models", "export"))
    assert (tmp_path / "out.csv").is_file()


# ------------------------------------------------------------------------- build-time tools
def test_export_encoder_check_only(tmp_path, monkeypatch):
    """--check-only on a folder holding the shipped encoder (cosine 1 on 3 reviews). The export
    itself needs PyTorch, transformers and optimum, which mollia-edge never depends on: without
    them the script must refuse with the command that installs them (and write nothing)."""
    needs_dataset("rotten-tomatoes")
    problem = encoder_files_problem(encoder_files_dir())
    if problem:
        pytest.skip(f"the encoder files are not set up ({problem}): make setup")
    from mollia_edge.al.encoder import default_model_path

    export_encoder = script("export_encoder")
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(default_model_path())
    shutil.copyfile(encoder_files_dir() / "tokenizer.json", folder / "tokenizer.json")
    report = tmp_path / "check.json"
    assert export_encoder.main(["--check-only", str(folder), "--check", "3", "--report", str(report)]) == 0
    result = read_json(report)
    assert {"texts", "encoder", "cosine_min", "cosine_mean", "below_min"} <= result.keys() and result["below_min"] == 0

    if all(importlib.util.find_spec(name) for name in ("torch", "transformers", "optimum")):
        return  # the export could run here: not in a smoke test
    source = tmp_path / "hf-model"
    source.mkdir()
    (source / "config.json").write_text("{}", encoding="utf-8")
    shutil.copyfile(folder / "tokenizer.json", source / "tokenizer.json")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    assert export_encoder.main([str(source), "--name", "x"]) == 2
    assert not (tmp_path / "models").exists()


def test_make_reference_embeddings(tmp_path):
    """Its argument parser and its texts against the file it wrote (tests/data/minilm_reference.npz).
    Computing the embeddings needs sentence-transformers (PyTorch), never a dependency."""
    module = script("make_reference_embeddings")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    with np.load(ROOT / "tests" / "data" / "minilm_reference.npz") as reference:
        assert json.loads(str(reference["texts"])) == module.TEXTS
        assert reference["embeddings"].shape == (len(module.TEXTS), 384) and int(reference["max_length"]) == 128
    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(ModuleNotFoundError, match="sentence_transformers"):
            module.main(["--out", str(tmp_path / "ref.npz")])
        assert not (tmp_path / "ref.npz").exists()


def test_bench_report(tmp_path):
    """bench_report.py is the benchmarks' shared ending: the table printed, the JSON written."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="t")
    table.add_column("c")
    table.add_row("cell")
    screen = io.StringIO()
    out = tmp_path / "x" / "r.json"
    script("bench_report").print_and_save(Console(file=screen, width=80), table, {"a": [1, 2]}, out)
    assert read_json(out) == {"a": [1, 2]} and "cell" in screen.getvalue()


def test_dev_llm_value(starter_catalog, tmp_path, monkeypatch):
    """The value rule's dev collection on 30 rotten-tomatoes rows (10 seeds, 10 held out), then
    its evaluation, one draw of 10 seed rows."""
    needs_dataset("rotten-tomatoes")
    monkeypatch.setenv(MODELS_DIR_ENV, str(starter_catalog))
    folder = tmp_path / "collected"
    assert script("dev_llm_value").main(["--datasets", "rotten-tomatoes", "--n", "30", "--seeds", "10",
                                         "--held", "10", "--out", str(folder)]) == 0
    data = np.load(folder / "rotten-tomatoes.npz")
    assert data["scores"].shape == (20, 3, 2) and list(data["names"]) == list(STARTERS)  # + the text annotator
    out = tmp_path / "evaluation.json"
    assert script("dev_llm_value").main(["--evaluate", str(folder), "--draws", "1", "--seeds", "10",
                                         "--json", str(out)]) == 0
    records = read_json(out)["rotten-tomatoes"]
    assert {r["model"] for r in records} == set(STARTERS)
    assert {"gain", "se", "held_accuracy_gain", "held_loss_gain"} <= records[0].keys()


def test_bench_guarantee(tmp_path):
    """The guarantee's benchmark on 160 rotten-tomatoes rows, 20 seed rows, one draw and its reviews."""
    needs_dataset("rotten-tomatoes")
    out = tmp_path / "bench_guarantee.json"
    assert script("bench_guarantee").main(["--datasets", "rotten-tomatoes", "--n", "160", "--seeds", "20", "--draws", "1",
                                           "--targets", "0.3", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    (result,) = read_json(out)["results"]
    assert {"0", "25", "50", "100"} <= result.keys() and {"accepted", "error", "exceeded"} <= result["100"].keys()


def test_bench_guarantee_orders_the_simulated_reviews_as_asked():
    """``screen`` is the Review screen's order (random checks first); ``turns`` doubtful rows and
    random checks in turn; ``doubtful`` the rows nearest the threshold only."""
    bench = script("bench_guarantee")
    confidence = np.array([0.0, 0.95, 0.85, 0.99, 0.7, 0.91])
    state = {"rest": np.arange(1, 6), "confidence": confidence, "threshold": 0.9}
    screen = bench.queue(state, np.random.default_rng(0))
    assert all(check for _, check in screen) and sorted(r for r, _ in screen) == [1, 2, 3, 4, 5]
    turns = bench.queue(state, np.random.default_rng(0), "turns")
    assert turns[0] == (2, False) and turns[1][1] and sorted(r for r, _ in turns) == [1, 2, 3, 4, 5]  # each row once
    assert bench.in_turns([7, 8], [9, 7, 5]) == [(7, False), (9, True), (8, False), (5, True)]
    assert bench.queue(state, np.random.default_rng(0), "doubtful") == [(2, False), (4, False)]
