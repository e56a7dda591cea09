"""``mollia-edge bench quant``: quantization level against annotation accuracy, speed and
memory, for each model and for the MoLAM mixture of all of them.

Every model file annotates the same gold-labelled texts. The first ``seed_size`` of them are
the seed rows MoLAM is fitted on (and demonstrations are drawn from); all accuracies are
measured on the others, the evaluation rows. LLM outputs are cached in a store in the output
folder, so an interrupted run resumes; speed is measured afresh on every run, all files side
by side, and given as a ratio to the fastest level of the same model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..al.loop import f1_scores
from ..calibration import expected_calibration_error
from ..config import Config, QuantBenchConfig, fit_sequences, fixed_shots
from ..cpus import usable_cpus
from ..data import check_label_set, read_texts
from ..errors import ConfigError, DataError, quoted
from ..llm.annotator import LLMAnnotator
from ..llm.catalog import inspect_gguf, load_catalog
from ..llm.prompts import PromptSpec, draw_demonstrations
from ..llm.signals import AnnotationSignals
from ..store import Store
from ..task import Task, with_task
from .frontier import Levels, best_under_budget, evaluate_combinations, pareto_front
from .ladder import LadderSource, LadderStep, build_ladder, find_source, level_name, plan_ladder
from .measure import Measurement, measure_file

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total)."""

SOURCE_LEVEL = "source"
"""The mixture row where every model runs its ladder's source file."""
CELL_FIELDS = (
    "status", "origin", "reason", "file", "sha256", "file_type", "tensor_types", "size_mib", "load_s",
    "peak_rss_mib", "memory_mib", "s_per_text", "speed_ratio", "accuracy", "macro_f1", "ece", "mean_kl",
)
_KL_FLOOR = 1e-12


@dataclass(frozen=True)
class QuantBenchRequest:
    """What to benchmark; ``labels`` None: the label column's values, sorted."""

    models: tuple[str, ...]
    data: Path
    output: Path
    text_column: str = "text"
    label_column: str = "label"
    labels: tuple[str, ...] | None = None
    item: str = "text"
    chat_format: str | None = None
    budget_gb: float | None = None
    bench: QuantBenchConfig = field(default_factory=QuantBenchConfig)
    config: Config = field(default_factory=Config)
    task: Task | None = None
    """The task file's wording of the prompt (:mod:`mollia_edge.task`)."""


@dataclass(frozen=True)
class BenchTexts:
    """``texts`` (n) with gold class indices ``gold`` (n,); ``seed_rows`` and ``eval_rows`` split
    range(n)."""

    texts: list[str]
    gold: np.ndarray
    labels: tuple[str, ...]
    seed_rows: np.ndarray
    eval_rows: np.ndarray


def load_bench_texts(request: QuantBenchRequest) -> BenchTexts:
    """A seeded sample of ``bench.n`` gold-labelled rows; the first ``seed_size`` are seeds."""
    wanted = check_label_set(request.labels) if request.labels else None
    table = read_texts(request.data, request.text_column, request.label_column, wanted)
    assert table.gold is not None
    labelled = [(t, g) for t, g in zip(table.texts, table.gold) if g is not None]
    labels = wanted or check_label_set(sorted({g for _, g in labelled}))
    n, n_seed_rows = request.bench.n, request.bench.seed_size
    if len(labels) < 2:
        raise DataError(f"{request.data}: column {quoted(request.label_column)} needs at least 2 distinct labels")
    if len(labelled) < n:
        raise DataError(
            f"{request.data}: {len(labelled)} rows have a label in {quoted(request.label_column)} but --n is {n}; "
            f"use --n {len(labelled)} or fewer"
        )
    order = np.random.default_rng(request.config.seed).permutation(len(labelled))[:n]
    index = {label: k for k, label in enumerate(labels)}
    return BenchTexts(
        texts=[labelled[i][0] for i in order],
        gold=np.array([index[labelled[i][1]] for i in order], dtype=np.int64),
        labels=labels,
        seed_rows=np.arange(n_seed_rows),
        eval_rows=np.arange(n_seed_rows, n),
    )


