"""New session: the input file, its columns and labels, the models (present or missing in the
catalog, size, quantization, backend), strategy, classifier, rounds and batch; ctrl+o opens the
session."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, SelectionList, Static
from textual.widgets.selection_list import Selection
from textual.worker import Worker, WorkerState

from mollia_edge.al.stopping import parse_llm_budget
from mollia_edge.config import CLASSIFIERS, GuaranteeConfig
from mollia_edge.errors import MolliaError
from mollia_edge.label import JobSession, LabelJob, open_job_session

FIELDS = (("input", "input file"), ("output", "output file"), ("text_column", "text column"),
          ("label_column", "label column"), ("labels", "labels"), ("rounds", "rounds"), ("batch", "batch"),
          ("llm_sample", "LLM sample"), ("llm_budget", "LLM budget"), ("task_file", "task file"),
          ("descriptions", "descriptions"))
NUMBERS = {"rounds", "batch", "llm_sample"}
WORDS = {"rounds": "auto"}
"""Number fields that also take a word: ``--rounds auto``."""
ANNOTATION = [("per round: a sample, then each round's queries", "per round"),
              ("ahead: every row the budget pays for, up front (big GPUs)", "ahead")]
KINDS = [("one label per text", "single"), ("several labels per text (a|b)", "multi")]
"""``--multi-label`` (:mod:`mollia_edge.multilabel`)."""
PRUNE = [("auto: release an LLM that adds nothing on the seed rows", "auto"),
         ("off: every LLM annotates", "off")]
"""``llm.prune`` (:mod:`mollia_edge.llm_value`)."""


def default_output(input_path: Path) -> Path:
    """OUTPUT when none is given: INPUT's name + '.labelled.csv' beside it."""
    return input_path.with_name(input_path.stem + ".labelled.csv")


def model_choices(chosen: tuple[str, ...] | None) -> list[Selection[str]]:
    """Each catalog model (present: size and quant; missing: disabled), then chosen .gguf paths."""
    from mollia_edge.llm.catalog import load_catalog

    catalog = load_catalog()
    picked = set(chosen if chosen is not None else catalog.starter)
    choices = []
    for spec in catalog.models.values():
        found = [(path, entry.quant) for entry in spec.files if (path := catalog.find(spec, entry))]
        if found:
            path, quant = found[0]
            prompt = f"{spec.name}  {quant}  {path.stat().st_size / 2**20:,.0f} MiB"
            choices.append(Selection(prompt, spec.name, spec.name in picked))
        else:
            choices.append(Selection(f"{spec.name}  missing ({spec.files[0].quant})", spec.name, disabled=True))
    for name in sorted(picked - set(catalog.models)):
        choices.append(Selection(f"{Path(name).name}  file", name, True))
    return sorted(choices, key=lambda choice: choice.disabled)


def whole_number(text: str, title: str) -> int:
    """``text`` as an int; a :class:`ValueError` naming the field otherwise."""
    try:
        return int(text)
    except ValueError:
        also = f" or {WORDS[title]}" if title in WORDS else ""
        raise ValueError(f"{title} must be a whole number{also}") from None


PLACEHOLDERS = {"input": "a CSV, TSV, JSONL or Parquet file",
                "rounds": "default, or auto (until predictions stabilise)",
                "llm_budget": "none; N texts or Nm minutes of LLM annotation in the loop",
                "task_file": "TOML: instruction, label descriptions (default: OUTPUT.task.toml)",
                "descriptions": "pos: the reviewer liked it; neg: ... (written to the task file)"}


def text_value(job: LabelJob, name: str) -> str:
    """The job's setting as the form shows it ('' for none)."""
    if name == "labels":
        return ",".join(job.labels or ())
    if name == "descriptions":
        return descriptions_text(job.task_file)
    value = getattr(job, name)
    return "" if value is None or value == Path("") else str(value)


