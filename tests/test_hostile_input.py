"""Hostile and malformed input (issue 17, parts 3 and 4): every case ends in ONE ``error:`` line
and a non-zero exit (or works, where it is made to), before expensive work where possible;
never a traceback, a segfault or an "internal error"; the input is never changed, nothing is
left at the output path after a refusal, and no message quotes user text at length."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import gguf
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from jobs import job_examples
from mollia_edge.cli import main
from mollia_edge.data import FORMULA_PREFIXES, normalise_label, spreadsheet_safe
from jobs import write_csv

LONG = 40
"""User text longer than this must never appear whole in a message."""
LABEL_ARGS = ["--chat-format", "chatml", "--classifier", "head", "--quiet", "--rounds", "1", "--batch", "2", "--llm-sample", "4"]
HAS_PYARROW = find_spec("pyarrow") is not None


# -- running a command and checking the invariants ----------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expire(signum, frame):
        raise TimeoutError(f"the command ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], seconds: int = 120) -> tuple[int, str]:
    """``mollia-edge ARGV`` in this process: its exit code and what it wrote to stderr."""
    err = io.StringIO()
    with time_limit(seconds), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def snapshot(paths: list[Path]) -> dict[str, tuple[int, bytes | None]]:
    """Mode and (regular files only: a pipe would block) bytes of each path."""
    state = {}
    for path in paths:
        mode = os.lstat(path).st_mode
        state[str(path)] = (mode, path.read_bytes() if path.is_file() and not path.is_symlink() else None)
    return state


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def check_invariants(code: int, err: str, ok: bool, out: Path, secrets: list[str]) -> None:
    """No traceback, no internal error, no long user text; success, or one error line and no output."""
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    for secret in secrets:
        if len(secret) > LONG:
            assert secret not in err, f"a message quotes user text at length: {err[:500]}"
    if ok:
        assert code == 0 and not error_lines(err), err
        assert out.exists(), err
    else:
        assert code != 0, err
        assert len(error_lines(err)) == 1, err
        assert not out.exists(), f"{out} left behind"


# -- input builders -------------------------------------------------------------------------------


def good_rows(n: int = 8, seeds: int = 4) -> list[dict]:
    return [{"text": f"text number {i} is here", "label": ("pos" if i % 2 else "neg") if i < seeds else ""}
            for i in range(n)]


def _raw(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def write_jsonl_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def header_only_gguf(path: Path, key: str, value: str) -> Path:
    """A GGUF file whose metadata ``key`` is a string (llama.cpp wants an integer there)."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def nan_tensors_copy(model: Path, path: Path) -> Path:
    """The model with its last 300 kB of tensor data overwritten by 0xFF bytes (float NaN)."""
    data = bytearray(model.read_bytes())
    data[-300_000:] = b"\xff" * 300_000
    path.write_bytes(bytes(data))
    return path


@dataclass
class Setup:
    """One command: its argv, the output path, the input files that must not change, and user
    texts no message may quote whole."""

    argv: list[str]
    out: Path
    inputs: list[Path] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def label(data: Path, tmp: Path, model: Path, *extra: str, labels: str | None = "pos,neg",
          out: str = "out.csv", secrets: list[str] | None = None) -> Setup:
    argv = ["label", str(data), "--models", str(model), *LABEL_ARGS, "-o", str(tmp / out)]
    argv += ([f"--labels={labels}"] if labels is not None else []) + list(extra)
    inputs = [p for p in (data,) if os.path.lexists(p)]
    return Setup(argv, tmp / out, inputs, secrets or [])


def with_config(tmp: Path, model: Path, toml: str, *extra: str, seeds: int = 4) -> Setup:
    cfg = tmp / "cfg.toml"
    cfg.write_text(toml, encoding="utf-8")
    setup = label(write_csv(tmp / "in.csv", good_rows(8, seeds)), tmp, model, "--config", str(cfg), *extra)
    setup.inputs.append(cfg)
    return setup


