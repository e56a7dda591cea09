"""The label job as a short driver over its stages (:func:`run_label_job`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TypeVar

from .context import start
from .final import train_final
from .job import LabelJob, LabelResult, Progress, Warn
from .llm_stages import check_teacher, encode, fit_mixture, score_seeds
from .loop import active_learning
from .prepare import check_settings, prepare
from .report import Outcome, write_outputs
from .rows import label_rows

T = TypeVar("T")


def is_multi_label(job: LabelJob) -> bool:
    """``--multi-label``, or a task file that says ``multi_label = true``."""
    if job.multi_label:
        return True
    from ..task import load_task

    return job.task_file is not None and load_task(job.task_file).multi_label


def run_label_job(job: LabelJob, progress: Progress | None = None, warn: Warn | None = None) -> LabelResult:
    """Label every row of ``job.input`` into ``job.output`` (see :mod:`mollia_edge.label`)."""
    if is_multi_label(job):
        from ..multilabel.job import run_multilabel_job

        return run_multilabel_job(dataclasses.replace(job, multi_label=True), progress, warn)
    warnings: list[str] = []

    def say(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    settings = check_settings(job)
    with ExitStack() as stack:
        prep = prepare(job, settings)  # reads only: a refusal leaves nothing behind, not even a lock file
        for lock in job.locks():  # one job per session and output: a second one stops here
            stack.enter_context(lock)
        context = start(job, prep, stack, say, progress)
        seconds: dict[str, float] = {}

        def timed(stage: str, run: Callable[..., T], *inputs: object) -> T:
            began = time.perf_counter()
            result = run(context, *inputs)
            seconds[stage] = time.perf_counter() - began
            return result

        encoded = timed("encoding", encode)
        seeds = timed("llm_seeds", score_seeds, encoded)
        fit = timed("label_model", fit_mixture, seeds)
        teaching = timed("teaching", check_teacher, encoded, seeds, fit)
        loop = timed("active_learning", active_learning, encoded, seeds, fit)
        final = timed("classifier", train_final, encoded, seeds, fit, teaching, loop)
        rows = timed("labelling", label_rows, seeds, fit, loop, final)
        outcome = Outcome(encoded, seeds, fit, teaching, loop, final, rows, seconds)
        return write_outputs(context, outcome, warnings)
