"""Seed labelling: one text at a time, in an order that covers the data; number keys label."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static

from mollia_edge.label import encode_texts
from mollia_edge.errors import MolliaError

from .state import coverage_order, shuffled_order
from .widgets import NavBar, bind_confirm_key, bind_label_keys, machine_view, row_text, set_cell, toggled_view


class SeedScreen(Screen[None]):
    """Label rows with 1..K; s skips, u undoes (many levels), b goes back, h shows the LLMs' view."""

    BINDINGS = [
        Binding("s", "skip", "Skip"),
        Binding("u", "undo", "Undo"),
        Binding("b", "back", "Back"),
        Binding("h", "hint", "Hint"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.position = 0
        self.show_hint = False
        self.multi_label = self.app.opened.session.multi_label
        self.chosen: set[int] = set()
        """Multi-label: the labels toggled on for the row shown, not yet confirmed."""
        bind_label_keys(self, self.app.labels)
        if self.multi_label:
            bind_confirm_key(self)

    def compose(self) -> ComposeResult:
        yield Header()
        yield NavBar("seed")
        yield Static(id="seed-counts")
        yield ProgressBar(id="seed-progress", show_eta=False)
        yield Static(id="row-title")
        with VerticalScroll(id="text-panel"):
            yield Static(id="row-text")
        yield Static(id="hint")
        yield Footer()

    def on_mount(self) -> None:
        if self.app.state.order:
            self.start()
        else:
            self.query_one("#row-title", Static).update("choosing rows that cover the data...")
            self.order_rows()

    @work(thread=True, exclusive=True)
    def order_rows(self) -> None:
        """Order the rows by coverage of the embeddings (a seeded shuffle if encoding fails)."""
        app = self.app
        seed = app.job.config.seed if app.job.seed is None else app.job.seed
        try:
            _, x = encode_texts(app.job, app.texts)
            order = coverage_order(x, sorted(app.seed_labels()), seed)
        except (MolliaError, OSError, ImportError):
            order = shuffled_order(len(app.texts), seed)
        app.call_from_thread(self.ordered, order)

    def ordered(self, order: list[int]) -> None:
        self.app.state.order = order
        self.app.save_state()
        self.start()

    def start(self) -> None:
        self.position = self.next_open(0)
        self.show_row()

    # -- positions --------------------------------------------------------------------------------
    @property
    def row(self) -> int | None:
        order = self.app.state.order
        return order[self.position] if self.position < len(order) else None

    def next_open(self, start: int) -> int:
        """The first position from ``start`` whose row has no seed label and was not skipped."""
        labelled, skipped, order = self.app.seed_labels(), set(self.app.state.skipped), self.app.state.order
        for pos in range(start, len(order)):
            if order[pos] not in labelled and order[pos] not in skipped:
                return pos
        return len(order)

    # -- actions ----------------------------------------------------------------------------------
    def action_label(self, index: int) -> None:
        if self.row is None:
            return
        if self.multi_label:  # a toggle: the set is confirmed with Enter
            self.chosen ^= {index}
            self.show_row()
            return
        self.app.opened.session.set_human_label(self.row, self.app.labels[index], self.app.author)
        self.forward()

    def action_confirm(self) -> None:
        """Multi-label: the toggled set (none toggled: ``none``) becomes the row's seed label."""
        if self.row is None:
            return
        self.app.opened.session.set_human_label(self.row, set_cell(self.app.labels, self.chosen), self.app.author)
        self.forward()

    def action_skip(self) -> None:
        if self.row is None:
            return
        if self.row not in self.app.state.skipped:
            self.app.state.skipped.append(self.row)
            self.app.save_state()
        self.forward()

    def forward(self) -> None:
        self.position = self.next_open(self.position + 1)
        self.show_hint = False
        self.chosen = set()
        self.show_row()

    def action_undo(self) -> None:
        entry = self.app.opened.session.undo(self.app.author)
        self.chosen = set()
        if entry is None:
            self.notify("nothing left to undo")
        elif entry.row in self.app.state.order:
            self.position = self.app.state.order.index(entry.row)
        self.show_row()

    def action_back(self) -> None:
        """The previous row this user labelled or skipped, to look at or relabel."""
        seen = set(self.app.opened.session.human_labels()) | set(self.app.state.skipped)
        order = self.app.state.order
        for pos in range(min(self.position, len(order)) - 1, -1, -1):
            if order[pos] in seen:
                self.position = pos
                self.show_row()
                return
        self.notify("no earlier row")

    def action_hint(self) -> None:
        self.show_hint = not self.show_hint
        self.show_row()

    # -- view -------------------------------------------------------------------------------------
    def show_row(self) -> None:
        counts = self.app.seed_counts()
        target = self.app.job.config.al.seed_size
        total = sum(counts.values())
        per_class = "  ".join(f"{label} {counts.get(label, 0)}" for label in self.app.labels)
        self.query_one("#seed-counts", Static).update(Text(f"Seeds {total}/{target}   {per_class}"))
        self.query_one("#seed-progress", ProgressBar).update(total=target, progress=min(total, target))
        row = self.row
        title, text = self.query_one("#row-title", Static), self.query_one("#row-text", Static)
        hint = self.query_one("#hint", Static)
        if row is None:
            title.update("every row is labelled or skipped: run the job (F3)")
            text.update("")
            hint.update("")
            return
        current = self.app.seed_labels().get(row)
        done = f" - seed label: {current}" if current else ""
        title.update(Text(f"Row {row + 1} ({self.position + 1} of {len(self.app.state.order)} in order){done}"))
        text.update(row_text(self.app.texts, row))
        label = self.app.opened.session.row_labels().get(row)
        if self.multi_label and not self.show_hint:
            hint.update(toggled_view(self.app.labels, self.chosen))
            return
        hint.update(machine_view(label) if self.show_hint else Text("h: show what the LLMs said", style="dim"))
