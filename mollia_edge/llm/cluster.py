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
(:mod:`mollia_edge.offline`) and its dashboard's web server is not started.

Nothing but loopback (checked with strace, ``tests/test_offline.py``). Ray 2.x reaches out in
three places even so, each stopped by the environment its processes inherit
(:data:`RAY_LOCAL_ENVIRONMENT`, set before Ray is imported):

* every process finds "its" IP by a UDP connect to 8.8.8.8:53, then talks over that interface:
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (single-machine mode) makes them all use 127.0.0.1
  (``--ray local`` only: a driver joining a cluster must give its real address);
* the dashboard process, started for usage statistics although the dashboard is off, asks
  cloud metadata servers (169.254.169.254, ``metadata.google.internal``) which cloud it is on,
  usage statistics off or not; the TPU check does the same where a TPU device file exists:
  HTTP proxies set to a closed loopback port make those requests fail at once, without a DNS
  lookup (Ray's own gRPC ignores proxies).

With loopback down Ray would wait some 14 minutes before failing: :func:`check_loopback` says
so in one line first.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import LLMConfig
from ..errors import ConfigError, quoted
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


CLOSED_PROXY = "http://127.0.0.1:9"
"""A loopback port nothing listens on (discard): an HTTP request through it fails at once."""
RAY_ENVIRONMENT = {
    **{name: CLOSED_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    **{name: "localhost,127.0.0.1,::1" for name in ("no_proxy", "NO_PROXY")},
}
"""Forced for every Ray process (a cloud's NO_PROXY often lists 169.254.169.254): see the module docstring."""
RAY_LOCAL_ENVIRONMENT = {**RAY_ENVIRONMENT, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""And for ``--ray local``: every Ray process on 127.0.0.1."""

_saved_environment: dict[str, str | None] = {}


def _set_environment(values: dict[str, str]) -> None:
    """Put ``values`` into this process's environment (Ray's processes inherit it), keeping what
    was there for :func:`stop_ray`."""
    for name, value in values.items():
        _saved_environment.setdefault(name, os.environ.get(name))
        os.environ[name] = value


def _restore_environment() -> None:
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_environment.clear()


def check_loopback(seconds: float = 2.0) -> None:
    """A :class:`ConfigError` unless this machine can talk to itself on 127.0.0.1 (all a local
    Ray runtime needs; without it Ray waits for minutes before failing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            socket.create_connection(server.getsockname(), timeout=seconds).close()
    except OSError as exc:
        raise ConfigError(f"--ray local needs the loopback interface (127.0.0.1), which does not answer "
                          f"({exc.strerror or exc}); bring it up (ip link set lo up) or run without --ray") from None


CONNECT_SECONDS = 4
"""How long a driver tries to join a cluster that takes TCP connections but does not answer as
Ray (``RAY_gcs_server_port_wait_time_s``; Ray's default is 20 tries, a second each)."""


@contextmanager
def _ray_log_lines_hidden() -> Iterator[None]:
    """Ray's C++ core writes its retries straight to file descriptor 2 (some 20 lines for an
    address that is not a Ray cluster): while the runtime starts they go to /dev/null, and the
    job says what happened in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def start_ray(address: str, cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` or start a local runtime (``local``, ``cpus`` CPUs);
    True when this call started it (the caller then shuts it down)."""
    local = address == "local"
    if local:
        check_loopback()
    else:
        _check_reachable(address)
    _set_environment(RAY_LOCAL_ENVIRONMENT if local else
                     {**RAY_ENVIRONMENT, "RAY_gcs_server_port_wait_time_s": str(CONNECT_SECONDS)})  # before Ray reads it
    ray = _ray()
    if ray.is_initialized():
        _restore_environment()
        return False
    if local:  # read once, when Ray is first imported: a process that imported it earlier is told here
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "error"}
    try:
        with _ray_log_lines_hidden():
            if local:
                ray.init(num_cpus=cpus, **options)
            else:
                ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, SystemExit) as exc:
        stop_ray()
        raise ConfigError(f"cannot reach the Ray cluster at {quoted(address)}: {quoted(str(exc), 200, quote=False)}") from None
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
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
    if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in _saved_environment:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = not ray_constants.IS_WINDOWS_OR_OSX
    _restore_environment()


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
