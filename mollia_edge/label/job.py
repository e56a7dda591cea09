"""What a label job is asked (:class:`LabelJob`) and what it gives back (:class:`LabelResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..files import SessionLock

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total): stages ``encoding``, ``llm <model>``, ``rounds``, ``labelling``."""
Warn = Callable[[str], None]

NEW_COLUMNS = ("label", "label_source", "confidence", "negative_labels", "needs_review", "llm_votes")
MAX_ROUNDS = 10_000
"""``--rounds`` at most, as ``al.rounds`` in a configuration file."""
MAX_BATCH = 1_000_000
"""``--batch`` at most, as ``al.query_size``."""


@dataclass(frozen=True)
class LabelJob:
    """What to label and how; ``None`` settings take the configuration's values."""

    input: Path
    output: Path
    text_column: str = "text"
    label_column: str | None = None
    """Seed labels; None: the column ``label`` if the input has one, else no seeds."""
    gold_column: str | None = None
    """Gold labels for the report's quality figures only: never used to label a row."""
    labels: tuple[str, ...] | None = None
    """The label set; None: the distinct values of the label column."""
    models: tuple[str, ...] | None = None
    """Catalog names or .gguf paths; None: the catalog's starter models."""
    chat_format: str | None = None
    item: str = "text"
    strategy: str = "bemps"
    rounds: int | str | None = None
    """Active-learning rounds; ``"auto"``: until the classifier's predictions stabilise (at most
    ``al.max_rounds``; :mod:`~mollia_edge.al.stopping`); None: ``al.rounds``."""
    llm_budget: str | None = None
    """What the loop's LLM annotation may cost: "N" texts or "Nm" minutes; None: no limit."""
    batch: int | None = None
    seed: int | None = None
    llm_sample: int = 500
    review_threshold: float = 0.6
    strict: bool = False
    classifier: str | None = None
    """``head``, ``top-layers`` or ``auto``; None: the configuration's ``al.classifier``."""
    threads: int = 1
    session: Path | None = None
    """The session store; None: OUTPUT + '.session.sqlite'."""
    config: Config = field(default_factory=Config)
    formula_guard: bool = True
    """CSV/TSV output cells that start like a spreadsheet formula get a leading quote (see
    :func:`~mollia_edge.data.spreadsheet_safe`); False: written verbatim (``--keep-formulas``)."""
    ray: str | None = None
    """Annotate on Ray (:mod:`mollia_edge.llm.cluster`): ``local`` or a cluster's address; None: in-process."""
    ray_actors: int = 2
    """Ray actors per model (each one model, ``llm.n_threads`` CPUs or 1)."""
    task_file: Path | None = None
    """The task file: the prompt's instruction, label descriptions and aliases, and the label
    set when ``labels`` is None (:mod:`mollia_edge.task`); None: the paper's prompt with bare
    label names."""
    multi_label: bool = False
    """A text may carry several labels (:mod:`mollia_edge.multilabel`): seed cells hold ``a|b``."""
    annotate_ahead: bool = False
    """The paper's way: every row the LLM budget pays for is annotated by each model up front
    (one load per model), and the loop queries among those rows at no further LLM cost; False:
    a sample up front, then each round's queried rows (models take turns per round)."""

    @property
    def session_path(self) -> Path:
        return self.session or self.default_session

    @property
    def default_session(self) -> Path:
        return self.output.with_name(self.output.name + ".session.sqlite")

    def beside_output(self, suffix: str) -> Path:
        return self.output.with_name(self.output.name + suffix)

    def outputs(self) -> dict[str, Path]:
        """Every file the job writes besides the session store, by role."""
        return {"output": self.output, "classifier": self.beside_output(".classifier.onnx"),
                "classifier tokenizer": self.beside_output(".classifier.tokenizer.json"),
                "report": self.beside_output(".report.json"), "summary": self.beside_output(".report.txt")}

    def locks(self) -> list[SessionLock]:
        """One job per session, and one per output: a job with another ``--session`` writing the
        same output also takes the output's default session lock."""
        locks = [SessionLock(self.session_path)]
        if self.session_path != self.default_session:
            locks.append(SessionLock(self.default_session, output=self.output))
        return locks


@dataclass(frozen=True)
class LabelResult:
    """What a finished job wrote, and what the TUI and tests read of it without the files."""

    output: Path
    session: Path
    classifier: Path | None
    report: Path
    summary: Path
    summary_text: str
    warnings: list[str]
    session_id: str
    final_classifier: Any = None
    """The final classifier (:class:`~mollia_edge.al.classifier.OnnxClassifier`), as exported."""
    classifier_proba: np.ndarray | None = None
    """(n, K) its probabilities of every row (the classifier rows' confidence)."""
