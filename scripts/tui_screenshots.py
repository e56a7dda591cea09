"""PNG screenshots of each TUI screen (docs/tui-*.png), from a scripted session at 80x24.

The script plays a person with the input's ``gold`` column: it opens the session from the
new-session form (prefilled as by the command line), labels ``--seeds`` rows with the number
keys, runs the job, answers ``--reviews`` items of the review queue, re-runs to export, and
reports the keys pressed. SVG -> PNG needs cairosvg (build time only: pip install cairosvg);
``--svg`` keeps the SVGs instead.

    python scripts/tui_screenshots.py results/ex.csv -o results/ex-tui.csv --labels negative,positive \\
        --llm-sample 60 --rounds 2 --batch 10
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from pathlib import Path

from mollia_edge.label import LabelJob
from tui.app import LabelApp

SIZE = (80, 24)


async def session(app: LabelApp, gold: list[str], seeds: int, reviews: int, docs: Path) -> int:
    """Play the session; returns the number of keys pressed."""
    keys = 0

    async def press(*pressed: str) -> None:
        nonlocal keys
        keys += len(pressed)
        await pilot.press(*pressed)

    async def finish_work() -> None:
        await app.workers.wait_for_complete()
        await pilot.pause()

    def shot(name: str) -> None:
        app.save_screenshot(f"tui-{name}.svg", str(docs))

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shot("setup")
        await press("ctrl+o")
        await finish_work()  # opening the session
        await finish_work()  # ordering the rows
        await press("f2")
        for _ in range(seeds):
            row = app.screen.row
            if row is None:
                break
            await press(str(app.labels.index(gold[row]) + 1))
        shot("seed")
        await press("f3", "r")
        await finish_work()
        shot("run")
        await press("f4")
        for _ in range(reviews):
            item = app.screen.item
            if item is None:
                break
            row = item[0]
            machine = app.opened.session.row_labels()[row].label
            await press("enter" if machine == gold[row] else str(app.labels.index(gold[row]) + 1))
        shot("review")
        await press("f5")
        shot("models")
        await press("f6", "e")
        await finish_work()
        await press("f6")
        shot("export")
        await press("q")
    return keys


def to_png(docs: Path, font: str) -> None:
    """Each SVG as PNG, drawn with a local monospace ``font`` (Textual's SVG names a web font)."""
    import cairosvg

    for svg in sorted(docs.glob("tui-*.svg")):
        text = svg.read_text(encoding="utf-8").replace("Fira Code", font)
        cairosvg.svg2png(bytestring=text.encode("utf-8"), write_to=str(svg.with_suffix(".png")))
        svg.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="a table with a 'text' and a 'gold' column")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--models", help="comma-separated (default: the starter models)")
    parser.add_argument("--seeds", type=int, default=20, help="rows to seed-label by key")
    parser.add_argument("--reviews", type=int, default=10, help="review items to answer by key")
    parser.add_argument("--llm-sample", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--classifier", choices=("auto", "head", "top-layers"), help="(default: the configuration's)")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--font", default="DejaVu Sans Mono", help="an installed monospace font for the PNGs")
    parser.add_argument("--svg", action="store_true", help="keep the SVG screenshots, no PNGs (needs no cairosvg)")
    args = parser.parse_args(argv)
    with args.input.open(encoding="utf-8") as f:
        gold = [row["gold"] for row in csv.DictReader(f)]
    job = LabelJob(input=args.input, output=args.output, labels=tuple(args.labels.split(",")),
                   models=tuple(args.models.split(",")) if args.models else None,
                   llm_sample=args.llm_sample, rounds=args.rounds, batch=args.batch, classifier=args.classifier)
    started = time.perf_counter()
    app = LabelApp(job, author="screenshots", setup=True)
    keys = asyncio.run(session(app, gold, args.seeds, args.reviews, args.docs))
    print(f"{keys} keys pressed, {time.perf_counter() - started:.0f} s (machine time, no human thinking)")
    if not args.svg:
        to_png(args.docs, args.font)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
