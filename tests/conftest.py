"""Shared pytest fixtures, the test markers and Hypothesis profiles; and every test runs
offline, as mollia-edge does.

The offline environment (:mod:`mollia_edge.offline`: onnxruntime's telemetry and its events
database under ~/.cache/Microsoft, Hugging Face, Ray...) is set here, before any test module
imports onnxruntime on its own (``tests/test_offline.py`` checks it).

Markers (``make test-fast`` runs the tests that carry none of them):

* ``job``: runs a label job (or ``annotate``/``bench quant``) end to end on tiny models, every
  test of a module in :data:`JOB_MODULES`;
* ``system``: subprocesses, network namespaces, a Ray runtime, a wheel build (:data:`SYSTEM_MODULES`);
* ``snapshot``: a TUI screen compared with its stored SVG.

Hypothesis: the ``dev`` profile (the default) draws few examples, ``ci`` (where ``CI`` is set,
or ``HYPOTHESIS_PROFILE=ci``) more; a property test whose every example is a whole label job
draws :func:`jobs.job_examples` of them.
"""

import os
from pathlib import Path


def _one_core_per_worker() -> None:
    """Under pytest-xdist each worker runs on a core of its own (its affinity mask, which the
    tool's thread counts follow: :func:`mollia_edge.cpus.usable_cpus`), and its BLAS in one
    thread: two workers each running llama.cpp, OpenBLAS and onnxruntime on every core made the
    spinning threads wait for each other (a 13 s test took 37-45 s in the suite)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if count > len(cores):
        return
    os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


_one_core_per_worker()  # before numpy and the tool are imported

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from jobs import PROFILE  # noqa: E402
from mollia_edge.offline import keep_offline  # noqa: E402
from tiny_gguf import STANDARD_BOOST, write_tiny_gguf  # noqa: E402

keep_offline()

JOB_MODULES = {
    "test_label_job", "test_hostile_input", "test_hostile_paths", "test_label_bad_input", "test_predict",
    "test_encoder_folder", "test_residency", "test_file_safety", "test_label_quality", "test_classifier_choice",
    "test_task", "test_teaching", "test_quant", "test_tui", "test_scripts", "test_llm_value", "test_multilabel_job",
}
SYSTEM_MODULES = {"test_offline", "test_install", "test_cluster"}

_QUIET = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}
settings.register_profile("dev", max_examples=30, **_QUIET)
settings.register_profile("ci", max_examples=100, **_QUIET)
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the long tests first (subprocesses, Ray, then jobs): with both cores busy from the start,
    # the suite does not end on one long test while the other core idles
    items.sort(key=lambda item: 0 if item.path.stem in SYSTEM_MODULES else 1 if item.path.stem in JOB_MODULES else 2)
    for item in items:
        module = item.path.stem
        if module in SYSTEM_MODULES:
            item.add_marker(pytest.mark.system)
        elif "snap_compare" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.snapshot)
        elif module in JOB_MODULES:
            item.add_marker(pytest.mark.job)


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
