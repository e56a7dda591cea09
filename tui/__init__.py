"""The Textual TUI of mollia-edge: seed labelling, runs, review, models and export in one
keyboard-only app on top of the ``mollia_edge`` library (see :mod:`tui.app`)."""
