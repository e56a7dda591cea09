"""Review: the rows the machines flagged, most doubtful first; Enter accepts, 1..K correct (multi-label:
1..K toggle labels of the machine's set, Enter confirms it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from mollia_edge.label.accept import RANDOM_CHECK

from .widgets import NavBar, bind_label_keys, machine_view, row_text, set_cell, set_indices, toggled_view


class ReviewScreen(Screen[None]):
    """Each correction is a human label (audited) and a seed of the next run."""

    BINDINGS = [
        Binding("enter", "accept", "Accept"),
        Binding("s", "skip", "Skip"),
        Binding("u", "undo", "Undo"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.multi_label = self.app.opened.session.multi_label
        self.chosen: set[int] | None = None
        """Multi-label: the set toggled from the machine's for the row shown (None: untouched)."""
        bind_label_keys(self, self.app.labels)

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("review")
        yield Static(id="review-count")
        yield Static(id="review-title")
        with VerticalScroll(id="text-panel"):
            yield Static(id="review-text")
        yield Static(id="review-machine")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.show_item()

    def open_items(self) -> list[tuple[int, str, float]]:
        """Open review items whose row the latest run still flags, or a random check of the error
        guarantee (accepted or not), highest priority first."""
        session = self.app.opened.session
        labels = session.row_labels()
        return [item for item in session.review_queue("open")
                if item[0] in labels and (labels[item[0]].needs_review or item[1] == RANDOM_CHECK)]

    @property
    def item(self) -> tuple[int, str, float] | None:
        queue = self.open_items()
        return queue[0] if queue else None

    def action_accept(self) -> None:
        """Enter: the machine's label (multi-label: the set as toggled) becomes the row's."""
        item = self.item
        if item is not None:
            current = self.app.opened.session.row_labels()[item[0]].label
            label = current if self.chosen is None else set_cell(self.app.labels, self.chosen)
            self.app.opened.session.set_human_label(item[0], label, self.app.author)
        self.chosen = None
        self.show_item()

    def action_label(self, index: int) -> None:
        """1..K: the correct label; multi-label: toggle a label of the machine's set (Enter confirms)."""
        item = self.item
        if item is not None and self.multi_label:
            if self.chosen is None:
                self.chosen = set_indices(self.app.labels, self.app.opened.session.row_labels()[item[0]].label)
            self.chosen ^= {index}
        elif item is not None:
            self.app.opened.session.set_human_label(item[0], self.app.labels[index], self.app.author)
        self.show_item()

    def action_skip(self) -> None:
        item = self.item
        if item is not None:
            self.app.opened.session.skip_review(item[0])
        self.chosen = None
        self.show_item()

    def action_undo(self) -> None:
        self.chosen = None
        if self.app.opened.session.undo(self.app.author) is None:
            self.notify("nothing left to undo")
        self.show_item()

    def show_item(self) -> None:
        session = self.app.opened.session
        queue = self.open_items()
        done = len(session.review_queue("done"))
        self.query_one("#review-count", Static).update(f"To review: {len(queue)}   reviewed: {done}")
        title, text = self.query_one("#review-title", Static), self.query_one("#review-text", Static)
        machine = self.query_one("#review-machine", Static)
        if not queue:
            title.update("nothing to review: run the job (F3) or export (F6)")
            text.update("")
            machine.update("")
            return
        row, reason, _ = queue[0]
        title.update(Text(f"Row {row + 1}: {reason}"))
        text.update(row_text(self.app.texts, row))
        machine.update(machine_view(session.row_labels().get(row)) if self.chosen is None else
                       toggled_view(self.app.labels, self.chosen))
