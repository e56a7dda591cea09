"""Which classifier a job trains: ``head`` (an MLP on frozen sentence embeddings) or
``top-layers`` (MiniLM's top layers fine-tuned with the head, on cached hidden states).

``auto`` times a few top-layers training steps on this machine and takes ``top-layers`` when
one round of the job (its largest, the final training) is estimated to fit
``al.round_seconds``; the choice, the estimate and the reason go into the job's report. The
timing makes ``auto`` depend on the machine: the job records its choice in the session, so a
resumed job keeps it, and ``--classifier head|top-layers`` fixes it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import ActiveLearningConfig
from .classifier import OnnxClassifier
from .encoder import Encoder, HiddenStates, load_top_layers

TIMING_ROWS = 48
"""Texts the timing trains on (one epoch)."""
EXPECTED_EPOCHS = 12
"""Epochs a top-layers training is assumed to take (early stopping: patience 5 after the best)."""


def top_layers_inputs(encoder: Encoder, texts: Sequence[str], top_layers: int) -> tuple[HiddenStates, dict[str, np.ndarray]]:
    """The hidden states below the trained layers (n, T, D) and those layers' pretrained weights."""
    return encoder.hidden_states(list(texts), below_top=top_layers), load_top_layers(top_layers)


def time_top_layers(encoder: Encoder, texts: Sequence[str], k: int, config: ActiveLearningConfig,
                    threads: int) -> float:
    """Seconds per row and epoch of top-layers training, from one epoch on a few texts."""
    sample = [texts[i] for i in np.linspace(0, len(texts) - 1, min(TIMING_ROWS, len(texts))).astype(int)]
    inputs, init_layers = top_layers_inputs(encoder, sample, config.top_layers)
    labels = np.arange(len(sample)) % k
    clf = OnnxClassifier(mode="top-layers", n_classes=k, hidden=config.hidden, epochs=1, batch_size=config.batch_size,
                         init_layers=init_layers, threads=threads, length_buckets=config.length_buckets)
    started = time.perf_counter()
    clf.fit(inputs, labels)
    return (time.perf_counter() - started) / len(sample)


def choose_classifier(setting: str, encoder: Encoder, texts: Sequence[str], k: int, final_rows: int,
                      config: ActiveLearningConfig, threads: int) -> dict[str, Any]:
    """{"mode", "why", ...}: ``setting`` itself unless it is ``auto`` (see the module docstring)."""
    if setting != "auto":
        return {"mode": setting, "why": f"asked for ({setting})"}
    started = time.perf_counter()
    per_row = time_top_layers(encoder, texts, k, config, threads)
    estimate = per_row * final_rows * EXPECTED_EPOCHS
    fits = estimate <= config.round_seconds
    why = (f"top-layers rounds estimated at {estimate:.0f} s ({final_rows} rows x {EXPECTED_EPOCHS} epochs x "
           f"{per_row * 1000:.1f} ms), {'within' if fits else 'over'} al.round_seconds = {config.round_seconds:g}")
    return {"mode": "top-layers" if fits else "head", "why": why, "estimated_round_seconds": round(estimate, 1),
            "seconds": round(time.perf_counter() - started, 2)}
