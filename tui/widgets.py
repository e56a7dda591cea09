"""Pieces the screens share: number keys for labels, the text panel, row details."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static

from mollia_edge.session import RowLabel

MAX_LABEL_KEYS = 9


def bind_label_keys(screen: Screen, labels: tuple[str, ...]) -> None:
    """Keys 1..9 call ``screen.action_label(i)`` for the first nine labels; shown in the Footer."""
    for i, label in enumerate(labels[:MAX_LABEL_KEYS]):
        screen._bindings.bind(str(i + 1), f"label({i})", label)  # per-instance: the labels are the job's


def bind_confirm_key(screen: Screen) -> None:
    """Multi-label sessions: 1..9 toggle labels, Enter confirms the set (shown in the Footer)."""
    screen._bindings.bind("enter", "confirm", "Confirm set")


def set_cell(labels: tuple[str, ...], chosen: set[int]) -> str:
    """The session's label cell of a set of label indices: ``a|b``, or ``none``."""
    from mollia_edge.multilabel.labels import format_set

    return format_set(np.isin(np.arange(len(labels)), sorted(chosen)), labels)


def set_indices(labels: tuple[str, ...], cell: str) -> set[int]:
    """The label indices of a label cell (``a|b``, ``none``)."""
    return {i for i, label in enumerate(labels) if label in cell.split("|")}


def toggled_view(labels: tuple[str, ...], chosen: set[int]) -> Text:
    """The set being toggled, and how to confirm it."""
    names = ", ".join(labels[i] for i in sorted(chosen)) or "none"
    return Text(f"labels: {names}   (1..{min(len(labels), MAX_LABEL_KEYS)} toggle, Enter confirms)", style="bold")


def row_text(texts: list[str], row: int) -> Text:
    """The row's text as plain text (never parsed as markup)."""
    return Text(texts[row], style="bold")


def machine_view(label: RowLabel | None) -> Text:
    """What the machines said about a row: label, confidence, negative labels, LLM votes."""
    if label is None:
        return Text("no machine label yet: run the job (F3)", style="dim")
    if label.source == "human":
        return Text(f"labelled by {label.author}: {label.label}")
    parts = [f"{label.source}: {label.label}"]
    if label.confidence is not None:
        parts.append(f"confidence {label.confidence:.2f}")
    if label.negatives:
        parts.append("not " + ", ".join(label.negatives))
    if label.votes:
        parts.append("votes " + label.votes.replace("|", " "))
    return Text(" | ".join(parts))


SCREEN_KEYS = (("f2", "seed", "Seeds"), ("f3", "run", "Run"), ("f4", "review", "Review"),
               ("f5", "models", "Models"), ("f6", "export", "Export"))


class NavBar(Static):
    """The screens and their keys, the current one highlighted (the Footer keeps the screen's keys)."""

    def __init__(self, mode: str) -> None:
        super().__init__(id="nav")
        self.mode = mode

    def on_mount(self) -> None:
        text = Text()
        for key, mode, name in SCREEN_KEYS:
            text.append(f" {key.upper()} {name} ", style="reverse bold" if mode == self.mode else "")
            text.append(" ")
        text.append(" q Quit")
        self.update(text)
