"""Reading and validating input tables; atomic writing; text hashes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

from mollia_edge import data, files
from mollia_edge.data import read_texts, text_sha256, write_table_atomic
from mollia_edge.errors import DataError


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- reading -------------------------------------------------------------------------------


def test_reads_csv_with_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.csv", "id,text,label\n1,good film,positive\n2,bad film,\n")
    table = read_texts(path, label_column="label", labels=["negative", "positive"])
    assert table.texts == ["good film", "bad film"]
    assert table.gold == ["positive", None]
    assert table.row_ids == [1, 2]
    assert table.source == path
    assert len(table) == 2


def test_no_label_column_gives_no_gold(tmp_path: Path) -> None:
    table = read_texts(_write(tmp_path / "in.csv", "text\nhello\n"))
    assert table.gold is None


def test_bom_and_embedded_newlines_and_crlf(tmp_path: Path) -> None:
    content = '\ufefftext,label\r\n"line one\nline two, with comma",a\r\n"say ""hi""",b\r\n'
    table = read_texts(_write(tmp_path / "in.csv", content), label_column="label")
    assert table.texts == ["line one\nline two, with comma", 'say "hi"']
    assert table.gold == ["a", "b"]


def test_reads_tsv(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.tsv", 'text\tlabel\nhas, commas\tx\n"tab\there"\ty\n')
    table = read_texts(path, label_column="label")
    assert table.texts == ["has, commas", "tab\there"]
    assert table.gold == ["x", "y"]


def test_reads_jsonl(tmp_path: Path) -> None:
    lines = ['{"text": "a", "label": 1}', "", '{"text": "b"}', '{"text": "ü", "label": null}']
    table = read_texts(_write(tmp_path / "in.jsonl", "\n".join(lines)), label_column="label")
    assert table.texts == ["a", "b", "ü"]
    assert table.gold == ["1", None, None]
    assert table.row_ids == [1, 2, 3]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_texts(tmp_path / "nope.csv")


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'.*\.csv"):
        read_texts(_write(tmp_path / "in.xlsx", "x"))


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl"])
@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(DataError, match="file is empty"):
        read_texts(_write(tmp_path / name, content))


def test_header_without_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="header but no data rows"):
        read_texts(_write(tmp_path / "in.csv", "text,label\n"))


def test_not_utf8_names_offset_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.csv", b"text\nok\ncaf\xe9\n")
    with pytest.raises(DataError) as err:
        read_texts(path)
    message = str(err.value)
    assert "not UTF-8" in message
    assert "0xe9 at offset 11" in message
    assert "line 3" in message
    assert "re-save" in message and "UTF-8" in message


def test_missing_text_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.csv", "review,stars\nnice,5\n")
    with pytest.raises(DataError, match=r"no column 'text' \(columns found: 'review', 'stars'\)"):
        read_texts(path)


def test_missing_label_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError, match=r"no column 'gold' \(columns found: 'text'\)"):
        read_texts(path, label_column="gold")


def test_empty_text_cells_name_rows(tmp_path: Path) -> None:
    rows = "".join(f"{'' if i in (2, 4) else 'x'},{i}\n" for i in range(1, 6))
    with pytest.raises(DataError, match=r"column 'text' is empty in rows 2, 4; fill in"):
        read_texts(_write(tmp_path / "in.csv", "text,n\n" + rows))


def test_many_empty_cells_are_summarised(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", '{"text": " "}\n' * 8)
    with pytest.raises(DataError, match=r"rows 1, 2, 3, 4, 5 \(and 3 more\)"):
        read_texts(path)


def test_unknown_labels_named_with_allowed_set(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "in.csv", "text,label\na,positive\nb,Positive\nc,neutral\nd,Positive\n"
    )
    with pytest.raises(DataError) as err:
        read_texts(path, label_column="label", labels=["negative", "positive"])
    message = str(err.value)
    assert "'Positive' in rows 2, 4" in message
    assert "'neutral' in row 3" in message
    assert "allowed: negative, positive" in message


def test_ragged_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.csv", "text,label\nfine,a\nhello, world,b\n")
    message = r"row 2: number of fields differs from the header's 2; put double quotes.*comma"
    with pytest.raises(DataError, match=message):
        read_texts(path)


def test_duplicate_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate column names 'text'"):
        read_texts(_write(tmp_path / "in.csv", "text,text\na,b\n"))


def test_bad_jsonl_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_texts(_write(tmp_path / "in.jsonl", '{"text": "a"}\n{"text": \n'))
    with pytest.raises(DataError, match="line 1 is not a JSON object"):
        read_texts(_write(tmp_path / "in.jsonl", '["a"]\n'))
    with pytest.raises(DataError, match="row 1, column 'text' holds a JSON list"):
        read_texts(_write(tmp_path / "in.jsonl", '{"text": ["a"]}\n'))


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        data.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a),
    )
    with pytest.raises(DataError, match=r"Parquet needs pyarrow; run `pip install pyarrow`"):
        read_texts(_write(tmp_path / "in.parquet", b"PAR1"))


def test_reads_parquet(tmp_path: Path) -> None:
    import pyarrow as pa  # a dependency: this test runs wherever the README's set-up ran
    import pyarrow.parquet as pq
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", None]}), path)
    table = read_texts(path, label_column="label")
    assert table.texts == ["a", "b"]
    assert table.gold == ["x", None]


# --- writing -------------------------------------------------------------------------------

ROWS = [
    {"id": 1, "text": 'multi\nline, "quoted"\ttabbed', "label": "positive"},
    {"id": 2, "text": "ünïcode ✓", "label": None},
]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_write_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    write_table_atomic(path, ROWS, ["id", "text", "label"])
    table = read_texts(path, label_column="label")
    assert table.texts == [row["text"] for row in ROWS]
    assert table.gold == ["positive", None]
    assert os.listdir(tmp_path) == [path.name]


def test_write_jsonl_keeps_types(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_table_atomic(path, ROWS, ["id", "label"])
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records == [{"id": 1, "label": "positive"}, {"id": 2, "label": None}]


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_table_atomic(path, ROWS, ["text"])
    write_table_atomic(path, ROWS[:1], ["text"])
    assert read_texts(path).texts == [ROWS[0]["text"]]


def _rows_then_crash():
    yield ROWS[0]
    raise RuntimeError("crash while writing")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_crash_mid_write_leaves_nothing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    with pytest.raises(RuntimeError, match="crash while writing"):
        write_table_atomic(path, _rows_then_crash(), ["text"])
    assert os.listdir(tmp_path) == []


def test_crash_before_rename_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.csv"
    write_table_atomic(path, ROWS, ["text"])
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(DataError, match="cannot write .*disk full"):  # one line for the user, not a crash
        write_table_atomic(path, ROWS[:1], ["text"])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_write_rejects_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot write '\.xlsx'"):
        write_table_atomic(tmp_path / "out.xlsx", ROWS, ["text"])
    with pytest.raises(DataError, match="does not exist; create it"):
        write_table_atomic(tmp_path / "missing" / "out.csv", ROWS, ["text"])


# --- hashing -------------------------------------------------------------------------------


def test_text_sha256() -> None:
    assert text_sha256("héllo") == hashlib.sha256("héllo".encode("utf-8")).hexdigest()
    assert text_sha256("a") != text_sha256("a ")
    assert len(text_sha256("")) == 64
