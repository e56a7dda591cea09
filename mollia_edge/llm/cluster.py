"""LLM annotation on a Ray cluster (the optional ``cluster`` extra): each model's texts are
evaluated by a pool of Ray actors, one llama.cpp model per actor; the results come back to
the driver, which alone writes the session store, so a job killed mid-way resumes from the
store as it does in-process.

The numbers are those of an in-process run: the driver asks one actor how the pending texts
are cut into groups (:meth:`LLMAnnotator.group_sizes`, a function of the texts, the model and
the prompt) and sends each actor runs of *whole* groups, which it cuts the same way; sampling
is seeded per text. Model files are read by every actor from the same path: on a cluster that
path must exist on every node (a shared or copied folder).

``--ray local`` starts a Ray runtime on this machine; ``--ray ADDRESS`` joins a running
cluster (``ray start --head`` inside the air gap). Ray's usage statistics are off
(:mod:`mollia_edge.offline`) and its dashboard is not started.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import LLMConfig
from ..errors import ConfigError
from .annotator import LLMAnnotator
from .prompts import PromptSpec
from .signals import TextSignals

BATCH_TEXTS = 16
"""Texts (whole groups, at least one) sent to an actor at a time: each batch is stored as it returns."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: install the cluster extra (pip install 'mollia-edge[cluster]')") from None
    return ray


def start_ray(address: str, cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` or start a local runtime (``local``, ``cpus`` CPUs);
    True when this call started it (the caller then shuts it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    if address != "local":
        _check_reachable(address)
    try:
        if address == "local":
            ray.init(num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, SystemExit) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    return True


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """A HOST:PORT address must take a TCP connection within ``seconds`` (Ray itself waits minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return  # another form Ray understands (auto, ray://...): Ray says what is wrong
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); "
                          "start it with `ray start --head` or check the address") from None


def stop_ray() -> None:
    _ray().shutdown()


class ModelWorker:
    """What one Ray actor runs: one model, no store (the driver stores)."""

    def __init__(self, path: str, prompt: PromptSpec, llm: LLMConfig) -> None:
        self.annotator = LLMAnnotator(path, prompt, llm, None)

    def prefix_fits(self, prompt: PromptSpec) -> bool:
        return self.annotator.prefix_fits(prompt)

    def group_sizes(self, prompt: PromptSpec, texts: Sequence[str], hashes: Sequence[str]) -> list[int]:
        self.annotator.use_prompt(prompt)
        return self.annotator.group_sizes(texts, hashes)

    def evaluate(self, prompt: PromptSpec, texts: Sequence[str], hashes: Sequence[str]) -> list[TextSignals]:
        self.annotator.use_prompt(prompt)
        return self.annotator.evaluate(texts, hashes)


def batches_of_groups(sizes: Sequence[int], most: int = BATCH_TEXTS) -> list[tuple[int, int]]:
    """(start, stop) runs of whole consecutive groups (sizes in order), each up to ``most`` texts
    (one group alone where it is larger)."""
    runs, start, stop = [], 0, 0
    for size in sizes:
        if stop > start and stop + size - start > most:
            runs.append((start, stop))
            start = stop
        stop += size
    if stop > start:
        runs.append((start, stop))
    return runs


class RayModel:
    """One model's pool of ``actors`` Ray actors (``cpus`` CPUs and as many llama.cpp threads each):
    the stand-in an :class:`LLMAnnotator` uses instead of a local engine (its ``remote``). The
    job's models take turns on the cluster: the panel closes one model's pool before another's
    starts, so each model may use every actor slot."""

    def __init__(self, path: Path, prompt: PromptSpec, llm: LLMConfig, actors: int, cpus: int) -> None:
        self._ray = _ray()
        self.path, self.prompt, self.llm, self.n_actors, self.cpus = path, prompt, llm, actors, cpus
        self.actors: list[Any] = []

    def _pool(self) -> Any:
        """The actors, started on first need (they hold the cluster's CPUs until :meth:`close`)."""
        from ray.util import ActorPool

        if not self.actors:
            worker = self._ray.remote(num_cpus=self.cpus)(ModelWorker)
            self.actors = [worker.remote(str(self.path), self.prompt, self.llm) for _ in range(self.n_actors)]
        return ActorPool(self.actors)

    def prefix_fits(self, prompt: PromptSpec) -> bool:
        self._pool()
        return self._ray.get(self.actors[0].prefix_fits.remote(prompt))

    def evaluate_groups(self, prompt: PromptSpec, texts: Sequence[str], hashes: Sequence[str]) -> Iterator[list[TextSignals]]:
        """Signals of ``texts`` in order, one list per batch of whole groups, as batches return."""
        pool = self._pool()
        sizes = self._ray.get(self.actors[0].group_sizes.remote(prompt, list(texts), list(hashes)))
        runs = batches_of_groups(sizes)
        yield from pool.map(lambda actor, run: actor.evaluate.remote(prompt, texts[run[0]:run[1]],
                                                                    hashes[run[0]:run[1]]), runs)

    def close(self) -> None:
        """Stop the actors (the model is unloaded; a later call starts them again)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
