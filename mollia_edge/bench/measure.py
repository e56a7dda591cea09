"""One model file measured alone in a child process: load time, peak memory, seconds per text.

:func:`measure_file` starts ``python -m mollia_edge.bench.measure`` and sends it a JSON request
on stdin (texts travel only through the pipe). The child annotates every text (outputs cached
in the store, so a rerun computes nothing twice), then annotates the timing texts again
without the cache, once, and reports progress and its result as JSON lines on stdout. One process
per file keeps one model's memory from mixing with another's.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import LLMConfig
from ..errors import ModelError, MolliaError
from ..llm.prompts import PromptSpec


@dataclass(frozen=True)
class Measurement:
    """What one file cost: load seconds, peak and baseline RSS of its process (MiB), and
    seconds per text of an uncached run over the timing texts."""

    load_s: float
    peak_rss_mib: float
    baseline_rss_mib: float
    s_per_text: float

    @property
    def memory_mib(self) -> float:
        """Memory the model adds to a process: peak RSS above the interpreter's."""
        return self.peak_rss_mib - self.baseline_rss_mib

    def best_with(self, other: Measurement) -> Measurement:
        """Two runs of one file as one: the faster load and annotation, the larger memory."""
        memory = max(self, other, key=lambda m: m.memory_mib)
        return Measurement(min(self.load_s, other.load_s), memory.peak_rss_mib, memory.baseline_rss_mib,
                           min(self.s_per_text, other.s_per_text))


def measure_file(
    model_path: Path,
    prompt: PromptSpec,
    llm: LLMConfig,
    store_path: Path,
    texts: Sequence[str],
    timing_texts: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> Measurement:
    """Annotate ``texts`` into the store and time ``timing_texts`` in a child process."""
    request = {
        "model_path": str(model_path), "prompt": dataclasses.asdict(prompt), "llm": dataclasses.asdict(llm),
        "store": str(store_path), "texts": list(texts), "timing_texts": list(timing_texts),
    }
    # stderr is dropped: a crash's traceback could quote the texts
    child = subprocess.Popen(
        [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps(request))
    child.stdin.close()
    reply: dict[str, Any] = {}
    for line in child.stdout:
        reply = json.loads(line)
        if "done" in reply and progress:
            progress(reply["done"], reply["total"])
    code = child.wait()
    if "error" in reply:
        raise MolliaError(reply["error"])
    if code != 0 or "result" not in reply:
        raise ModelError(f"measuring {model_path.name} failed: its process ended with exit code {code}")
    return Measurement(**reply["result"])


def _rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _measure(request: dict[str, Any]) -> dict[str, float]:
    from ..llm.annotator import LLMAnnotator
    from ..llm.engine import LlamaEngine
    from ..store import Store

    baseline = _rss_mib("VmRSS")
    path = Path(request["model_path"])
    prompt_fields = request["prompt"]
    prompt = PromptSpec(
        **{**prompt_fields, "labels": tuple(prompt_fields["labels"]),
           "demonstrations": tuple(tuple(d) for d in prompt_fields["demonstrations"]),
           "descriptions": tuple(prompt_fields["descriptions"]), "aliases": tuple(map(tuple, prompt_fields["aliases"]))}
    )
    llm = LLMConfig(**request["llm"])
    started = time.perf_counter()
    LlamaEngine.from_config(path, llm).close()
    load_s = time.perf_counter() - started
    with Store(request["store"]) as store, LLMAnnotator(path, prompt, llm, store) as annotator:
        annotator.annotate(request["texts"], lambda done, total: _emit({"done": done, "total": total}))
    timing = request["timing_texts"]
    with LLMAnnotator(path, prompt, llm) as annotator:
        annotator.continuations  # load the model and evaluate the shared prefix before timing
        started = time.perf_counter()
        annotator.annotate(timing)
        seconds = time.perf_counter() - started
    return {"load_s": load_s, "peak_rss_mib": _rss_mib("VmHWM"), "baseline_rss_mib": baseline,
            "s_per_text": seconds / len(timing)}


def main() -> int:
    try:
        _emit({"result": _measure(json.load(sys.stdin))})
    except MolliaError as exc:
        _emit({"error": str(exc)})
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