def annotate(data: Path, tmp: Path, model: Path, out: str, *extra: str, labels: str = "pos,neg") -> Setup:
    argv = ["annotate", str(data), f"--labels={labels}", "--models", str(model), "--chat-format", "chatml",
            "--store", str(tmp / "store.sqlite"), "--out", str(tmp / out), *extra]
    return Setup(argv, tmp / out, [data])


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def symlink_to_dev_zero(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def long_texts(n: int = 6, seeds: int = 2) -> list[dict]:
    return [{"text": f"private text {i} " + "about the patient's diagnosis " * 3,
             "label": ("pos" if i % 2 else "neg") if i < seeds else ""} for i in range(n)]


def five_mb_label_cell(tmp: Path, model: Path) -> Setup:
    rows = good_rows()
    rows[2]["label"] = "secret label " * 400_000 + "end"
    return label(write_csv(tmp / "in.csv", rows), tmp, model, secrets=[rows[2]["label"]])


def labels_file_is_the_input(tmp: Path, model: Path) -> Setup:
    rows = long_texts()
    data = write_csv(tmp / "in.csv", rows)
    return label(data, tmp, model, "--labels-file", str(data), labels=None, secrets=[r["text"] for r in rows])


def headerless_csv(tmp: Path, model: Path) -> Setup:
    rows = long_texts()
    data = tmp / "in.csv"
    data.write_text("".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    return label(data, tmp, model, secrets=[r["text"] for r in rows])


def wide_header(tmp: Path, model: Path, duplicate: bool) -> Setup:
    names = ["col"] * 50_000 if duplicate else [f"column {i}" for i in range(50_000)]
    data = tmp / "wide.csv"
    data.write_text(",".join(names) + "\n" + ",".join("x" for _ in names) + "\n", encoding="utf-8")
    return label(data, tmp, model)


def formula_rows() -> list[dict]:
    texts = ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)", "\tTAB", "\rCR",
             "plain -3.5 text", "-3.5"]
    return [{"text": t, "label": ("=bad" if i % 2 else "@good") if i < 4 else "", "@note": "column name"}
            for i, t in enumerate(texts)]


def check_formulas_guarded(out: Path, data: Path) -> None:
    cells = [cell for row in csv.reader(out.open(encoding="utf-8", newline="")) for cell in row]
    assert all(spreadsheet_safe(cell) == cell for cell in cells), [c for c in cells if spreadsheet_safe(c) != c]
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert rows[0]["text"].startswith("'=HYPERLINK") and rows[7]["text"] == "-3.5"
    assert {r["label"] for r in rows} <= {"'=bad", "'@good"}


def check_formulas_kept(out: Path, data: Path) -> None:
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert rows[0]["text"].startswith("=HYPERLINK") and {r["label"] for r in rows} <= {"=bad", "@good"}


def check_every_row_is_a_seed(out: Path, data: Path) -> None:
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    before = list(csv.DictReader(data.open(encoding="utf-8", newline="")))
    assert [r["label"] for r in rows] == [r["label"] for r in before]
    assert {r["label_source"] for r in rows} == {"seed"}


def check_labels_normalised(out: Path, data: Path) -> None:
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert {r["label"] for r in rows} <= {"café", "pos"}
    assert [r["label_source"] for r in rows[:4]] == ["seed"] * 4


