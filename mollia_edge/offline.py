"""Nothing leaves the machine: every library's telemetry and home-folder files switched off.

Imported first by the package (``mollia_edge/__init__.py``), so these settings are in the
process environment before onnxruntime, tokenizers, matplotlib, xgboost, textual or llama.cpp
are imported: most of them read their settings once, when they start.

What each library would do otherwise (checked with ``strace`` inside ``unshare -n``, see
``tests/test_offline.py``):

* onnxruntime (1.29 and later, Linux wheels): a telemetry uploader that resolves
  ``mobile.events.data.microsoft.com`` some 20 s after the first session is created, and an
  events database with a device id under ``~/.cache/Microsoft/DeveloperTools/``.
  ``ORT_DISABLE_TELEMETRY=1`` (its Privacy.md) stops both; ``disable_telemetry_events()``
  alone does not stop the lookups.
* matplotlib (benchmark plots): a font cache under ``~/.cache/matplotlib`` (``MPLCONFIGDIR``
  moves it into mollia-edge's own cache folder).
* Hugging Face libraries (tokenizers, and transformers in the build-time export script): hub
  access and telemetry (``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_TELEMETRY``).
* Ray (the optional cluster extra): usage statistics (``RAY_USAGE_STATS_ENABLED=0``).
* llama.cpp, xgboost and textual make no network call and write no files of their own.

The values are forced, not defaults: a user's environment cannot turn telemetry back on for
a mollia-edge process.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "mollia-edge"


def cache_dir() -> Path:
    """mollia-edge's own cache folder (``~/.cache/mollia-edge`` on Linux; not created here)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


def offline_environment() -> dict[str, str]:
    """The environment variables that keep every library this package may load offline."""
    return {
        "ORT_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MPLCONFIGDIR": str(cache_dir() / "matplotlib"),
    }


def keep_offline() -> None:
    """Put :func:`offline_environment` into this process's environment (and its children's)."""
    os.environ.update(offline_environment())
