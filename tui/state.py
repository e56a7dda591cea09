"""What the TUI remembers between launches besides the session store: the job's settings (to
reopen it from the session file), the order rows are offered for seed labelling, the rows
skipped there, and the screen last shown.

Kept as JSON beside the session store (mode 0600); it holds paths and row indices, never text.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mollia_edge.config import config_from_dict
from mollia_edge.errors import ConfigError
from mollia_edge.label import LabelJob

COVERAGE_PICKS = 500
"""Rows ordered by k-center on the embeddings; the rest follow in a seeded shuffle."""


@dataclass
class TuiState:
    order: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    mode: str = "seed"
    job: dict[str, Any] = field(default_factory=dict)
    """The job's settings (:func:`job_record`)."""

    @classmethod
    def load(cls, path: Path) -> TuiState:
        """The saved state, or a fresh one if there is none or it cannot be read."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(order=[int(r) for r in data["order"]], skipped=[int(r) for r in data["skipped"]],
                       mode=str(data["mode"]), job=dict(data.get("job", {})))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        """Write atomically, readable by the user only."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(self), f)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def state_path(job: LabelJob) -> Path:
    """The state file of a job: beside its session store."""
    return job.session_path.with_name(job.session_path.name + ".tui.json")


def job_record(job: LabelJob) -> dict[str, Any]:
    """The job's settings as JSON values, paths made absolute."""
    record = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
    record.update(input=str(job.input.resolve()), output=str(job.output.resolve()),
                  session=str(job.session_path.resolve()), config=dataclasses.asdict(job.config),
                  task_file=str(job.task_file.resolve()) if job.task_file else None)
    return record


def saved_job(session_path: Path) -> LabelJob:
    """The job the TUI last opened with this session store; a :class:`ConfigError` if none was saved."""
    record = TuiState.load(session_path.with_name(session_path.name + ".tui.json")).job
    if not record:
        raise ConfigError(f"{session_path}: no TUI job saved beside this session store; open the input file instead")
    tuples = {"labels", "models"}
    values = {key: tuple(value) if key in tuples and value is not None else value for key, value in record.items()}
    if "mode" in values:  # saved before the classifier became a choice of the job
        values.setdefault("classifier", values.pop("mode"))
    values.update(input=Path(record["input"]), output=Path(record["output"]), session=Path(record["session"]),
                  config=config_from_dict(record["config"]),
                  task_file=Path(record["task_file"]) if record.get("task_file") else None)
    return LabelJob(**values)


def shuffled_order(n: int, seed: int) -> list[int]:
    """Every row, in a seeded random order."""
    return np.random.default_rng(seed).permutation(n).tolist()


def coverage_order(embeddings: np.ndarray, labelled: Sequence[int], seed: int) -> list[int]:
    """Every row: first the rows that cover the data best (greedy k-center from the labelled
    rows, or from a seeded random row), then the others in a seeded random order."""
    from mollia_edge.al.strategies import greedy_k_center

    n = len(embeddings)
    labelled_set = set(labelled)
    free = np.array([i for i in range(n) if i not in labelled_set], np.int64)
    if not len(free):
        return shuffled_order(n, seed)
    rng = np.random.default_rng(seed)
    picks = min(COVERAGE_PICKS, len(free))
    centres = embeddings[sorted(labelled_set)] if labelled_set else np.zeros((0, embeddings.shape[1]), np.float32)
    first = int(rng.integers(len(free)))
    head = free[greedy_k_center(embeddings[free], picks, centres, first)].tolist()
    chosen = set(head)
    tail = [int(i) for i in rng.permutation(n) if int(i) not in chosen]
    return head + tail
