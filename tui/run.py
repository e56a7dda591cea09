"""Run: the whole job (encoding, LLMs, rounds, labelling) in a thread worker, with live progress.

Cancelling makes the progress callback raise; every finished step is in the session store,
so running again resumes.
"""

from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, Static
from textual.worker import get_current_worker

from mollia_edge.errors import MolliaError
from mollia_edge.label import LabelResult, run_label_job


class Cancelled(Exception):
    """Raised inside the job (from its progress callback) to stop it."""


class RunScreen(Screen[None]):
    """r runs or resumes the job, c cancels it; one progress bar per stage."""

    BINDINGS = [Binding("r", "run", "Run/resume"), Binding("c", "cancel", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self.cancel_requested = threading.Event()
        self.running = False
        self.bars: dict[str, ProgressBar] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("r: run the job (resumes where it stopped)", id="run-status")
        yield VerticalScroll(id="stages")
        yield Static(id="run-warnings")
        yield Footer()

    def action_run(self) -> None:
        if self.running:
            self.notify("the job is already running")
            return
        self.running = True
        self.cancel_requested.clear()
        self.query_one("#run-status", Static).update("running...")
        self.query_one("#run-warnings", Static).update("")
        self.run_job()

    def action_cancel(self) -> None:
        if self.running:
            self.cancel_requested.set()
            self.query_one("#run-status", Static).update("cancelling at the next step...")

    @work(thread=True, exclusive=True, group="job")
    def run_job(self) -> None:
        worker = get_current_worker()
        warnings: list[str] = []

        def progress(stage: str, done: int, total: int) -> None:
            if self.cancel_requested.is_set() or worker.is_cancelled:
                raise Cancelled
            self.app.call_from_thread(self.show_progress, stage, done, total)

        try:
            result = run_label_job(self.app.job, progress, warnings.append)
        except Cancelled:
            self.app.call_from_thread(self.finished, "cancelled: r resumes", warnings)
        except MolliaError as exc:
            self.app.call_from_thread(self.finished, f"error: {' '.join(str(exc).split())}", warnings)
        except Exception as exc:  # one line, never a traceback that could quote input text
            self.app.call_from_thread(self.finished, f"internal error ({type(exc).__name__})", warnings)
        else:
            self.app.call_from_thread(self.finished, done_message(result), warnings)

    def show_progress(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            stages = self.query_one("#stages", VerticalScroll)
            self.bars[stage] = ProgressBar(total=total, show_eta=True, id=f"bar-{len(self.bars)}")
            stages.mount(Label(stage, classes="stage-name"), self.bars[stage])
        self.bars[stage].update(total=max(total, 1), progress=done)

    def finished(self, message: str, warnings: list[str]) -> None:
        self.running = False
        self.query_one("#run-status", Static).update(Text(message))
        self.query_one("#run-warnings", Static).update(Text("\n".join(f"warning: {w}" for w in warnings)))


def done_message(result: LabelResult) -> str:
    return f"done: wrote {result.output.name}; review the flagged rows (F4), then export (F6)"
