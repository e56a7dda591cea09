"""What the tests that run label jobs share: a small seeded input table, the arguments of a tiny
job, and how many examples a property test that runs a job per example draws."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

from mollia_edge.config import Config, LLMConfig

NO_PRUNE = Config(llm=LLMConfig(prune="off"))
"""Every LLM annotates: the tiny random test models add nothing to the text annotator, and the
value check would release them (tests/test_llm_value.py tests it)."""

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
"""The Hypothesis profile conftest.py loads: ``dev`` (few examples) or ``ci`` (more)."""


def job_examples(ci: int) -> int:
    """Examples for a property test that runs a label job per example: ``ci`` in CI, a third of
    it (at least 2) in the edit loop."""
    return ci if PROFILE == "ci" else max(2, ci // 3)


WORDS = "good bad great awful fine terrible lovely poor".split()


def write_input(path: Path, n: int = 60, seeds: int = 12) -> Path:
    rng = random.Random(0)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label", "note"])
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(5)) + f" #{i}"
            label = ("pos" if "good" in text or "great" in text else "neg") if i < seeds else ""
            writer.writerow([i, text, label, f"n{i}"])
    return path


def args(data: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """A tiny job's arguments; ``--prune off``: the tiny random models add nothing to the text
    annotator, and these jobs test what the LLMs' outputs become (tests/test_llm_value.py tests pruning)."""
    return ["label", str(data), "--labels", "pos,neg", "--models", str(model), "--chat-format", "chatml",
            "--rounds", "2", "--batch", "5", "--llm-sample", "15", "--classifier", "head", "--prune", "off", "--quiet",
            "-o", str(out), *extra]


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
