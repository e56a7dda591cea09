"""The CPUs this process may run on: its affinity mask (``taskset``, a cgroup cpuset, a batch
scheduler's allocation), not the machine's count. llama.cpp's threads wait by spinning: one more
thread than the cores the process is given slows every call down several times."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """How many CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1
