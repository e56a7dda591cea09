"""Bad input to `mollia-edge label`: one `error:` line and a non-zero exit, or a counted
warning where the job can go on; never a traceback, never a half-written output."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import job_examples, write_csv
from mollia_edge.cli import main
from tiny_gguf import corrupt_copy

GOOD_ROWS = [{"text": f"text number {i}", "label": "pos" if i % 2 else "neg"} for i in range(4)]


def fails_cleanly(capsys, argv: list[str], out: Path, *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err and "internal error" not in err, err  # a crash in one line is still a crash
    lines = [line for line in err.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    assert lines[-1].startswith("error:"), err
    for word in expected:
        assert word in lines[-1], err
    assert not out.exists()
    return lines[-1]


def base(data: Path, out: Path, model: Path, *extra: str, labels: str | None = "pos,neg") -> list[str]:
    argv = ["label", str(data), "--models", str(model), "--chat-format", "chatml", "--classifier", "head", "--quiet", "-o", str(out)]
    return argv + (["--labels", labels] if labels else []) + list(extra)


def _raw(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


# (name, how to build the input in tmp, extra args, label set, words expected in the message)
CASES = [
    ("missing file", lambda t: t / "nope.csv", [], "pos,neg", ["not found"]),
    ("empty file", lambda t: _raw(t, "e.csv", b""), [], "pos,neg", ["empty"]),
    ("blank file", lambda t: _raw(t, "b.csv", b"  \n\n"), [], "pos,neg", ["empty"]),
    ("header only", lambda t: _raw(t, "h.csv", b"text,label\n"), [], "pos,neg", ["no data rows"]),
    ("missing text column", lambda t: write_csv(t / "m.csv", [{"body": "x"}]), [], "pos,neg", ["'text'"]),
    ("missing label column", lambda t: write_csv(t / "l.csv", GOOD_ROWS), ["--label-column", "gold"], "pos,neg",
     ["'gold'"]),
    ("ambiguous column", lambda t: _raw(t, "a.csv", b"text,text\nx,y\n"), [], "pos,neg", ["duplicate column"]),
    ("undecodable bytes", lambda t: _raw(t, "u.csv", "text\ncaf\u00e9\n".encode("latin-1")), [], "pos,neg",
     ["UTF-8"]),
    ("ragged rows", lambda t: _raw(t, "r.csv", b"text,label\na,pos\nb,neg,extra\n"), [], "pos,neg", ["row 2"]),
    ("empty text", lambda t: _raw(t, "t.csv", b"text,label\nhello,pos\n ,neg\n"), [], "pos,neg", ["empty"]),
    ("label outside the set", lambda t: write_csv(t / "o.csv", [{"text": "x", "label": "zebra"}]), [], "pos,neg",
     ["zebra"]),
    ("unsupported input type", lambda t: _raw(t, "in.xlsx", b"x"), [], "pos,neg", ["unsupported"]),
    ("input is a folder", lambda t: (t / "dir.csv").mkdir() or t / "dir.csv", [], "pos,neg", ["is a folder"]),
    ("bad JSON line", lambda t: _raw(t, "j.jsonl", b'{"text": "a"}\n{oops\n'), [], "pos,neg", ["line 2"]),
    ("JSON line not an object", lambda t: _raw(t, "k.jsonl", b'["a"]\n'), [], "pos,neg", ["JSON object"]),
    ("JSON text is a list", lambda t: _raw(t, "l.jsonl", b'{"text": ["a"]}\n'), [], "pos,neg", ["list"]),
    ("TSV ragged", lambda t: _raw(t, "r.tsv", b"text\tlabel\na\tpos\tx\n"), [], "pos,neg", ["tab"]),
    ("duplicate labels", lambda t: write_csv(t / "d.csv", GOOD_ROWS), [], "pos,pos", ["twice"]),
    ("one label", lambda t: write_csv(t / "o1.csv", GOOD_ROWS), [], "pos", ["at least two"]),
    ("empty label name", lambda t: write_csv(t / "e1.csv", GOOD_ROWS), [], "pos,,neg", ["empty"]),
    ("no label set at all", lambda t: write_csv(t / "n.csv", [{"text": "a"}]), [], None, ["--labels"]),
    ("label column with one value", lambda t: write_csv(t / "v.csv", [{"text": "a", "label": "x"}]), [], None,
     ["distinct"]),
    ("text column is the label column", lambda t: write_csv(t / "s.csv", GOOD_ROWS), ["--text-column", "label"],
     "pos,neg", ["both"]),
    ("bad --rounds", lambda t: write_csv(t / "r1.csv", GOOD_ROWS), ["--rounds", "-1"], "pos,neg", ["--rounds"]),
    ("bad --batch", lambda t: write_csv(t / "b1.csv", GOOD_ROWS), ["--batch", "0"], "pos,neg", ["--batch"]),
    ("bad --seed", lambda t: write_csv(t / "s1.csv", GOOD_ROWS), ["--seed", "-3"], "pos,neg", ["--seed"]),
    ("bad --llm-sample", lambda t: write_csv(t / "s2.csv", GOOD_ROWS), ["--llm-sample", "-1"], "pos,neg",
     ["sample"]),
    ("bad --review-threshold", lambda t: write_csv(t / "s3.csv", GOOD_ROWS), ["--review-threshold", "2"],
     "pos,neg", ["threshold"]),
    ("bad --threads", lambda t: write_csv(t / "s4.csv", GOOD_ROWS), ["--threads", "0"], "pos,neg", ["--threads"]),
    ("unknown strategy", lambda t: write_csv(t / "s5.csv", GOOD_ROWS), ["--strategy", "psychic"], "pos,neg",
     ["psychic"]),
    ("strict without enough seeds", lambda t: write_csv(t / "s6.csv", GOOD_ROWS), ["--strict"], "pos,neg",
     ["seed"]),
    ("strict with a class without seeds", lambda t: write_csv(t / "s7.csv", GOOD_ROWS * 20), ["--strict"],
     "pos,neg,meh", ["'meh'"]),
    ("missing configuration file", lambda t: write_csv(t / "c.csv", GOOD_ROWS), ["--config", "/nonexistent.toml"],
     "pos,neg", ["not found"]),
    ("bad configuration value", lambda t: (_raw(t, "bad.toml", b"[al]\nrounds = 0\n"), write_csv(t / "c2.csv", GOOD_ROWS))[1],
     ["--config", "CFG"], "pos,neg", ["al.rounds"]),
]


@pytest.mark.parametrize(("name", "make", "extra", "labels", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_line(tiny_model_path, tmp_path, capsys, name, make, extra, labels, expected):
    data = make(tmp_path)
    extra = [str(tmp_path / "bad.toml") if e == "CFG" else e for e in extra]
    out = tmp_path / "out.csv"
    fails_cleanly(capsys, base(data, out, tiny_model_path, *extra, labels=labels), out, *expected)


def test_output_in_a_missing_folder(tiny_model_path, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    out = tmp_path / "no" / "such" / "out.csv"
    fails_cleanly(capsys, base(data, out, tiny_model_path), out, "does not exist")


def test_output_of_an_unwritable_type(tiny_model_path, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    out = tmp_path / "out.xlsx"
    fails_cleanly(capsys, base(data, out, tiny_model_path), out, "xlsx")


def test_output_over_the_input(tiny_model_path, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    code = main(base(data, data, tiny_model_path))
    err = capsys.readouterr().err
    assert code != 0 and err.count("error:") == 1 and "overwrite the input" in err and "Traceback" not in err
    assert data.read_text(encoding="utf-8").startswith("text,label")


@pytest.mark.parametrize("model", ["no-such-model", "/nonexistent/model.gguf"])
def test_unknown_model(tmp_path, capsys, model):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    out = tmp_path / "out.csv"
    fails_cleanly(capsys, base(data, out, Path(model)), out, "model")


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_corrupt_model(tiny_model_path, tmp_path, capsys, how):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    broken = corrupt_copy(tiny_model_path, tmp_path / "broken.gguf", how)
    out = tmp_path / "out.csv"
    fails_cleanly(capsys, base(data, out, broken), out, "broken.gguf")


def test_missing_labels_file(tiny_model_path, tmp_path, capsys):
    data = write_csv(tmp_path / "in.csv", GOOD_ROWS)
    out = tmp_path / "out.csv"
    argv = base(data, out, tiny_model_path, "--labels-file", str(tmp_path / "labels.txt"), labels=None)
    fails_cleanly(capsys, argv, out, "labels file")


def test_warnings_are_counted_and_the_job_goes_on(tiny_model_path, tmp_path, capsys):
    rows = [{"text": f"same text {i % 10}", "label": ""} for i in range(30)]
    rows[0]["label"], rows[1]["label"] = "pos", "neg"
    data = write_csv(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    argv = base(data, out, tiny_model_path, "--rounds", "1", "--batch", "4", "--llm-sample", "6")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err
    assert "warning: 20 row(s) repeat an earlier row's text" in err
    assert "warning: only 2 seed label(s)" in err and "seedless" in err
    assert "same text" not in err  # no input text in logs
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 30


# -- property-based: whatever the bytes, never a traceback ----------------------------------------
_CSVISH = st.lists(
    st.sampled_from(["text", "label", ",", "\n", '"', "\t", "pos", "neg", " ", "\x00", "é", "\r\n", "{", "}", ":"]),
    max_size=40,
).map("".join)
_ROWS = st.lists(st.sampled_from(["a text", "another one", "pos", "neg", "=1+1", "é", '"q,uoted"']), min_size=2,
                 max_size=5)


def _one_line_or_success(argv: list[str], out: Path) -> bool:
    """``mollia-edge ARGV`` succeeds (the output is written), or exits non-zero with exactly one
    ``error:`` line and no output; never a traceback, never an internal error. True: it succeeded."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text and "internal error" not in text, text
    if code == 0:
        assert out.exists() and "error:" not in text, text
        return True
    assert len([line for line in text.splitlines() if line.startswith("error:")]) == 1, text
    assert not out.exists()
    return False


