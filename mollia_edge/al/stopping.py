"""When the loop stops asking: stabilising predictions, or a budget of LLM time.

Stabilising predictions (Bloodgood & Vijay-Shanker, 2009): after each round's classifier is
trained, its labels for a fixed stop set of pool rows are compared with the previous round's
by Cohen's kappa; when the last ``window`` kappas all reach ``threshold`` more labelled rows
no longer change what the classifier says, and the loop stops. No gold label is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..agreement import cohen_kappa

STOP_SET_ROWS = 2000
"""At most this many pool rows in the stop set (drawn once, seeded)."""


def stabilised(kappas: Sequence[float | None], threshold: float, window: int) -> bool:
    """Whether the last ``window`` kappas between consecutive rounds all reach ``threshold``
    (a round without a kappa, the first or the first after a resume, breaks the run)."""
    recent = list(kappas)[-window:]
    return len(recent) == window and all(k is not None and k >= threshold for k in recent)


@dataclass
class StoppingRule:
    """The loop's stopping rule. rows: the stop set (pool row indices); ``minutes``: the LLM
    time the loop may spend (None: no limit); ``stable``: whether predictions stabilising stops
    the loop (False: only the budget)."""

    rows: np.ndarray
    n_classes: int
    threshold: float = 0.99
    window: int = 3
    stable: bool = True
    minutes: float | None = None
    kappas: list[float | None] = field(default_factory=list)
    llm_seconds: float = 0.0
    _previous: np.ndarray | None = None

    def observe(self, predicted: np.ndarray) -> float | None:
        """Record a round's labels for the stop set (shape (len(rows),)); its kappa with the
        previous round's (None for the first)."""
        kappa = None if self._previous is None else cohen_kappa(self._previous, predicted, self.n_classes)
        self._previous = np.asarray(predicted).copy()
        self.kappas.append(kappa)
        return kappa

    def spend(self, seconds: float) -> None:
        """LLM seconds the loop spent annotating a round's queries."""
        self.llm_seconds += seconds

    def reason(self) -> str | None:
        """Why the loop stops after this round, or None to go on."""
        if self.stable and stabilised(self.kappas, self.threshold, self.window):
            return f"predictions stable: kappa >= {self.threshold} for {self.window} rounds"
        if self.minutes is not None and self.llm_seconds >= self.minutes * 60:
            return f"LLM budget spent: {self.llm_seconds / 60:.1f} of {self.minutes:g} minutes"
        return None


def parse_llm_budget(text: str | None) -> tuple[int | None, float | None]:
    """``--llm-budget``: "N" texts the LLMs annotate in the loop, or "Nm" minutes of LLM time
    in the loop -> (texts, minutes), the other None; (None, None) for no budget."""
    if text is None or not str(text).strip():
        return None, None
    value = str(text).strip().lower()
    try:
        if value.endswith("m"):
            minutes = float(value[:-1])
            if minutes > 0 and np.isfinite(minutes):
                return None, minutes
        elif int(value) >= 0:
            return int(value), None
    except ValueError:
        pass
    from ..errors import ConfigError

    raise ConfigError(f"--llm-budget must be a number of texts (e.g. 500) or of minutes (e.g. 30m), got {text!r}")


def stop_set(pool: np.ndarray, seed: int, size: int = STOP_SET_ROWS) -> np.ndarray:
    """The stop set: ``size`` pool rows (all when fewer), drawn once with ``seed``, sorted."""
    pool = np.asarray(pool, dtype=np.int64)
    if len(pool) <= size:
        return np.sort(pool)
    return np.sort(np.random.default_rng(seed).choice(pool, size=size, replace=False))
