"""`mollia-edge bench quant` on the tiny F32 fixture (widths 64 and 128: whole Q8_0/Q4_0 blocks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mollia_edge.bench.frontier import best_under_budget, evaluate_combinations, pareto_front
from mollia_edge.bench.ladder import MANIFEST, build_ladder, find_source, plan_ladder
from mollia_edge.bench.quant import CELL_FIELDS, mean_kl
from mollia_edge.cli import main
from mollia_edge.llm.catalog import load_catalog

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def gold_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "gold.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        for i in range(48):
            writer.writerow([" ".join(rng.choice(["ab", "ba", "bb", "aa", "x"], size=4)), "ab"[i % 2]])
    return path


def test_ladder_builds_q8_0_and_q4_0_from_f32_and_reuses_them(tiny_model_path: Path, models: Path) -> None:
    source = find_source(load_catalog(), str(tiny_model_path))
    assert source.quant == "F32" and not source.is_quantized
    steps = plan_ladder(source, ["Q8_0", "Q4_0"], models)
    assert [(s.quant, s.origin) for s in steps] == [("F32", "source"), ("Q8_0", "build"), ("Q4_0", "build")]
    hashes = build_ladder(source, steps, None, threads=1)
    manifest = json.loads((models / MANIFEST).read_text())
    for step in steps[1:]:
        assert step.path is not None and step.path.is_file()
        assert manifest[step.path.name]["sha256"] == hashes[step.quant]
    mtimes = [s.path.stat().st_mtime_ns for s in steps[1:]]
    assert build_ladder(source, steps, None, threads=1) == hashes
    assert [s.path.stat().st_mtime_ns for s in steps[1:]] == mtimes  # cached, not rebuilt


def test_levels_above_a_quantized_source_are_skipped(tiny_model_path: Path, models: Path) -> None:
    f32 = find_source(load_catalog(), str(tiny_model_path))
    q4 = plan_ladder(f32, ["Q4_0"], models)[1]
    build_ladder(f32, [q4], None, threads=1)
    source = find_source(load_catalog(), str(q4.path))
    assert source.is_quantized and "already Q4_0" in source.note
    steps = plan_ladder(source, ["Q8_0", "Q4_0", "Q2_K"], models)
    assert [(s.quant, s.origin) for s in steps] == [("Q4_0", "source"), ("Q8_0", "skipped"), ("Q2_K", "build")]


def test_frontier_picks_the_best_mixture_under_the_budget() -> None:
    memory = {"a": {"Q8_0": 2.0, "Q4_0": 1.0}, "b": {"Q8_0": 4.0, "Q4_0": 2.0}}
    accuracy = {("Q8_0", "Q8_0"): 0.9, ("Q8_0", "Q4_0"): 0.88, ("Q4_0", "Q8_0"): 0.8, ("Q4_0", "Q4_0"): 0.7}
    combos = evaluate_combinations(memory, lambda lv: accuracy[lv["a"], lv["b"]], max_combinations=64)
    assert len(combos) == 4
    assert [c.memory_gib for c in pareto_front(combos)] == [3.0, 4.0, 6.0]
    assert best_under_budget(combos, 5.0).levels == {"a": "Q8_0", "b": "Q4_0"}
    assert best_under_budget(combos, 2.0) is None
    greedy = evaluate_combinations(memory, lambda lv: accuracy[lv["a"], lv["b"]], max_combinations=3)
    assert len(greedy) == 3 and greedy[-1].levels == {"a": "Q8_0", "b": "Q8_0"}


def test_mean_kl_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    p = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert mean_kl(p, p) == pytest.approx(0.0)
    assert mean_kl(p, p[:, ::-1]) > 0


def test_bench_quant_end_to_end(tiny_model_path: Path, models: Path, gold_csv: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "quant", "--models", str(tiny_model_path), "--quants", "Q8_0,Q4_0", "--data", str(gold_csv),
            "--n", "40", "--seed-size", "20", "--timing-texts", "4", "--timing-runs", "1", "--budget-gb", "1",
            "-o", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "quant.json").read_text())
    levels = report["models"]["tiny"]["levels"]
    assert list(levels) == ["F32", "Q8_0", "Q4_0"]
    for cell in levels.values():
        assert set(cell) == set(CELL_FIELDS)
        assert cell["status"] == "measured"
        assert all(cell[key] is not None for key in CELL_FIELDS if key != "reason")
    assert levels["F32"]["mean_kl"] == pytest.approx(0.0)
    assert levels["Q4_0"]["tensor_types"]["Q4_0"] > 0
    assert min(cell["speed_ratio"] for cell in levels.values()) == pytest.approx(1.0)
    assert {row["status"] for row in report["mixture"].values()} == {"measured"}
    assert report["frontier"]["best_under_budget"] is not None
    png = (out / "quant.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert "tiny" in capsys.readouterr().out
    computed_once = (out / "quant.sqlite").stat().st_size
    assert main(argv) == 0  # resumed: every LLM output comes from the cache
    assert (out / "quant.sqlite").stat().st_size == computed_once


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--quants", "Q9_9"], "unknown quantization level"),
        (["--n", "500"], "use --n 48 or fewer"),
        (["--label-column", "gold"], "no column 'gold'"),
        (["--budget-gb", "-1"], "--budget-gb must be > 0"),
        (["--n", "20"], "--n (20) must exceed --seed-size (20)"),
        (["--models", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_bad_input_fails_in_one_line(tiny_model_path: Path, models: Path, gold_csv: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    argv = ["bench", "quant", "--models", str(tiny_model_path), "--data", str(gold_csv), "--n", "40",
            "--seed-size", "20", "-o", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_bench_quant_words_its_prompts_with_a_task_file(tiny_model_path: Path, models: Path, gold_csv: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mollia_edge.bench.quant as quant_module

    task = tmp_path / "task.toml"
    argv = ["bench", "quant", "--models", str(tiny_model_path), "--quants", "Q8_0", "--data", str(gold_csv),
            "--n", "40", "--seed-size", "20", "--timing-texts", "2", "--timing-runs", "1", "--task", str(task),
            "-o", str(tmp_path / "out")]
    task.write_text("[labels.x]\n[labels.y]\n", encoding="utf-8")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "task file's labels" in err and "\n" not in err
    task.write_text('[labels.a]\ndescription = "the first"\n[labels.b]\ndescription = "the second"\n', encoding="utf-8")
    worded = []
    real = quant_module.with_task
    monkeypatch.setattr(quant_module, "with_task", lambda prompt, t: worded.append(real(prompt, t)) or worded[-1])
    assert main(argv) == 0
    assert worded and all("- a: the first\n- b: the second" in prompt.prefix for prompt in worded)
