"""Which classifier a job trains: ``head`` (an MLP on frozen sentence embeddings) or
``top-layers`` (MiniLM's top layers fine-tuned with the head, on cached hidden states).

``auto`` estimates the seconds of the job's largest training with top-layers, the final
classifier's (every row of the input when pseudo-labelled rows fill the rest), and takes
``top-layers`` when they fit ``al.round_seconds``; the choice, the
estimate and the reason go into the job's report. The estimate is a cost model of the texts'
lengths, the trained layers and the threads, not a timing: a timing on a busy machine (three
LLMs resident, another job running) varied by 2x and flipped the choice between two runs of
the same job, and so their labels. The same texts and settings give the same choice; a machine
much slower or faster than the one the constants were measured on is misjudged by that factor
(``--classifier head|top-layers`` fixes the choice, and the report shows the estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import ActiveLearningConfig
from .encoder import Encoder, HiddenStates, load_top_layers

ROW_THREAD_SECONDS = 4.2e-3
"""Thread-seconds per row and epoch of top-layers training whatever its length (the head, the
optimiser, batching). Measured warm on the development machine (2-core x86-64 with AVX-512,
onnxruntime CPU), 48-row epochs of rotten-tomatoes, bbc-news and stackoverflow texts."""
TOKEN_LAYER_THREAD_SECONDS = 0.138e-3
"""Thread-seconds per token and trained layer and epoch (forward and backward), the same runs:
bbc-news (128 tokens) 35.6 ms per row on 1 thread and 19.8 on 2, stackoverflow (13.5 tokens)
6.8 and 4.0; the model gives 39.5 / 19.8 and 7.9 / 3.9."""
EXPECTED_EPOCHS = 12
"""Epochs a top-layers training is assumed to take (early stopping: patience 5 after the best)."""


def top_layers_inputs(encoder: Encoder, texts: Sequence[str], top_layers: int) -> tuple[HiddenStates, dict[str, np.ndarray]]:
    """The hidden states below the trained layers (n, T, D) and those layers' pretrained weights."""
    return encoder.hidden_states(list(texts), below_top=top_layers), load_top_layers(top_layers, encoder.files_dir)


def top_layers_row_seconds(encoder: Encoder, texts: Sequence[str], top_layers: int, threads: int) -> float:
    """Estimated seconds per row and epoch of top-layers training on ``texts`` (mean tokens,
    at most ``max_length``) with ``threads`` threads: a function of the texts and settings only."""
    tokens = float(np.mean([min(len(e.ids), encoder.max_length) for e in encoder.tokenize(list(texts))])) if texts else 0.0
    return (ROW_THREAD_SECONDS + tokens * top_layers * TOKEN_LAYER_THREAD_SECONDS) / max(1, threads)


def choose_classifier(setting: str, encoder: Encoder, texts: Sequence[str], final_rows: int,
                      config: ActiveLearningConfig, threads: int) -> dict[str, Any]:
    """{"mode", "why", ...}: ``setting`` itself unless it is ``auto`` (see the module docstring)."""
    if setting != "auto":
        return {"mode": setting, "why": f"asked for ({setting})"}
    per_row = top_layers_row_seconds(encoder, texts, config.top_layers, threads)
    estimate = per_row * final_rows * EXPECTED_EPOCHS
    fits = estimate <= config.round_seconds
    why = (f"top-layers training estimated at {estimate:.0f} s ({final_rows} rows x {EXPECTED_EPOCHS} epochs x "
           f"{per_row * 1000:.1f} ms), {'within' if fits else 'over'} al.round_seconds = {config.round_seconds:g}")
    return {"mode": "top-layers" if fits else "head", "why": why, "estimated_round_seconds": round(estimate, 1)}