def mean_kl(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over rows of KL(reference || other) for label distributions (n, K), in nats."""
    p, q = np.maximum(reference, _KL_FLOOR), np.maximum(other, _KL_FLOOR)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def label_metrics(probabilities: np.ndarray, gold: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and ECE of the argmax label of probabilities (n, K) against gold (n,),
    and the mean KL divergence from the reference distributions (n, K)."""
    accuracy, macro = f1_scores(gold, probabilities.argmax(axis=1), probabilities.shape[1])
    return {
        "accuracy": accuracy, "macro_f1": macro,
        "ece": expected_calibration_error(probabilities, gold), "mean_kl": mean_kl(reference, probabilities),
    }


def mixture_metrics(signals: Sequence[AnnotationSignals], data: BenchTexts, config: Config) -> dict[str, float]:
    """Accuracy and macro-F1 on the evaluation rows of MoLAM fitted on the seed rows over
    the models' signals (one :class:`AnnotationSignals` per model, each n rows)."""
    from ..molam import fit_annotation_model

    scores = np.stack([s.scores for s in signals], axis=1)
    c = np.stack([s.consistency for s in signals], axis=1)
    seed_rows, rest = data.seed_rows, data.eval_rows
    model = fit_annotation_model(
        scores[seed_rows], c[seed_rows], data.gold[seed_rows], scores[rest], c[rest], len(data.labels),
        config=config.molam, seed=config.seed,
    )
    accuracy, macro = f1_scores(data.gold[rest], model.predict(scores[rest], c[rest]), len(data.labels))
    return {"accuracy": accuracy, "macro_f1": macro}


def _tensor_mix(types: dict[str, int]) -> dict[str, int]:
    return dict(sorted(types.items(), key=lambda item: -item[1]))


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """``progress`` for one stage, as the (done, total) callback the lower layers take."""
    return (lambda done, total: progress(stage, done, total)) if progress else None


def _measure_files(
    name: str,
    steps: Sequence[LadderStep],
    prompt: PromptSpec,
    request: QuantBenchRequest,
    store_path: Path,
    texts: Sequence[str],
    timing: Sequence[str],
    progress: Progress | None,
) -> dict[str, Measurement]:
    """Each present file of one model measured ``timing_runs`` times, the runs interleaved over
    the files (a busier spell of the machine slows all levels alike); the first run annotates."""
    measured: dict[str, Measurement] = {}
    for run in range(request.bench.timing_runs):
        for step in steps:
            if step.path is None:
                continue
            stage = f"{name} {step.quant}" if run == 0 else f"{name} timing run {run + 1}"
            latest = measure_file(step.path, prompt, request.config.llm, store_path, texts, timing,
                                  _stage(progress, stage))
            measured[step.quant] = measured[step.quant].best_with(latest) if run else latest
    return measured


def _bench_model(
    source: LadderSource,
    quants: list[str],
    request: QuantBenchRequest,
    data: BenchTexts,
    demonstrations: tuple[tuple[str, str], ...],
    store: Store,
    progress: Progress | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, AnnotationSignals]]:
    """Cells and signals of one model's files by level, the source's own level first."""
    bench, llm = request.bench, request.config.llm
    steps = plan_ladder(source, quants, load_catalog().directory)
    threads = llm.n_threads or usable_cpus()
    hashes = build_ladder(source, steps, store, threads, _stage(progress, f"ladder {source.name}"))
    prompt = with_task(PromptSpec(labels=data.labels, item=request.item, chat_format=source.chat_format,
                                  demonstrations=demonstrations), request.task)
    timing = [data.texts[i] for i in data.eval_rows[: bench.timing_texts]]
    measured = _measure_files(source.name, steps, prompt, request, store.path, data.texts, timing, progress)
    cells: dict[str, dict[str, Any]] = {}
    signals: dict[str, AnnotationSignals] = {}
    for step in steps:
        cell = cells[step.quant] = dict.fromkeys(CELL_FIELDS)
        cell.update(status="skipped", origin=step.origin, reason=step.reason)
        if step.path is None:
            continue
        info, cost = inspect_gguf(step.path), measured[step.quant]
        with LLMAnnotator(step.path, prompt, llm, store) as annotator:  # every output is cached now
            signals[step.quant] = annotator.annotate(data.texts)
        cell.update(
            status="measured", file=step.path.name, sha256=hashes[step.quant], file_type=info.file_type,
            tensor_types=_tensor_mix(dict(info.tensor_types)), size_mib=info.file_size / 2**20,
            load_s=cost.load_s, peak_rss_mib=cost.peak_rss_mib, memory_mib=cost.memory_mib, s_per_text=cost.s_per_text,
        )
    fastest = min(c["s_per_text"] for c in cells.values() if c["status"] == "measured")
    reference = signals[source.quant].scores[data.eval_rows]
    for key, s in signals.items():
        cells[key]["speed_ratio"] = cells[key]["s_per_text"] / fastest
        cells[key].update(label_metrics(s.scores[data.eval_rows], data.gold[data.eval_rows], reference))
    return cells, signals


