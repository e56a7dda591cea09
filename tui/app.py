"""The TUI app: one labelling job, five screens (modes) switched with F2..F6.

Every action goes to the session store (or the small state file) at once, so quitting at any
moment loses nothing, and reopening the same job restores where the user was.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections import Counter
from pathlib import Path

from textual.app import App
from textual.binding import Binding

from mollia_edge.label import JobSession, LabelJob, open_job_session

from .export import ExportScreen
from .models import ModelsScreen
from .review import ReviewScreen
from .run import RunScreen
from .seed_rows import SeedScreen
from .setup import SetupScreen, default_output
from .state import TuiState, job_record, saved_job, state_path
from .widgets import SCREEN_KEYS

class LabelApp(App[None]):
    """Seed labelling, runs, review, models and export for one :class:`LabelJob`."""

    CSS_PATH = "app.tcss"
    TITLE = "mollia-edge"
    MODES = {"seed": SeedScreen, "run": RunScreen, "review": ReviewScreen, "models": ModelsScreen,
             "export": ExportScreen}
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        *(Binding(key, f"show('{mode}')", name, show=False) for key, mode, name in SCREEN_KEYS),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, job: LabelJob, author: str | None = None, setup: bool = False) -> None:
        """``setup``: start on the new-session form, prefilled from ``job``; else open ``job`` now."""
        super().__init__()
        self.job = job
        self.author = author or getpass.getuser()
        self.opened: JobSession | None = None
        self.state = TuiState()
        if not setup:
            self.open(job, open_job_session(job))

    def open(self, job: LabelJob, opened: JobSession) -> None:
        """Hold the job's session and the state saved beside it; save the job to reopen it from the session file."""
        self.job, self.opened = job, opened
        self.state = TuiState.load(state_path(job))
        if self.state.mode not in self.MODES:
            self.state.mode = "seed"
        self.state.job = job_record(job)
        self.save_state()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.opened.labels

    @property
    def texts(self) -> list[str]:
        return self.opened.texts

    def seed_labels(self) -> dict[int, str]:
        """The seed set of the next run: the input's seed labels, overridden by people's."""
        return {**self.opened.input_seeds, **self.opened.session.human_labels()}

    def seed_counts(self) -> Counter[str]:
        """Seed rows per label (multi-label: each label of each set)."""
        cells = self.seed_labels().values()
        if self.opened.session.multi_label:
            return Counter(label for cell in cells for label in cell.split("|") if label in self.labels)
        return Counter(cells)

    def save_state(self) -> None:
        self.state.save(state_path(self.job))

    def on_mount(self) -> None:
        if self.opened is None:
            self.push_screen(SetupScreen(self.job), self.opened_from_setup)
        else:
            self.show_session()

    def opened_from_setup(self, result: tuple[LabelJob, JobSession] | None) -> None:
        if result is not None:
            self.open(*result)
            self.show_session()

    def show_session(self) -> None:
        self.sub_title = f"{self.job.input.name} - {len(self.texts)} rows - labels {', '.join(self.labels)}"
        self.switch_mode(self.state.mode)

    async def action_show(self, mode: str) -> None:
        """Switch screens and remember the one shown (once a session is open)."""
        if self.opened is None:
            return
        self.state.mode = mode
        self.save_state()
        await self.switch_mode(mode)

    def on_unmount(self) -> None:
        if self.opened is not None:
            self.opened.close()


def tui_job(path: Path | None, draft: LabelJob) -> tuple[LabelJob, bool]:
    """The job to open and whether to show the new-session form (prefilled from ``draft``) first.

    ``path``: a session store (reopen the job saved beside it); an input file (reopen the job
    the TUI saved for its output, else the form); or None (the form)."""
    if path is not None and path.suffix == ".sqlite":
        return saved_job(path), False
    if path is None:
        return draft, True
    job = dataclasses.replace(draft, input=path, output=draft.output if draft.output != Path("") else default_output(path))
    if state_path(job).exists():
        return saved_job(job.session_path), False
    return job, True


def run_tui(job: LabelJob, setup: bool) -> None:
    """Open the job's session (errors are one line, before the screen changes) and run the app."""
    LabelApp(job, setup=setup).run()
