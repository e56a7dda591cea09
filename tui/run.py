"""Run: the whole job (encoding, LLMs, rounds, labelling) in a thread worker, with live progress.

Cancelling makes the progress callback raise; every finished step is in the session store,
so running again resumes.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

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
from mollia_edge.label import LabelResult, al_run_id, run_label_job
from mollia_edge.store import Store

from .models import read_report
from .widgets import NavBar


class Cancelled(Exception):
    """Raised inside the job (from its progress callback) to stop it."""


class RunScreen(Screen[None]):
    """r runs or resumes the job, c stops it (r resumes: a pause); one progress bar per stage."""

    BINDINGS = [Binding("r", "run", "Run/resume"), Binding("c", "cancel", "Pause/cancel")]

    def __init__(self) -> None:
        super().__init__()
        self.cancel_requested = threading.Event()
        self.running = False
        self.bars: dict[str, ProgressBar] = {}
        self.run_id: str | None = None
        """The active-learning run plotted: the latest run's, or the one running."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("run")
        yield Static("r: run the job (resumes where it stopped)", id="run-status")
        with Horizontal(id="run-body"):
            yield VerticalScroll(id="stages")
            yield PlotextPlot(id="rounds-plot")
        yield Static(id="run-warnings")
        yield Footer()

    def on_mount(self) -> None:
        report = read_report(self.app)
        if report:
            self.run_id = report.get("al_run")
            self.query_one("#run-status", Static).update(
                f"latest run: {report['needs_review']} of {report['rows']} rows need review; r runs again")
            times = "\n".join(f"  {stage}: {seconds:.1f} s" for stage, seconds in report["seconds"].items())
            self.query_one("#stages", VerticalScroll).mount(Static(f"latest run, per stage:\n{times}", id="last-times"))
        self.plot_rounds()

    def plot_rounds(self) -> None:
        """Round by round, without gold labels: how often the classifier agrees with the label
        model on the rows it queried, and each label's share of those rows."""
        widget = self.query_one(PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.title("per round, on the queried rows")
        curves = round_curves(self.app.opened.store, self.run_id, self.app.labels) if self.run_id else {}
        for name, points in reversed(curves.items()):  # 'agree' last, on top, as crosses
            if points:
                plt.plot([x for x, _ in points], [y for _, y in points], label=name,
                         marker="x" if name == "agree" else "dot")
        if curves.get("agree"):
            plt.xticks([x for x, _ in curves["agree"]])
        plt.xlabel("round")
        plt.ylim(0, 1)
        widget.refresh()

    def action_run(self) -> None:
        if self.running:
            self.notify("the job is already running")
            return
        self.running = True
        self.cancel_requested.clear()
        self.run_id = al_run_id(self.app.opened.session)
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
            for old in self.query("#last-times"):
                old.remove()
            stages = self.query_one("#stages", VerticalScroll)
            self.bars[stage] = ProgressBar(total=total, show_eta=True, id=f"bar-{len(self.bars)}")
            stages.mount(Label(stage, classes="stage-name"), self.bars[stage])
        self.bars[stage].update(total=max(total, 1), progress=done)
        if stage == "rounds":
            self.plot_rounds()

    def finished(self, message: str, warnings: list[str]) -> None:
        self.running = False
        self.query_one("#run-status", Static).update(Text(message))
        self.query_one("#run-warnings", Static).update(Text("\n".join(f"warning: {w}" for w in warnings)))


def done_message(result: LabelResult) -> str:
    report = json.loads(result.report.read_text(encoding="utf-8"))
    return f"done: {report['needs_review']} of {report['rows']} rows need review (F4); wrote {result.output.name} (F6)"


def round_curves(store: Store, run_id: str, labels: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """(round, value) points: the share of queried rows where the classifier agreed with the
    label model ('agree'), each label's share of the queried rows, and with ``--rounds auto``
    the stopping rule's kappa between consecutive rounds ('stable')."""
    curves: dict[str, list[tuple[int, float]]] = {"agree": [], **{label: [] for label in labels}, "stable": []}
    for metrics in store.al_rounds(run_id):
        if metrics["queried"]:
            curves["agree"].append((metrics["round"], 1 - metrics["disagreed"] / metrics["queried"]))
        if metrics.get("stop_kappa") is not None:
            curves["stable"].append((metrics["round"], max(0.0, metrics["stop_kappa"])))
    per_round: dict[int, Counter[int]] = {}
    for _, round_number, label, _, _ in store.al_labels(run_id):
        if label >= 0:  # -1: a row the label model abstained on
            per_round.setdefault(round_number, Counter())[label] += 1
    for round_number, counts in sorted(per_round.items()):
        total = sum(counts.values())
        for j, label in enumerate(labels):
            curves[label].append((round_number, counts[j] / total))
    return curves