# (name, build(tmp, model) -> Setup, succeeds, words of the error line (or of stderr when it
# succeeds), early: no text encoded and no model loaded before the refusal, output check)
Case = tuple[str, Callable[[Path, Path], Setup], bool, list[str], bool, Callable[[Path, Path], None] | None]
CASES: list[Case] = [
    # -- settings that crashed ----------------------------------------------------------------------
    ("llm.n_threads 100000 (segfault)", lambda t, m: with_config(t, m, "[llm]\nn_threads = 100000\n"), False,
     ["llm.n_threads", "512"], True, None),
    ("al.hidden 1e8 (MemoryError)", lambda t, m: with_config(t, m, "[al]\nhidden = 100000000\n"), False,
     ["al.hidden"], True, None),
    ("al.max_length beyond MiniLM", lambda t, m: with_config(t, m, "[al]\nmax_length = 100000\n"), False,
     ["al.max_length", "512"], True, None),
    ("--seed 2**70 (XGBoostError)", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--seed",
                                                        "1180591620717411303424"), False, ["--seed"], True, None),
    ("llm.temperature inf", lambda t, m: with_config(t, m, "[llm]\ntemperature = inf\n"), False,
     ["llm.temperature"], True, None),
    ("llm.temperature nan", lambda t, m: with_config(t, m, "[llm]\ntemperature = nan\n"), False,
     ["llm.temperature"], True, None),
    ("negative llm.seed", lambda t, m: with_config(t, m, "[llm]\nseed = -1\n"), False, ["llm.seed"], True, None),
    ("llm.seed beyond 32 bits", lambda t, m: with_config(t, m, "[llm]\nseed = 4294967296\n"), False,
     ["llm.seed"], True, None),
    ("seed beyond 32 bits", lambda t, m: with_config(t, m, "seed = 4294967296\n"), False, ["seed"], True, None),
    ("molam.delta a 19-digit integer", lambda t, m: with_config(t, m, "[molam]\ndelta = 9223372036854775807\n"),
     False, ["molam.delta"], True, None),
    ("--threads 100000", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--threads", "100000"),
     False, ["--threads"], True, None),
    # -- input cells that crashed ---------------------------------------------------------------------
    ("JSONL lone surrogate text", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": "fine", "label": "pos"}', '{"text": "\\ud800", "label": ""}'), t, m), False,
     ["line 2", "surrogate"], True, None),
    ("JSONL lone surrogate in another column", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": "a", "note": "x\\udfff"}', '{"text": "b"}'), t, m), False,
     ["line 1", "surrogate"], True, None),
    ("JSONL 100,000 nested [", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": "a"}', '{"text": ' + "[" * 100_000), t, m), False, ["line 2", "deeply"], True, None),
    ("JSONL NaN text", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": "a"}', '{"text": NaN}'), t, m), False, ["line 2", "NaN"], True, None),
    ("JSONL -Infinity text", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": -Infinity}', '{"text": "b"}'), t, m), False, ["line 1", "Infinity"], True, None),
    ("JSONL 1e400 text", lambda t, m: label(write_jsonl_lines(
        t / "in.jsonl", '{"text": "a"}', '{"text": 1e400}'), t, m), False, ["line 2"], True, None),
    ("CSV with surrogate bytes", lambda t, m: label(_raw(t / "in.csv", b"text\nok\n\xed\xa0\x80\n"), t, m), False,
     ["UTF-8", "line 3"], True, None),
    # -- model files that crashed -----------------------------------------------------------------------
    ("GGUF string general.alignment", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        header_only_gguf(t / "a.gguf", "general.alignment", "thirty-two"))), False, ["a.gguf", "corrupt"], True, None),
    ("GGUF string general.file_type", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        header_only_gguf(t / "f.gguf", "general.file_type", "Q4_K_M"))), False, ["f.gguf", "corrupt"], True, None),
    ("GGUF tensor data overwritten", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        nan_tensors_copy(m, t / "nan.gguf"))), False, ["nan.gguf", "non-finite", "corrupt"], False, None),
    # -- shapes that gave "labels must have at least one row and one annotator" -----------------------------
    ("every row a seed", lambda t, m: label(write_csv(t / "in.csv", good_rows(4, 4)), t, m), True,
     ["every row has a seed label"], False, check_every_row_is_a_seed),
    ("every row a seed, enough for MoLAM", lambda t, m: label(write_csv(t / "in.csv", good_rows(12, 12)), t, m),
     True, ["every row has a seed label"], False, check_every_row_is_a_seed),
    ("one-row input", lambda t, m: label(write_csv(t / "in.csv", good_rows(1, 0)), t, m), False,
     ["1 row", "at least 2"], True, None),
    ("one-row input with a seed", lambda t, m: label(write_csv(t / "in.csv", good_rows(1, 1)), t, m), False,
     ["1 row"], True, None),
    ("--llm-sample 0", lambda t, m: label(write_csv(t / "in.csv", good_rows(16, 12)), t, m, "--llm-sample", "0"),
     True, [], False, None),
    # -- misleading messages: folders, pipes, devices, UTF-16 -------------------------------------------
    ("input is a folder", lambda t, m: label((t / "in.csv").mkdir() or t / "in.csv", t, m), False,
     ["is a folder"], True, None),
    ("input is a FIFO", lambda t, m: label(fifo(t / "in.csv"), t, m), False, ["not a regular file"], True, None),
    ("input links to /dev/zero", lambda t, m: label(symlink_to_dev_zero(t / "in.csv"), t, m), False,
     ["not a regular file"], True, None),
    ("model is a folder", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        (t / "dir.gguf").mkdir() or t / "dir.gguf")), False, ["dir.gguf", "is a folder"], True, None),
    ("model is a FIFO", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        fifo(t / "p.gguf"))), False, ["p.gguf", "not a regular file"], True, None),
    ("model links to /dev/zero", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models", str(
        symlink_to_dev_zero(t / "z.gguf"))), False, ["z.gguf", "not a regular file"], True, None),
    ("configuration file is a FIFO", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--config", str(
        fifo(t / "cfg.toml"))), False, ["not a regular file"], True, None),
    ("labels file is a FIFO", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--labels-file", str(
        fifo(t / "labels.txt")), labels=None), False, ["not a regular file"], True, None),
    ("UTF-16 without BOM", lambda t, m: label(_raw(t / "in.csv", "text,label\nhello,pos\nworld,neg\n".encode(
        "utf-16-le")), t, m), False, ["UTF-16", "UTF-8"], True, None),
    ("UTF-16 with BOM", lambda t, m: label(_raw(t / "in.csv", "text,label\nhello,pos\n".encode("utf-16")), t, m),
     False, ["UTF-16"], True, None),
    ("NUL byte in a CSV", lambda t, m: label(_raw(t / "in.csv", b"text\nhel\x00lo\nworld\n"), t, m), False,
     ["NUL", "line 2"], True, None),
    # -- late messages --------------------------------------------------------------------------------
    ("100 labels", lambda t, m: label(write_csv(t / "in.csv", good_rows(8, 0)), t, m,
                                      labels=",".join(f"l{i}" for i in range(100))), True, [], False, None),
    ("300 labels", lambda t, m: label(write_csv(t / "in.csv", good_rows(8, 0)), t, m,
                                      labels=",".join(f"l{i}" for i in range(300))), False,
     ["300 labels", "256"], True, None),
    ("100 labels over llm.n_batch", lambda t, m: with_config(t, m, "[llm]\nn_batch = 64\nn_seq_max = 64\n",
                                                             f"--labels={','.join(f'l{i}' for i in range(100))}",
                                                             seeds=0),
     False, ["llm.n_batch"], True, None),
    ("annotate --out x.xlsx", lambda t, m: annotate(write_csv(t / "in.csv", good_rows()), t, m, "x.xlsx"), False,
     ["xlsx"], True, None),
    ("annotate with 300 labels", lambda t, m: annotate(write_csv(t / "in.csv", good_rows(8, 0)), t, m, "x.csv",
                                                       labels=",".join(f"l{i}" for i in range(300))), False,
     ["300 labels", "256"], True, None),
    ("annotate with labels equal after normalisation", lambda t, m: annotate(
        write_csv(t / "in.csv", good_rows(8, 0)), t, m, "x.csv", labels="caf\u00e9,cafe\u0301"), False,
     ["same label"], True, None),
    ("annotate with one label", lambda t, m: annotate(write_csv(t / "in.csv", good_rows(8, 0)), t, m, "x.csv",
                                                      labels="pos"), False, ["2 labels"], True, None),
    ("50,000 columns", lambda t, m: wide_header(t, m, duplicate=False), False, ["'text'", "more"], True, None),
    ("50,000 duplicate columns", lambda t, m: wide_header(t, m, duplicate=True), False, ["duplicate"], True, None),
    # -- privacy of messages ----------------------------------------------------------------------------
    ("5 MB label cell", five_mb_label_cell, False, ["outside the label set"], True, None),
    ("--labels-file is the input", labels_file_is_the_input, False, [], True, None),
    ("header-less CSV", headerless_csv, False, ["no column 'text'"], True, None),
    ("5 MB label name", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--labels-file", str(
        _raw(t / "labels.txt", b"pos\n" + b"n" * 5_000_000 + b"\n")), labels=None, secrets=["n" * 5_000_000]),
     False, ["characters"], True, None),
    ("unknown model with a long name", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--models",
                                                          "m" * 1000, secrets=["m" * 1000]), False,
     ["unknown model"], True, None),
    ("long text column name", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, "--text-column",
                                                 "c" * 1000, secrets=["c" * 1000]), False, ["no column"], True, None),
    ("control character in a label", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m,
                                                        labels="pos,ne\x1bg"), False, ["control character"], True, None),
    ("labels equal but for a zero-width space", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m,
                                                                   labels="pos,neg,pos\u200b"), False,
     ["same label"], True, None),
    ("labels equal but for NFC/NFD", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m, labels=(
        "caf\u00e9,cafe\u0301,pos")), False, ["same label"], True, None),
    ("label cells NFD and zero-width, label set NFC", lambda t, m: label(write_csv(t / "in.csv", [
        {"text": f"row {i}", "label": ["cafe\u0301", "pos\u200b", "\ufeffcaf\u00e9", " pos "][i] if i < 4 else ""}
        for i in range(8)]), t, m, labels="caf\u00e9,pos"), True, [], False, check_labels_normalised),
    ("formula injection", lambda t, m: label(write_csv(t / "in.csv", formula_rows()), t, m, labels="=bad,@good"),
     True, [], False, check_formulas_guarded),
    ("--keep-formulas", lambda t, m: label(write_csv(t / "in.csv", formula_rows()), t, m, "--keep-formulas",
                                           labels="=bad,@good"), True, [], False, check_formulas_kept),
]
if not HAS_PYARROW:
    CASES += [
        ("-o out.parquet without pyarrow", lambda t, m: label(write_csv(t / "in.csv", good_rows()), t, m,
                                                              out="out.parquet"), False, ["pyarrow"], True, None),
        ("annotate --out x.parquet without pyarrow", lambda t, m: annotate(
            write_csv(t / "in.csv", good_rows()), t, m, "x.parquet"), False, ["pyarrow"], True, None),
    ]