def _label_argv(data: Path, out: Path, model: Path, labels: str) -> list[str]:
    # the --opt=value form: a value starting with "-" would otherwise read as an option
    return ["label", str(data), f"--labels={labels}", "--models", str(model), "--chat-format", "chatml", "--classifier", "head", "--quiet",
            "--rounds", "1", "--batch", "2", "--llm-sample", "4", "-o", str(out)]


def test_malformed_files_never_crash(tiny_model_path):
    accepted = []

    @settings(max_examples=job_examples(30))
    @given(content=st.one_of(st.binary(max_size=200), _CSVISH.map(lambda s: s.encode("utf-8")),
                             _ROWS.map(lambda rows: ("text\n" + "\n".join(rows) + "\n").encode("utf-8"))),
           suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
    def run(content, suffix):
        with tempfile.TemporaryDirectory() as folder:
            data = Path(folder) / f"in{suffix}"
            data.write_bytes(content)
            out = Path(folder) / "out.csv"
            accepted.append(_one_line_or_success(_label_argv(data, out, tiny_model_path, "pos,neg"), out))
            assert data.read_bytes() == content

    run()
    assert any(accepted), "no generated file was accepted: the property never reached the job"


def test_any_label_list_is_accepted_or_refused_in_one_line(tiny_model_path):
    accepted = []

    @settings(max_examples=job_examples(25))
    @given(labels=st.one_of(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=6), max_size=4),
                            st.lists(st.sampled_from(["pos", "neg", "=x", "@y", "-z", "caf\u00e9"]), min_size=2,
                                     max_size=4, unique=True)))
    def run(labels):
        with tempfile.TemporaryDirectory() as folder:
            data = Path(folder) / "in.jsonl"
            data.write_text("".join(json.dumps({"text": f"t{i}", "label": ""}) + "\n" for i in range(3)),
                            encoding="utf-8")
            out = Path(folder) / "out.csv"
            accepted.append(_one_line_or_success(_label_argv(data, out, tiny_model_path, ",".join(labels)), out))

    run()
    assert any(accepted), "no generated label set was accepted: the property never reached the job"
