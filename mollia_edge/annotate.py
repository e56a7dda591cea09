"""Annotate texts with several catalog models: the library call behind ``mollia-edge annotate``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import LLMConfig, fit_sequences, fixed_shots
from .errors import ConfigError
from .llm.annotator import LLMAnnotator
from .llm.catalog import chat_format_for, inspect_gguf, load_catalog, verify
from .llm.prompts import PromptSpec, draw_demonstrations
from .llm.signals import AnnotationSignals
from .store import Store
from .task import Task, with_task

ModelProgress = Callable[[str, int, int], None]
"""Called with (model name, texts done, texts to do)."""


@dataclass(frozen=True)
class AnnotationRequest:
    """What to annotate and how. ``models`` None: the catalog's starter models."""

    texts: Sequence[str]
    labels: tuple[str, ...]
    gold: Sequence[str | None] | None = None
    item: str = "text"
    models: Sequence[str] | None = None
    chat_format: str | None = None
    llm: LLMConfig = field(default_factory=LLMConfig)
    seed: int = 50
    task: Task | None = None
    """The task file's wording of the prompt (:mod:`mollia_edge.task`)."""


@dataclass(frozen=True)
class ModelRun:
    """One model's signals for all texts; accuracy of its argmax label on gold rows that were
    not used as demonstrations (None without gold labels)."""

    model: str
    path: Path
    signals: AnnotationSignals
    computed: int
    seconds: float
    accuracy: float | None


@dataclass(frozen=True)
class AnnotationReport:
    labels: tuple[str, ...]
    runs: list[ModelRun]

    def columns(self) -> list[str]:
        per_label = [f"{kind}_{label}" for kind in ("logprob", "prob", "consistency") for label in self.labels]
        return ["row", "model", "predicted", *per_label, "invalid", "truncated", "chunks"]

    def rows(self, row_ids: Sequence[int]) -> list[dict[str, object]]:
        """One row per (text, model), texts by their row ids; never the text itself."""
        out: list[dict[str, object]] = []
        for run in self.runs:
            s = run.signals
            prob = s.scores
            for i, row_id in enumerate(row_ids):
                row: dict[str, object] = {
                    "row": row_id,
                    "model": run.model,
                    "predicted": self.labels[int(s.label_logprob[i].argmax())],
                    "invalid": round(float(s.invalid[i]), 6),
                    "truncated": int(s.truncated[i]),
                    "chunks": int(s.chunks[i]),
                }
                for k, label in enumerate(self.labels):
                    row[f"logprob_{label}"] = round(float(s.label_logprob[i, k]), 6)
                    row[f"prob_{label}"] = round(float(prob[i, k]), 6)
                    row[f"consistency_{label}"] = round(float(s.consistency[i, k]), 6)
                out.append(row)
        return out


def annotate_with_models(
    request: AnnotationRequest, store: Store | None, progress: ModelProgress | None = None
) -> AnnotationReport:
    """Run every requested model over every text (cached outputs are reused)."""
    # labels a prompt cannot use, too many for llama.cpp: before any model is read
    checked = with_task(PromptSpec(labels=request.labels, item=request.item), request.task)
    fit_sequences(request.llm, len(request.labels), sum(map(len, checked.aliases)))
    catalog = load_catalog()
    names = list(request.models or catalog.starter)
    if not names:
        raise ConfigError("no models given and the catalog names no starter models")
    demonstrations: tuple[tuple[str, str], ...] = ()
    shots = fixed_shots(request.llm)
    if shots:
        if request.gold is None:
            raise ConfigError("demonstrations (shots > 0) need gold labels: give --label-column")
        labelled = [(t, g) for t, g in zip(request.texts, request.gold) if g is not None]
        demonstrations = draw_demonstrations(
            [t for t, _ in labelled], [g for _, g in labelled], shots, request.seed
        )
    runs = []
    for name in names:
        model_file = catalog.resolve(name)
        inspect_gguf(model_file.path)
        verify(model_file, store)
        chat_format = chat_format_for(model_file, request.chat_format)
        display = model_file.spec.name if model_file.spec else model_file.path.name
        prompt = with_task(PromptSpec(labels=request.labels, item=request.item, chat_format=chat_format,
                                      demonstrations=demonstrations), request.task)
        started = time.perf_counter()
        with LLMAnnotator(model_file.path, prompt, request.llm, store) as annotator:
            signals = annotator.annotate(
                request.texts, (lambda d, t, m=display: progress(m, d, t)) if progress else None
            )
        runs.append(
            ModelRun(
                model=display,
                path=model_file.path,
                signals=signals,
                computed=annotator.computed,
                seconds=time.perf_counter() - started,
                accuracy=_accuracy(signals, request, {t for t, _ in demonstrations}),
            )
        )
    return AnnotationReport(labels=request.labels, runs=runs)


def _accuracy(signals: AnnotationSignals, request: AnnotationRequest, demo_texts: set[str]) -> float | None:
    if request.gold is None:
        return None
    index = {label: k for k, label in enumerate(request.labels)}
    rows = [
        (i, index[g])
        for i, (t, g) in enumerate(zip(request.texts, request.gold))
        if g is not None and t not in demo_texts
    ]
    if not rows:
        return None
    predicted = signals.label_logprob.argmax(axis=1)
    return float(np.mean([predicted[i] == k for i, k in rows]))
