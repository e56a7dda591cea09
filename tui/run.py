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
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from mollia_edge.errors import MolliaError
from mollia_edge.label import LabelResult, run_label_job

from .models import read_report

from .widgets import NavBar


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
        yield NavBar("run")
        yield Static("r: run the job (resumes where it stopped)", id="run-status")
        with Horizontal(id="run-body"):
            yield VerticalScroll(id="stages")
            yield PlotextPlot(id="runs-plot")
        yield Static(id="run-warnings")
        yield Footer()

    def on_mount(self) -> None:
        self.plot_runs()

    def plot_runs(self) -> None:
        """Per run: share of rows needing review and of each label (no gold labels needed)."""
        widget = self.query_one(PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.title("per run: share of rows")
        runs = self.app.state.runs
        x = list(range(1, len(runs) + 1))
        if runs:
            for key in runs[0]:
                plt.plot(x, [run.get(key, 0.0) for run in runs], label=key, marker="dot")
            plt.xticks(x)
        plt.ylim(0, 1)
        widget.refresh()

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
            self.app.call_from_thread(self.record_run)
            self.app.call_from_thread(self.finished, done_message(result), warnings)

    def show_progress(self, stage: str, done: int, total: int) -> None:
        if stage not in self.bars:
            stages = self.query_one("#stages", VerticalScroll)
            self.bars[stage] = ProgressBar(total=total, show_eta=True, id=f"bar-{len(self.bars)}")
            stages.mount(Label(stage, classes="stage-name"), self.bars[stage])
        self.bars[stage].update(total=max(total, 1), progress=done)

    def record_run(self) -> None:
        report = read_report(self.app)
        if report:
            rows = max(report["rows"], 1)
            shares = {"review": report["needs_review"] / rows}
            shares.update({label: n / rows for label, n in report["label_distribution"].items()})
            self.app.state.runs.append(shares)
            self.app.save_state()
            self.plot_runs()

    def finished(self, message: str, warnings: list[str]) -> None:
        self.running = False
        self.query_one("#run-status", Static).update(Text(message))
        self.query_one("#run-warnings", Static).update(Text("\n".join(f"warning: {w}" for w in warnings)))


def done_message(result: LabelResult) -> str:
    return f"done: wrote {result.output.name}; review the flagged rows (F4), then export (F6)"
