"""Models take turns in memory: the limit, the plan, and a job's output unchanged by it."""

from __future__ import annotations

import csv
import io
import json

import pytest
from jobs import args, write_input
from tiny_gguf import STANDARD_BOOST, write_tiny_gguf

from mollia_edge.cli import main
from mollia_edge.llm import engine as engine_module
from mollia_edge.llm.residency import MIN_EXTRA_BYTES, model_footprint, resident_limit

GB = 2**30


def test_the_resident_limit_counts_the_largest_models_first():
    sizes = [5 * GB, 4 * GB, 6 * GB]  # footprints 6.25, 5, 7.5 GB
    assert resident_limit(sizes, 100 * GB) == 3
    assert resident_limit(sizes, 14 * GB) == 2  # 7.5 + 6.25
    assert resident_limit(sizes, 13 * GB) == 1
    assert resident_limit(sizes, 1 * GB) == 1  # one model always loads (the engine says if it cannot)
    assert resident_limit(sizes, 1 * GB, asked=2) == 2 and resident_limit(sizes, 100 * GB, asked=1) == 1
    assert model_footprint(1000) == 1000 + MIN_EXTRA_BYTES


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three")
    return [write_tiny_gguf(folder / f"m{i}.gguf", seed=i, boost=STANDARD_BOOST) for i in range(3)]


def _run(folder, models, *extra):
    data = write_input(folder / "in.csv")
    out = folder / "out.csv"
    argv = args(data, out, models[0], *extra)
    argv[argv.index("--models") + 1] = ",".join(map(str, models))
    assert main(argv) == 0
    return out.read_bytes(), json.loads(out.with_name("out.csv.report.json").read_text())


def test_one_model_at_a_time_gives_the_same_output(three_models, tmp_path, monkeypatch):
    live, most = set(), [0]
    real_init, real_close = engine_module.LlamaEngine.__init__, engine_module.LlamaEngine.close

    def init(self, *a, **k):
        real_init(self, *a, **k)
        live.add(id(self))
        most[0] = max(most[0], len(live))

    def close(self):
        live.discard(id(self))
        real_close(self)

    monkeypatch.setattr(engine_module.LlamaEngine, "__init__", init)
    monkeypatch.setattr(engine_module.LlamaEngine, "close", close)
    (tmp_path / "all").mkdir()
    (tmp_path / "one").mkdir()
    together, report_all = _run(tmp_path / "all", three_models)
    assert most[0] == 3 and report_all["llm_residency"]["resident"] == 3
    most[0] = 0
    turns, report_one = _run(tmp_path / "one", three_models, "--max-resident-models", "1")
    assert most[0] == 1  # never two models loaded at once
    assert report_one["llm_residency"]["resident"] == 1 and max(report_one["llm_residency"]["loads"].values()) > 1
    assert turns == together
    # the loaded model goes first in the next call: one model fewer reloaded per call (in panel
    # order every call would reload all three, as often each)
    loads = report_one["llm_residency"]["loads"]
    assert sum(loads.values()) < 3 * max(loads.values()), loads


def test_a_bad_resident_count_is_one_clear_line(three_models, tmp_path, capsys):
    data = write_input(tmp_path / "in.csv")
    assert main(args(data, tmp_path / "out.csv", three_models[0], "--max-resident-models", "0")) != 0
    err = capsys.readouterr().err
    assert "max_resident_models" in err and "Traceback" not in err and not (tmp_path / "out.csv").exists()


def test_each_model_takes_its_own_llama_cpp_settings(three_models, tmp_path, monkeypatch, capsys):
    """``[models."NAME"]`` in a configuration file: one model gets a smaller context and one
    thread, the others keep ``[llm]``'s; the report lists what each ran with."""
    seen = {}
    real_init = engine_module.LlamaEngine.__init__

    def init(self, model_path, **settings):
        seen[str(model_path).rsplit("/", 1)[-1]] = settings
        real_init(self, model_path, **settings)

    monkeypatch.setattr(engine_module.LlamaEngine, "__init__", init)
    config = tmp_path / "c.toml"
    config.write_text('[llm]\nn_ctx = 4096\n\n[models."m1"]\nn_ctx = 2048\nn_threads = 1\n')
    _, report = _run(tmp_path, three_models, "--config", str(config))
    assert seen["m1.gguf"]["n_ctx"] == 2048 and seen["m1.gguf"]["n_threads"] == 1
    assert seen["m0.gguf"]["n_ctx"] == seen["m2.gguf"]["n_ctx"] == 4096
    assert report["llm_settings"]["m1"] == {"n_ctx": 2048, "n_batch": 512, "n_threads": 1, "n_gpu_layers": -1}
    config.write_text('[models."m1"]\nn_ctx = 1\n')
    data = write_input(tmp_path / "in2.csv")
    assert main(args(data, tmp_path / "out2.csv", three_models[0], "--config", str(config))) != 0
    err = capsys.readouterr().err
    assert '[models."m1"]: llm.n_ctx must be in' in err and "Traceback" not in err


def test_the_default_budget_is_the_gpus_free_memory_when_every_layer_goes_there(three_models, monkeypatch):
    from mollia_edge.llm import residency

    size = three_models[0].stat().st_size
    monkeypatch.setattr(residency, "available_memory_bytes", lambda: 100 * residency.model_footprint(size))  # RAM: room for all
    monkeypatch.setattr(residency, "gpu_free_bytes", lambda: int(1.5 * residency.model_footprint(size) / 0.8))
    gpu = residency.residency_plan(three_models, None, None, n_gpu_layers=-1)
    assert (gpu["budget_of"], gpu["resident"]) == ("GPU", 1)  # one model fits the GPU
    assert residency.residency_plan(three_models, None, None, n_gpu_layers=0)["budget_of"] == "RAM"
    assert residency.residency_plan(three_models, None, None, n_gpu_layers=0)["resident"] == 3
    monkeypatch.setattr(residency, "gpu_free_bytes", lambda: None)  # a CPU build of llama.cpp
    assert residency.residency_plan(three_models, None, None, n_gpu_layers=-1)["budget_of"] == "RAM"
    assert residency.residency_plan(three_models, 0.001, None, n_gpu_layers=-1)["budget_of"] == "config"


def test_a_cpu_build_has_no_gpu_budget():
    from mollia_edge.llm.residency import gpu_free_bytes

    assert gpu_free_bytes() is None  # this machine's llama-cpp-python is a CPU build


def test_annotating_ahead_loads_each_model_once_and_the_loop_queries_only_annotated_rows(three_models, tmp_path):
    """--annotate-ahead (the paper's way): every row up front, one model after the other, so with
    one model resident each is loaded once; the loop then needs no LLM at all."""
    (tmp_path / "turns").mkdir()
    (tmp_path / "ahead").mkdir()
    _, per_round = _run(tmp_path / "turns", three_models, "--max-resident-models", "1", "--rounds", "2")
    output, ahead = _run(tmp_path / "ahead", three_models, "--max-resident-models", "1", "--rounds", "2",
                         "--annotate-ahead")
    assert max(per_round["llm_residency"]["loads"].values()) > 1
    assert set(ahead["llm_residency"]["loads"].values()) == {1}
    rows = list(csv.DictReader(io.StringIO(output.decode("utf-8"))))
    assert ahead["rounds"] == 2 and all(r["label_source"] != "classifier" for r in rows)  # every row annotated