@pytest.fixture
def no_work(monkeypatch):
    """Encoding a text or loading a model fails the test: the case must be refused before."""

    def work(*args, **kwargs):
        raise AssertionError("expensive work started before the input was refused")

    from mollia_edge.label import llm_stages
    from mollia_edge.llm import engine

    monkeypatch.setattr(llm_stages, "encode_texts", work)
    monkeypatch.setattr(engine.LlamaEngine, "__init__", work)


@pytest.mark.parametrize(("name", "build", "ok", "words", "early", "check"), CASES, ids=[c[0] for c in CASES])
def test_hostile_case(tiny_model_path, tmp_path, request, name, build, ok, words, early, check):
    if early:
        request.getfixturevalue("no_work")
    setup = build(tmp_path, tiny_model_path)
    before = snapshot(setup.inputs)
    started = time.perf_counter()
    code, err = run_cli(setup.argv)
    seconds = time.perf_counter() - started
    check_invariants(code, err, ok, setup.out, setup.secrets)
    assert snapshot(setup.inputs) == before, "the input changed"
    shown = err if ok else error_lines(err)[0]
    for word in words:
        assert word in shown, err
    assert len(shown) < 2000 or ok, f"a {len(shown)}-character message"
    if early:
        assert seconds < 10, f"{seconds:.1f} s to refuse"
    if check:
        check(setup.out, setup.inputs[0])


