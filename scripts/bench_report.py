"""What every benchmark ends with: its one result table on screen and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_and_save(console: Console, table: Table, report: dict, out: Path | None) -> None:
    """Print ``table``; write ``report`` as JSON to ``out`` when given."""
    console.print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {out}")
