"""Export: the labelled file, the ONNX classifier and the report the latest run wrote; e runs
the job again so that the latest human corrections are in them."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from .models import read_report
from .widgets import NavBar


class ExportScreen(Screen[None]):
    BINDINGS = [Binding("e", "export", "Re-run and export")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("export")
        yield Static(id="export-files")
        yield Static(id="export-summary")
        yield Footer()

    def on_screen_resume(self) -> None:
        job = self.app.job
        files = [("labelled file", job.output), ("classifier", job.beside_output(".classifier.onnx")),
                 ("report", job.beside_output(".report.json"))]
        lines = [f"{what:14} {path}" + ("" if path.exists() else "  (not written yet)") for what, path in files]
        lines.append(f"{'session':14} {job.session_path}")
        report = read_report(self.app)
        human = len(self.app.opened.session.human_labels())
        if report is None:
            lines.append("\nno output yet: e runs the job")
        elif report.get("human_rows") != human:
            lines.append(f"\n{human} human label(s) now, {report.get('human_rows', 0)} in the output: e re-runs")
        else:
            lines.append("\nthe output has every human label")
        self.query_one("#export-files", Static).update(Text("\n".join(lines)))
        summary = job.beside_output(".report.txt")
        text = summary.read_text(encoding="utf-8") if summary.exists() else ""
        kept = [line for line in text.splitlines() if not line.startswith("seconds:")]  # timings: see the report
        self.query_one("#export-summary", Static).update(Text("\n".join(kept)))

    async def action_export(self) -> None:
        await self.app.action_show("run")
        self.app.screen.action_run()