# -- one place for the catch-all --------------------------------------------------------------------
def _raise_internal(*args, **kwargs):
    raise RuntimeError("secret user text inside an internal error")


@pytest.mark.parametrize("command", ["example", "models", "annotate", "bench", "label"])
def test_every_command_turns_an_internal_error_into_one_line(tmp_path, monkeypatch, command):
    from mollia_edge import annotate as annotate_module
    from mollia_edge import cli
    from mollia_edge import label as label_module
    from mollia_edge.bench import quant

    data = write_csv(tmp_path / "in.csv", good_rows())
    argv = {
        "example": ["example", "rotten-tomatoes", "-o", str(tmp_path / "x.csv")],
        "models": ["models"],
        "annotate": ["annotate", str(data), "--labels", "pos,neg", "--store", str(tmp_path / "s.sqlite")],
        "bench": ["bench", "quant", "--models", "x", "--data", str(data), "-o", str(tmp_path / "b")],
        "label": ["label", str(data), "--labels", "pos,neg", "-o", str(tmp_path / "o.csv")],
    }[command]
    monkeypatch.setattr(cli, "load_dataset", _raise_internal)
    monkeypatch.setattr(cli, "load_catalog", _raise_internal)
    monkeypatch.setattr(annotate_module, "annotate_with_models", _raise_internal)
    monkeypatch.setattr(quant, "run_quant_bench", _raise_internal)
    monkeypatch.setattr(label_module, "run_label_job", _raise_internal)
    monkeypatch.delenv("MOLLIA_EDGE_DEBUG", raising=False)
    code, err = run_cli(argv)
    assert code != 0 and "Traceback" not in err and "secret" not in err, err
    assert error_lines(err) == [error_lines(err)[0]] and "internal error (RuntimeError)" in err, err
    monkeypatch.setenv("MOLLIA_EDGE_DEBUG", "1")  # the traceback, for whoever debugs
    with pytest.raises(RuntimeError):
        run_cli(argv)


