"""What ``mollia-edge bench quant`` shows and writes: rich tables, ``quant.json`` and
``quant.png`` (accuracy against file size, one line per model, the mixture highlighted)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from .quant import SOURCE_LEVEL


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tensor_mix_text(types: dict[str, int] | None) -> str:
    """E.g. ``Q4_0×15 F32×5 Q8_0×1``: how many tensors use each type."""
    return " ".join(f"{name}×{count}" for name, count in (types or {}).items()) or "-"


def model_table(report: dict[str, Any]) -> Table:
    """One row per model and level: cost (size, load, memory, speed) and quality."""
    data = report["data"]
    table = Table(
        title=f"{data['eval_rows']} evaluation texts of {data['file']} ({data['seed_rows']} more as MoLAM seeds), "
        f"backend {report['backend']}, {report['threads']} threads; speed on {report['timing_texts']} texts"
    )
    for column in ("model", "level", "tensor types", "MiB", "load s", "RSS MiB", "s/text", "× fastest",
                   "accuracy", "macro-F1", "ECE", "KL"):
        table.add_column(column, justify="left" if column in ("model", "level", "tensor types") else "right",
                         overflow="fold")
    for name, model in report["models"].items():
        for quant, cell in model["levels"].items():
            level = f"{quant} (source)" if cell["origin"] == "source" else quant
            if cell["status"] != "measured":
                table.add_row(name, level, f"[dim]skipped: {cell['reason']}[/dim]", *["-"] * 9)
                continue
            table.add_row(
                name, level, tensor_mix_text(cell["tensor_types"]), _number(cell["size_mib"], 0),
                _number(cell["load_s"], 2), _number(cell["memory_mib"], 0), _number(cell["s_per_text"], 3),
                _number(cell["speed_ratio"], 2), _number(cell["accuracy"], 3), _number(cell["macro_f1"], 3),
                _number(cell["ece"], 3), _number(cell["mean_kl"], 4),
            )
    return table


def mixture_table(report: dict[str, Any]) -> Table:
    """MoLAM accuracy with every model at one level, then the frontier's best under the budget."""
    table = Table(title="MoLAM mixture of all models")
    for column in ("level", "models at", "RSS GiB", "accuracy", "macro-F1"):
        table.add_column(column, justify="left" if column in ("level", "models at") else "right", overflow="fold")
    for level, row in report["mixture"].items():
        levels = ", ".join(f"{m} {q}" for m, q in row["levels"].items())
        if row["status"] != "measured":
            table.add_row(level, f"[dim]skipped: {row['reason']}[/dim]", "-", "-", "-")
            continue
        table.add_row(level, levels, _number(row["memory_gib"], 2), _number(row["accuracy"], 3),
                      _number(row["macro_f1"], 3))
    frontier = report["frontier"]
    best = frontier["best_under_budget"]
    if frontier["budget_gib"] is not None:
        text = ", ".join(f"{m} {q}" for m, q in best["levels"].items()) if best else "nothing fits"
        table.add_row(f"best ≤ {frontier['budget_gib']:g} GiB", text, _number(best and best["memory_gib"], 2),
                      _number(best and best["accuracy"], 3), "-", style="bold")
    return table


def write_json(report: dict[str, Any], path: Path) -> None:
    """The report as indented JSON, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy against file size: a line per model through its levels, and the mixture of all
    models at each common level (x: the files' summed size) drawn thicker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    sizes: dict[str, dict[str, float]] = {}
    for name, model in report["models"].items():
        measured = [(q, c) for q, c in model["levels"].items() if c["status"] == "measured"]
        measured.sort(key=lambda item: item[1]["size_mib"])
        sizes[name] = {q: c["size_mib"] for q, c in measured}
        axes.plot([c["size_mib"] for _, c in measured], [c["accuracy"] for _, c in measured], marker="o", label=name)
        for quant, cell in measured:
            axes.annotate(quant, (cell["size_mib"], cell["accuracy"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    points = sorted(
        (sum(sizes[m][q] for m, q in row["levels"].items()), row["accuracy"], level)
        for level, row in report["mixture"].items() if row["status"] == "measured"
    )
    if points:
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="*", markersize=12, linewidth=3,
                  color="black", label="MoLAM mixture (all models)")
        for x, y, level in points:
            axes.annotate("source files" if level == SOURCE_LEVEL else level, (x, y), fontsize=8, weight="bold",
                          xytext=(4, -10), textcoords="offset points")
    axes.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel("model file size (MiB, log scale; mixture: all files together)")
    axes.set_ylabel(f"accuracy on {report['data']['eval_rows']} evaluation texts")
    axes.set_title(f"Quantization level vs annotation accuracy — {report['data']['file']}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
