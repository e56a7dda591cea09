"""Which LLMs stay in memory together: models take turns when they do not all fit.

A label job's panel runs every model over the same rows, one model after the other; a model
that is not resident is loaded when it has texts to evaluate, and the least recently used
resident model is released first when the limit is reached. The limit is
``llm.max_resident_models`` (``--max-resident-models``) or, unset, as many models (in the
panel's order, largest first counted) as fit ``llm.memory_budget_gb`` - by default 80 % of
the memory available when the job starts: the GPU's free memory when llama.cpp is a GPU build
and every layer is offloaded (``n_gpu_layers = -1``), else the machine's. A model's footprint is estimated from its file:
the weights, plus :data:`RUNTIME_OVERHEAD` for the KV cache and compute buffers at the
default context. Residency never changes a number: a text's signals depend on the text, the
model, the prompt and its batch mates (cut from the texts alone), not on what else is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

RUNTIME_OVERHEAD = 1.25
"""A loaded model's memory as a multiple of its file size (KV cache, compute buffers)."""
MIN_EXTRA_BYTES = 256 * 2**20
"""At least this much beyond the file for a loaded model (small models: fixed buffers dominate)."""
BUDGET_SHARE = 0.8
"""Share of the available memory a default budget takes."""


def available_memory_bytes() -> int:
    """Memory available to a new allocation now (Linux: MemAvailable; elsewhere: free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gpu_free_bytes() -> int | None:
    """Free memory of the first GPU llama.cpp offloads to (bytes), or None: a CPU build of
    llama.cpp, or no ``nvidia-smi`` to ask (a local program; nothing leaves the machine)."""
    try:
        import llama_cpp

        if not llama_cpp.llama_supports_gpu_offload():
            return None
    except (ImportError, AttributeError):
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.split()[0]) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def default_budget(n_gpu_layers: int) -> tuple[float, str]:
    """(bytes, where) of the default memory budget: :data:`BUDGET_SHARE` of the GPU's free memory
    when every layer goes there, else of the machine's available memory."""
    gpu = gpu_free_bytes() if n_gpu_layers == -1 else None
    if gpu is not None:
        return BUDGET_SHARE * gpu, "GPU"
    return BUDGET_SHARE * available_memory_bytes(), "RAM"


def model_footprint(size_bytes: int) -> int:
    """Estimated memory (bytes) of a model loaded from a file of ``size_bytes``."""
    return max(int(size_bytes * RUNTIME_OVERHEAD), size_bytes + MIN_EXTRA_BYTES)


def resident_limit(sizes: Sequence[int], budget_bytes: float, asked: int | None = None) -> int:
    """How many of the models (file sizes in bytes, panel order) stay resident together: ``asked``
    if given, else the most that fit ``budget_bytes`` counting the largest first; at least 1."""
    if asked is not None:
        return max(1, min(asked, len(sizes)))
    used, fits = 0, 0
    for footprint in sorted((model_footprint(s) for s in sizes), reverse=True):
        if fits and used + footprint > budget_bytes:
            break
        used, fits = used + footprint, fits + 1
    return max(1, fits)


def residency_plan(paths: Sequence[Path], budget_gb: float | None, asked: int | None,
                   n_gpu_layers: int = 0) -> dict[str, object]:
    """{"resident": N, "models": M, "budget_gb", "budget_of", "estimated_gb"} for the models at
    ``paths``; ``budget_of``: "config", "GPU" or "RAM" (:func:`default_budget`)."""
    sizes = [Path(p).stat().st_size for p in paths]
    budget, where = (budget_gb * 2**30, "config") if budget_gb is not None else default_budget(n_gpu_layers)
    limit = resident_limit(sizes, budget, asked)
    largest = sorted((model_footprint(s) for s in sizes), reverse=True)[:limit]
    return {"resident": limit, "models": len(sizes), "budget_gb": round(budget / 2**30, 2), "budget_of": where,
            "estimated_gb": round(sum(largest) / 2**30, 2), "asked": asked}