def test_label_debug_flag_shows_the_internal_error(tmp_path, monkeypatch):
    from mollia_edge import label as label_module

    monkeypatch.setattr(label_module, "run_label_job", _raise_internal)
    data = write_csv(tmp_path / "in.csv", good_rows())
    with pytest.raises(RuntimeError):
        run_cli(["label", str(data), "--labels", "pos,neg", "--debug", "-o", str(tmp_path / "o.csv")])


# -- the segfault, in a process of its own ----------------------------------------------------------
def test_too_many_llama_threads_is_an_error_not_a_segfault(tiny_model_path, tmp_path):
    data = write_csv(tmp_path / "in.csv", good_rows())
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[llm]\nn_threads = 100000\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    argv = ["label", str(data), "--labels", "pos,neg", "--models", str(tiny_model_path), *LABEL_ARGS,
            "--config", str(cfg), "-o", str(out)]
    done = subprocess.run([sys.executable, "-m", "mollia_edge", *argv], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode >= 0, f"killed by signal {-done.returncode}"
    assert done.returncode == 2 and len(error_lines(done.stderr)) == 1, done.stderr
    assert "llm.n_threads" in done.stderr and not out.exists()


# -- property-based: random and hostile tables and label sets -----------------------------------------
CLEAN_LABELS = ["pos", "neg", "=SUM(A1)", "+plus", "@home", "-minus", "caf\u00e9", "na\u00efve", "\u65e5\u672c",
                "emoji \U0001f642", "\u00c4rger"]
"""Label names that must be accepted: formula prefixes and non-ASCII included."""
ODD = ["\u200b", "\ufeff", "\u200e", "\u202e", "e\u0301", "\u2028", "\x85", '"', ",", "\t", "\r\n", "\n", "'",
       "=", "+", "-", "@", "\u0000", "\x1b", " "]


def _decorated(label_name: str, how: int) -> str:
    """The same label as a person may have typed it (normalisation makes them one)."""
    return [label_name, label_name + "\u200b", unicodedata.normalize("NFD", label_name), f"  {label_name} ",
            "\ufeff" + label_name][how]


clean_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40).filter(
    lambda t: t.strip())