def parse_descriptions(text: str) -> list[tuple[str, str]]:
    """"pos: liked it; neg: did not" -> [("pos", "liked it"), ("neg", "did not")]; a
    :class:`ValueError` naming the part without a label."""
    pairs = []
    for part in (p.strip() for p in text.split(";")):
        label, colon, description = part.partition(":")
        if not part:
            continue
        if not colon or not label.strip():
            raise ValueError(f"label descriptions: write 'label: description' separated by ';' (got {part[:30]!r})")
        pairs.append((label.strip(), description.strip()))
    return pairs


def descriptions_text(task_file: Path | None) -> str:
    """The task file's label descriptions as the form shows them ('' without a readable file)."""
    from mollia_edge.task import load_task

    if task_file is None or not task_file.is_file():
        return ""
    try:
        task = load_task(task_file)
    except MolliaError:
        return ""
    return "; ".join(f"{label}: {text}" for label, text in zip(task.labels, task.descriptions))


class SetupScreen(Screen[tuple[LabelJob, JobSession]]):
    """A form over a :class:`LabelJob`; dismissed with the job and its opened session."""

    BINDINGS = [
        Binding("ctrl+o", "open", "Open session", priority=True),
        Binding("tab", "app.focus_next", "Next field"),
    ]
    AUTO_FOCUS = "#setup-input"

    def __init__(self, draft: LabelJob) -> None:
        super().__init__()
        self.draft = draft

    def compose(self) -> ComposeResult:
        from mollia_edge.al.strategies import STRATEGIES
        from mollia_edge.llm.engine import backend_info

        yield Header()
        with VerticalScroll(id="setup-form"):
            for name, title in FIELDS:
                with Horizontal(classes="setup-row"):
                    yield Label(title, classes="setup-label")
                    yield Input(text_value(self.draft, name), id=f"setup-{name}", compact=True,
                                type="integer" if name in NUMBERS - set(WORDS) else "text",
                                placeholder=PLACEHOLDERS.get(name, "default"))
            with Horizontal(classes="setup-row"):
                yield Label("labels per text", classes="setup-label")
                yield Select(KINDS, value="multi" if self.draft.multi_label else "single", allow_blank=False,
                             id="setup-kind", compact=True)
            with Horizontal(classes="setup-row"):
                yield Label("strategy", classes="setup-label")
                yield Select([(s, s) for s in STRATEGIES], value=self.draft.strategy, allow_blank=False,
                             id="setup-strategy", compact=True)
            with Horizontal(classes="setup-row"):
                yield Label("classifier", classes="setup-label")
                yield Select([(c, c) for c in CLASSIFIERS], value=self.draft.classifier or self.draft.config.al.classifier,
                             allow_blank=False, id="setup-classifier", compact=True)
            with Horizontal(classes="setup-row"):
                yield Label("annotation", classes="setup-label")
                yield Select(ANNOTATION, value="ahead" if self.draft.annotate_ahead else "per round", allow_blank=False,
                             id="setup-annotation", compact=True)
            with Horizontal(classes="setup-row"):
                yield Label("LLM pruning", classes="setup-label")
                yield Select(PRUNE, value=self.draft.config.llm.prune, allow_blank=False, id="setup-prune", compact=True)
            guarantee = self.draft.config.guarantee
            with Horizontal(classes="setup-row"):
                yield Label("target error", classes="setup-label")
                yield Input("" if guarantee.target_error is None else str(guarantee.target_error), id="setup-target-error",
                            compact=True, placeholder="off; e.g. 0.05: accept labels within 5 % error, review the rest")
            with Horizontal(classes="setup-row"):
                yield Label("confidence level", classes="setup-label")
                yield Input(str(guarantee.confidence_level), id="setup-confidence-level", compact=True)
            yield Label(f"models (space selects; llama.cpp backend: {backend_info()})", id="setup-models-title")
            yield SelectionList(*model_choices(self.draft.models), id="setup-models", compact=True)
        yield Static("ctrl+o opens the session (new, or the one these settings had); ctrl+q quits",
                     id="setup-status")
        yield Footer()

    def job(self) -> LabelJob:
        """The job the form describes; a :class:`ValueError` (or :class:`ConfigError`) naming a bad field."""
        values: dict[str, object] = {}
        for name, title in FIELDS[:-1]:
            text = self.query_one(f"#setup-{name}", Input).value.strip()
            if name in WORDS and text.lower() == WORDS[name]:
                values[name] = WORDS[name]
            elif name in NUMBERS:
                values[name] = whole_number(text, title) if text else getattr(self.draft, name)
            elif name == "labels":
                values[name] = tuple(part.strip() for part in text.split(",") if part.strip()) or None
            else:
                values[name] = text or None
        if not values["input"]:
            raise ValueError("give an input file")
        values["input"] = Path(str(values["input"]))
        values["output"] = Path(str(values["output"])) if values["output"] else default_output(values["input"])
        values["text_column"] = values["text_column"] or "text"
        values["task_file"] = Path(str(values["task_file"])) if values["task_file"] else None
        parse_llm_budget(values["llm_budget"])  # "ten minutes": one error line now, not when the job runs
        models = self.query_one(SelectionList).selected
        if not models:
            raise ValueError("select at least one model")
        llm = dataclasses.replace(self.draft.config.llm, prune=str(self.query_one("#setup-prune", Select).value))
        config = dataclasses.replace(self.draft.config, llm=llm, guarantee=self.guarantee())
        return dataclasses.replace(self.draft, models=tuple(models), config=config,
                                   strategy=str(self.query_one("#setup-strategy", Select).value),
                                   classifier=str(self.query_one("#setup-classifier", Select).value),
                                   annotate_ahead=self.query_one("#setup-annotation", Select).value == "ahead",
                                   multi_label=self.query_one("#setup-kind", Select).value == "multi", **values)

    def guarantee(self) -> GuaranteeConfig:
        """The form's ``[guarantee]``: an empty target error is no guarantee."""
        values = []
        for name, title in (("target-error", "target error"), ("confidence-level", "confidence level")):
            text = self.query_one(f"#setup-{name}", Input).value.strip()
            try:
                values.append(float(text) if text else None)
            except ValueError:
                raise ValueError(f"{title} must be a number in (0, 1), e.g. 0.05, got {text!r}") from None
        level = values[1] if values[1] is not None else GuaranteeConfig().confidence_level
        return GuaranteeConfig(values[0], level)

    def action_open(self) -> None:
        try:
            job = self.job()
            job = self.write_task(job, self.query_one("#setup-descriptions", Input).value)
        except (ValueError, MolliaError) as exc:
            self.query_one("#setup-status", Static).update(Text(f"error: {exc}"))
            return
        self.query_one("#setup-status", Static).update("opening the session (checking the input and models)...")
        self.open_session(job)

    def write_task(self, job: LabelJob, text: str) -> LabelJob:
        """The descriptions typed in the form, written to the job's task file (OUTPUT.task.toml
        when none is named); the job unchanged when the field is empty or says what the file says."""
        if not text.strip() or text.strip() == descriptions_text(job.task_file):
            return job
        from mollia_edge.files import atomic_write_text
        from mollia_edge.task import load_task, task_toml

        pairs = parse_descriptions(text)
        path = job.task_file or job.output.with_name(job.output.name + ".task.toml")
        item = load_task(path).item if job.task_file and job.task_file.is_file() else None
        atomic_write_text(path, task_toml([label for label, _ in pairs], [d for _, d in pairs], item=item))
        return dataclasses.replace(job, task_file=path)

    @work(thread=True, exclusive=True)
    def open_session(self, job: LabelJob) -> tuple[LabelJob, JobSession] | str:
        """The job and its session, or the error in one line."""
        try:
            return job, open_job_session(job)
        except MolliaError as exc:
            return f"error: {' '.join(str(exc).split())}"

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.SUCCESS:
            return
        if isinstance(event.worker.result, str):
            self.query_one("#setup-status", Static).update(Text(event.worker.result))
        else:
            self.dismiss(event.worker.result)
