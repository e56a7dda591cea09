"""Models: each LLM's accuracy on the seed and human labels, and pairwise agreement (kappa),
from the report of the latest run."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from .widgets import NavBar


def read_report(app: Any) -> dict[str, Any] | None:
    """The latest run's report JSON, or None before the first run."""
    try:
        return json.loads(app.job.beside_output(".report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ModelsScreen(Screen[None]):
    """A table: model, accuracy (scores and samples) on labelled rows, kappa with each other model (by #)."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("models")
        yield Static(id="models-note")
        yield DataTable(id="models-table", cursor_type="row")
        yield Footer()

    def on_screen_resume(self) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        report = read_report(self.app)
        agreement = (report or {}).get("llm_agreement_on_seeds") or {}
        note = self.query_one("#models-note", Static)
        if not agreement:
            models = ", ".join(self.app.opened.models)
            note.update(f"models: {models}\nno accuracy yet: label seeds (F2) and run the job (F3)")
            return
        names = list(agreement)
        note.update(f"on {report['seed_rows']} labelled rows (latest run; {report['human_rows']} by people)")
        table.add_columns("#", "model", "acc scores", "acc samples", *(f"kappa #{i + 1}" for i in range(len(names))))
        for i, (name, values) in enumerate(agreement.items()):
            kappas = [("-" if other == name else f"{values['kappa'][other]:.2f}") for other in names]
            table.add_row(str(i + 1), name, f"{values['accuracy_scores']:.3f}", f"{values['accuracy_samples']:.3f}",
                          *kappas)