hostile_text = st.one_of(
    clean_text,
    st.lists(st.one_of(st.sampled_from(ODD), st.characters(codec="utf-8")), max_size=30).map("".join),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(FORMULA_PREFIXES), st.text(max_size=10)),
    st.sampled_from(["x" * 200_000, "NaN", "", "   ", "\ud800\udc00", "\ud800"]),
)


@st.composite
def tables(draw, valid: bool) -> dict:
    """A table and label set: ``valid`` by construction (hostile content, formula prefixes, odd
    Unicode, huge cells - but acceptable), or anything at all."""
    labels = draw(st.lists(st.sampled_from(CLEAN_LABELS), min_size=2, max_size=4, unique=True))
    n = draw(st.integers(2, 6))
    if valid:
        texts = draw(st.lists(st.one_of(clean_text, st.just("y" * 100_000), st.builds(
            lambda p, t: p + t, st.sampled_from(FORMULA_PREFIXES[:4]), clean_text)), min_size=n, max_size=n))
        cells = [_decorated(draw(st.sampled_from(labels)), draw(st.integers(0, 4))) if draw(st.booleans()) else ""
                 for _ in range(n)]
    else:
        texts = draw(st.lists(hostile_text, min_size=n, max_size=n))
        cells = draw(st.lists(st.one_of(st.sampled_from(labels + ["", "other"]), hostile_text), min_size=n, max_size=n))
        labels = draw(st.one_of(st.just(labels), st.lists(st.one_of(st.sampled_from(CLEAN_LABELS), hostile_text.filter(
            lambda t: "," not in t and len(t) < 1000)), max_size=4)))
    return {"valid": valid, "texts": texts, "cells": cells, "labels": labels,
            "format": draw(st.sampled_from(["csv", "jsonl", "jsonl-raw"]))}


def _write_table(folder: Path, table: dict) -> Path:
    rows = [{"text": t, "label": c} for t, c in zip(table["texts"], table["cells"])]
    if table["format"] == "csv":
        path = folder / "in.csv"
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["text", "label"])  # "\r\n": a bare "\r" in a field is quoted
        writer.writeheader()
        writer.writerows(rows)
        path.write_bytes(buffer.getvalue().encode("utf-8", errors="surrogatepass"))
    else:  # JSONL: lone surrogates written as escapes; "raw": non-ASCII (U+2028...) written as is
        path = folder / "in.jsonl"
        ascii_only = table["format"] == "jsonl" or any("\ud800" <= ch <= "\udfff" for r in rows for ch in r["text"])
        path.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows), encoding="utf-8")
    return path


def _check_output(out: Path, table: dict) -> None:
    cells = [cell for row in csv.reader(out.open(encoding="utf-8", newline="")) for cell in row]
    assert all(spreadsheet_safe(cell) == cell for cell in cells), "a formula reached the output"
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["text"] for r in rows] == [spreadsheet_safe(t) for t in table["texts"]]
    allowed = {spreadsheet_safe(normalise_label(label_name)) for label_name in table["labels"]}
    assert {r["label"] for r in rows} <= allowed


def test_random_tables_and_label_sets_keep_the_invariants(tiny_model_path):
    outcomes: Counter[str] = Counter()

    def check(table: dict) -> None:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            data = _write_table(folder, table)
            out = folder / "out.csv"
            before = snapshot([data])
            argv = ["label", str(data), f"--labels={','.join(table['labels'])}", "--models", str(tiny_model_path),
                    *LABEL_ARGS, "-o", str(out)]
            code, err = run_cli(argv)
            secrets = [t for t in table["texts"] if len(t) > LONG]
            check_invariants(code, err, code == 0 or table["valid"], out, secrets)
            assert snapshot([data]) == before
            if code == 0:
                _check_output(out, table)
            outcome = "accepted" if code == 0 else "refused"
            event(outcome)
            outcomes[outcome] += 1

    examples = settings(max_examples=job_examples(6))
    examples(given(table=tables(valid=True))(check))()  # acceptable by construction: each must succeed
    examples(given(table=tables(valid=False))(check))()  # anything: success or one clean error line
    assert outcomes["accepted"] >= 0.5 * sum(outcomes.values()), outcomes
