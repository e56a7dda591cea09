"""The TUI app: one labelling job, five screens (modes) switched with F2..F6.

Every action goes to the session store (or the small state file) at once, so quitting at any
moment loses nothing, and reopening the same job restores where the user was.
"""

from __future__ import annotations

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
from .seed import SeedScreen
from .state import TuiState
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

    def __init__(self, job: LabelJob, author: str | None = None) -> None:
        super().__init__()
        self.job = job
        self.author = author or getpass.getuser()
        self.opened: JobSession = open_job_session(job)
        self.state_path = job.session_path.with_name(job.session_path.name + ".tui.json")
        self.state = TuiState.load(self.state_path)
        if self.state.mode not in self.MODES:
            self.state.mode = "seed"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.opened.labels

    @property
    def texts(self) -> list[str]:
        return self.opened.texts

    def seed_labels(self) -> dict[int, str]:
        """The seed set of the next run: the input's seed labels, overridden by people's."""
        human = {row: lab.label for row, lab in self.opened.session.row_labels().items() if lab.source == "human"}
        return {**self.opened.input_seeds, **human}

    def seed_counts(self) -> Counter[str]:
        return Counter(self.seed_labels().values())

    def save_state(self) -> None:
        self.state.save(self.state_path)

    def on_mount(self) -> None:
        self.sub_title = f"{self.job.input.name} - {len(self.texts)} rows - labels {', '.join(self.labels)}"
        self.switch_mode(self.state.mode)

    async def action_show(self, mode: str) -> None:
        """Switch screens and remember the one shown."""
        self.state.mode = mode
        self.save_state()
        await self.switch_mode(mode)

    def on_unmount(self) -> None:
        self.opened.store.close()


def default_output(input_path: Path) -> Path:
    """OUTPUT when none is given: INPUT's name + '.labelled.csv' beside it."""
    return input_path.with_name(input_path.stem + ".labelled.csv")


def run_tui(job: LabelJob) -> None:
    """Open the job's session (errors are one line, before the screen changes) and run the app."""
    LabelApp(job).run()
