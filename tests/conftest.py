"""Shared pytest fixtures; and every test runs offline, as mollia-edge does.

The offline environment (:mod:`mollia_edge.offline`: onnxruntime's telemetry and its events
database under ~/.cache/Microsoft, Hugging Face, Ray...) is set here, before any test module
imports onnxruntime on its own (``tests/test_offline.py`` checks it).
"""

from pathlib import Path

import pytest

from mollia_edge.offline import keep_offline
from tiny_gguf import STANDARD_BOOST, write_tiny_gguf

keep_offline()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random llama GGUF whose next token is mostly "a", "b", "</s>" or "<|im_end|>"."""
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    return write_tiny_gguf(path, seed=0, boost=STANDARD_BOOST)


@pytest.fixture(scope="session")
def tiny_model_path_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random llama GGUF without boosted tokens."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny_plain.gguf", seed=0)


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models folder that mollia-edge uses instead of the repository's."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("MOLLIA_EDGE_MODELS_DIR", str(folder))
    return folder
