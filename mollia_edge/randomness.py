"""One random seed per purpose, derived from the job's seed: same seed, same draws, everywhere."""

from __future__ import annotations

import numpy as np


def derived_seed(seed: int, *purpose: int) -> int:
    """A 32-bit seed for one ``purpose`` (a tuple of ints), from ``seed`` (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([seed, *purpose]).generate_state(1)[0])