def run_quant_bench(request: QuantBenchRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Build the ladders, measure every model file and the mixtures; the report as a JSON-ready dict."""
    from ..llm.engine import backend_info

    if request.budget_gb is not None and not (math.isfinite(request.budget_gb) and request.budget_gb > 0):
        raise ConfigError(f"--budget-gb must be > 0, got {request.budget_gb}")
    quants = [level_name(q) for q in request.bench.quants]
    catalog = load_catalog()
    sources = [find_source(catalog, name, request.chat_format) for name in request.models]
    if len({s.name for s in sources}) < len(sources):
        raise ConfigError("--models names the same model twice")
    data = load_bench_texts(request)
    fit_sequences(request.config.llm, len(data.labels))  # too many labels for llama.cpp: before any model loads
    demonstrations: tuple[tuple[str, str], ...] = ()
    if fixed_shots(request.config.llm):
        seed_texts = [data.texts[i] for i in data.seed_rows]
        seed_labels = [data.labels[data.gold[i]] for i in data.seed_rows]
        demonstrations = draw_demonstrations(seed_texts, seed_labels, fixed_shots(request.config.llm), request.config.seed)
    request.output.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    signals: dict[str, dict[str, AnnotationSignals]] = {}
    with Store(request.output / "quant.sqlite") as store:
        for source in sources:
            cells, signals[source.name] = _bench_model(source, quants, request, data, demonstrations, store, progress)
            models[source.name] = {"source": source.path.name, "source_quant": source.quant,
                                   "source_quantized": source.is_quantized, "note": source.note, "levels": cells}
    mixture, frontier = _mixture_report(models, signals, data, request, quants, progress)
    return {
        "data": {"file": request.data.name, "n": len(data.texts), "seed_rows": len(data.seed_rows),
                 "eval_rows": len(data.eval_rows), "labels": list(data.labels), "shots": fixed_shots(request.config.llm)},
        "backend": backend_info(), "threads": request.config.llm.n_threads or usable_cpus(),
        "timing_texts": min(request.bench.timing_texts, len(data.eval_rows)), "quants": quants,
        "models": models, "mixture": mixture, "frontier": frontier,
    }


def _mixture_report(
    models: dict[str, Any],
    signals: dict[str, dict[str, AnnotationSignals]],
    data: BenchTexts,
    request: QuantBenchRequest,
    quants: list[str],
    progress: Progress | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """MoLAM at each uniform level (every model at the same one) and the frontier over mixed levels."""
    memory_gib = {name: {key: cell["memory_mib"] / 1024 for key, cell in m["levels"].items()
                         if cell["status"] == "measured"} for name, m in models.items()}
    fitted: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    expected = min(math.prod(len(options) for options in memory_gib.values()), request.bench.max_combinations)

    def metrics(levels: Levels) -> dict[str, float]:
        key = tuple(sorted(levels.items()))
        if key not in fitted:
            fitted[key] = mixture_metrics([signals[m][q] for m, q in levels.items()], data, request.config)
            if progress:
                progress("MoLAM mixtures", len(fitted), max(len(fitted), expected))
        return fitted[key]

    mixture: dict[str, Any] = {}
    for level in [SOURCE_LEVEL, *quants]:
        levels = {name: m["source_quant"] if level == SOURCE_LEVEL else level for name, m in models.items()}
        missing = [name for name, quant in levels.items() if quant not in memory_gib[name]]
        if missing:
            mixture[level] = {"status": "skipped", "reason": f"no {level} file for {', '.join(missing)}",
                              "levels": levels, "accuracy": None, "macro_f1": None, "memory_gib": None}
            continue
        mixture[level] = {"status": "measured", "reason": None, "levels": levels, **metrics(levels),
                          "memory_gib": sum(memory_gib[m][q] for m, q in levels.items())}
    combinations = evaluate_combinations(memory_gib, lambda lv: metrics(lv)["accuracy"],
                                         request.bench.max_combinations)
    best = best_under_budget(combinations, request.budget_gb) if request.budget_gb is not None else None
    frontier = {
        "budget_gib": request.budget_gb,
        "combinations": [dataclasses.asdict(c) for c in combinations],
        "pareto": [dataclasses.asdict(c) for c in pareto_front(combinations)],
        "best_under_budget": dataclasses.asdict(best) if best else None,
    }
    return mixture, frontier
