"""Models: each LLM's demonstrations per label (chosen on the seed rows), its accuracy on the seed
and human labels, pairwise agreement (kappa), speed and memory, from the latest run's report."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mollia_edge.agreement import confusion_text

from .widgets import NavBar


def read_report(app: Any) -> dict[str, Any] | None:
    """The latest run's report JSON, or None before the first run."""
    try:
        return json.loads(app.job.beside_output(".report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def shots_cell(choice: dict[str, Any] | None) -> str:
    """The demonstrations per label the job chose for a model, and the seed accuracy of each
    number it tried: "2 (0:.54 1:.70 2:.58)"."""
    if not choice:
        return "0"
    tried = " ".join(f"{shots}:{accuracy:.2f}".replace("0.", ".") for shots, accuracy in choice["seed_accuracy"].items())
    return f"{choice['chosen']} ({tried})"


class ModelsScreen(Screen[None]):
    """Two tables: accuracy on the labelled rows and kappa with each other model (by #); speed
    and memory per model."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("models")
        yield Static(id="models-note")
        yield DataTable(id="models-table", cursor_type="row")
        yield Static(id="speed-note")
        yield DataTable(id="speed-table", cursor_type="row")
        yield Footer()

    def on_screen_resume(self) -> None:
        report = read_report(self.app) or {}
        self.show_agreement(report)
        self.show_speed(report)

    def show_agreement(self, report: dict[str, Any]) -> None:
        table = self.query_one("#models-table", DataTable)
        table.clear(columns=True)
        agreement = report.get("llm_agreement_on_seeds") or {}
        note = self.query_one("#models-note", Static)
        if not agreement:
            models = ", ".join(self.app.opened.models)
            note.update(f"models: {models}\nno accuracy yet: label seeds (F2) and run the job (F3)")
            return
        names = list(agreement)
        note.update(f"on {report['seed_rows']} labelled rows (latest run; {report['human_rows']} by people)")
        shots = report.get("shots") or {}
        table.add_columns("#", "model", "shots", "acc scores", "acc samples",
                          *(f"kappa #{i + 1}" for i in range(len(names))), "confuses most (seed rows)")
        for i, (name, values) in enumerate(agreement.items()):
            kappas = [("-" if other == name else f"{values['kappa'][other]:.2f}") for other in names]
            table.add_row(str(i + 1), name, shots_cell(shots.get(name)), f"{values['accuracy_scores']:.3f}",
                          f"{values['accuracy_samples']:.3f}", *kappas,
                          confusion_text(values.get("confused", [])[:2]) or "-")

    def show_speed(self, report: dict[str, Any]) -> None:
        table = self.query_one("#speed-table", DataTable)
        table.clear(columns=True)
        speed = report.get("llm_speed") or {}
        note = self.query_one("#speed-note", Static)
        if not speed:
            note.update("")
            return
        note.update(f"speed: all runs of this session; peak memory of the latest run: {report['peak_rss_mib']:,.0f} MiB")
        table.add_columns("model", "quant", "file MiB", "texts", "s/text", "value on seeds", "decision")
        value = report.get("llm_value") or {}
        for name, values in speed.items():
            per_text = f"{values['seconds'] / values['texts']:.2f}" if values["texts"] else "-"
            decided = value.get(name)
            gain = f"{decided['gain']:+.3f} ± {decided['standard_error']:.3f}" if decided else "-"
            table.add_row(name, values["quant"], f"{values['file_mib']:,.0f}", str(values["texts"]), per_text, gain,
                          decided["decision"] if decided else "-")
