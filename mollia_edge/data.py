"""Reading the user's table of texts to label, and writing result tables atomically.

Formats follow the file suffix: ``.csv``, ``.tsv``, ``.jsonl``, and ``.parquet`` when pyarrow
is installed. Every input problem is a :class:`~mollia_edge.errors.DataError` whose one line
says what is wrong and what to do. Rows are numbered from 1, counting data rows only (the
header is not a row; in JSONL, blank lines are not rows).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

READ_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
WRITE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
_SHOW = 5  # how many offending rows or values a message names
Row = dict[str, Any]

csv.field_size_limit(2**31 - 1)  # long documents exceed the default 128 KiB per field


@dataclass(frozen=True)
class TextTable:
    """The validated input: ``texts[i]`` is data row ``row_ids[i]`` of ``source``.

    ``gold[i]`` is that row's label (``None`` where the cell is empty), or ``gold`` is ``None``
    when no label column was asked for. All lists have the same length, at least 1.
    """

    texts: list[str]
    gold: list[str | None] | None
    source: Path
    row_ids: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def text_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text``: the cache key of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_texts(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
) -> TextTable:
    """Read and validate a table of texts; ``labels`` (if given) is the allowed label set."""
    path = Path(path)
    columns, rows = load_table(path)
    return texts_from_rows(path, columns, rows, text_column, label_column, labels)


def load_table(path: str | Path) -> tuple[list[str], list[Row]]:
    """Every column name and data row of a table file (at least one row), not yet validated
    for a text column: what ``read_texts`` reads, for commands that copy all columns out."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix}'; save it as "
            + ", ".join(READ_SUFFIXES)
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path")
    try:
        columns, rows = _read_parquet(path) if suffix == ".parquet" else _read_text_table(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    if not rows:
        what = "a header but no data rows" if columns else "no rows"
        raise DataError(f"{path}: the file has {what}; add the texts to label")
    return columns, rows


def texts_from_rows(
    path: Path,
    columns: Sequence[str],
    rows: Sequence[Row],
    text_column: str = "text",
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
) -> TextTable:
    """Validate rows read by :func:`load_table` into a :class:`TextTable`."""
    wanted = [text_column] + ([label_column] if label_column is not None else [])
    for column in wanted:
        if column not in columns:
            found = ", ".join(repr(c) for c in columns)
            raise DataError(
                f"{path}: no column '{column}' (columns found: {found}); "
                "rename the column or choose another one"
            )

    texts = [_cell(path, row, text_column, i) for i, row in enumerate(rows, start=1)]
    empty = [i for i, text in enumerate(texts, start=1) if not text.strip()]
    if empty:
        raise DataError(
            f"{path}: column '{text_column}' is empty in {_rows(empty)}; "
            "fill in or remove those rows"
        )

    gold = None
    if label_column is not None:
        cells = [_cell(path, row, label_column, i).strip() for i, row in enumerate(rows, start=1)]
        gold = [cell or None for cell in cells]
        if labels is not None:
            _check_labels(path, label_column, gold, labels)
    return TextTable(texts=texts, gold=gold, source=path, row_ids=list(range(1, len(rows) + 1)))


def write_table_atomic(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` as CSV, TSV or JSONL with the given ``columns``, in that order.

    Each row is a dict; a missing key or ``None`` is an empty cell (JSON ``null``) and keys
    outside ``columns`` are left out.

    The table goes to a temporary file in the same folder, is flushed to disk, then renamed
    over ``path``: readers see the old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        _write_parquet_atomic(path, rows, columns)
        return
    if suffix not in WRITE_SUFFIXES:
        raise DataError(
            f"{path}: cannot write '{path.suffix}' files; use " + ", ".join(WRITE_SUFFIXES)
        )
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist; create it first")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            if suffix == ".jsonl":
                for row in rows:
                    record = {column: row.get(column) for column in columns}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                delimiter = "\t" if suffix == ".tsv" else ","
                writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
                writer.writerow(columns)
                for row in rows:
                    values = (row.get(column) for column in columns)
                    writer.writerow(["" if value is None else value for value in values])
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _write_parquet_atomic(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Parquet through pyarrow (if installed), written to a temporary file then renamed."""
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path}: writing Parquet needs pyarrow; run `pip install pyarrow` or write .csv, .tsv or .jsonl")
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist; create it first")
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{column: row.get(column) for column in columns} for row in rows]
    table = pa.Table.from_pylist(records) if records else pa.table({c: [] for c in columns})
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _read_text_table(path: Path) -> tuple[list[str], list[Row]]:
    """Decode a CSV, TSV or JSONL file as UTF-8 (BOM allowed) into column names and rows."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{byte} at offset {exc.start}, line {line}); "
            "re-save the file as UTF-8 (e.g. 'CSV UTF-8' in Excel)"
        ) from None
    if not content.strip():
        raise DataError(f"{path}: the file is empty; add the texts to label")
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(path, content)
    return _parse_delimited(path, content, "\t" if path.suffix.lower() == ".tsv" else ",")


def _parse_delimited(path: Path, content: str, delimiter: str) -> tuple[list[str], list[Row]]:
    """Split CSV/TSV text (quoted fields may hold delimiters and newlines) into rows."""
    try:
        reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
        records = [record for record in reader if record]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed table ({exc}); re-export the file") from None
    header, body = [c.strip() for c in records[0]], records[1:]
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(
            f"{path}: duplicate column names {', '.join(map(repr, duplicates))}; rename them"
        )
    ragged = [i for i, record in enumerate(body, start=1) if len(record) != len(header)]
    if ragged:
        kind = "tab" if delimiter == "\t" else "comma"
        raise DataError(
            f"{path}: {_rows(ragged)}: number of fields differs from the header's "
            f"{len(header)}; put double quotes around fields that contain a {kind}"
        )
    return header, [dict(zip(header, record)) for record in body]


def _parse_jsonl(path: Path, content: str) -> tuple[list[str], list[Row]]:
    """Parse one JSON object per non-blank line; columns are keys in order of first use."""
    columns: dict[str, None] = {}
    rows: list[Row] = []
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {line_no} is not valid JSON ({exc.msg}); fix or remove it"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {line_no} is not a JSON object; write one {{...}} per line"
            )
        columns.update(dict.fromkeys(record))
        rows.append(record)
    return list(columns), rows


def _read_parquet(path: Path) -> tuple[list[str], list[Row]]:
    """Read a Parquet file with pyarrow, if installed."""
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow; run `pip install pyarrow` "
            "or save the table as .csv, .tsv or .jsonl"
        )
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"{path}: cannot read Parquet ({exc}); re-export the file") from None
    return table.column_names, table.to_pylist()


def _cell(path: Path, row: Row, column: str, row_id: int) -> str:
    """One cell as a string; missing and null cells are empty, numbers become text."""
    value = row.get(column)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise DataError(
            f"{path}: row {row_id}, column '{column}' holds a JSON "
            f"{type(value).__name__}, not text; store a string there"
        )
    return str(value)


def _check_labels(
    path: Path, column: str, gold: list[str | None], labels: Sequence[str]
) -> None:
    """Fail naming the first unknown label values (with their rows) and the allowed set."""
    allowed = set(labels)
    unknown: dict[str, list[int]] = {}
    for row_id, value in enumerate(gold, start=1):
        if value is not None and value not in allowed:
            unknown.setdefault(value, []).append(row_id)
    if unknown:
        first = list(unknown.items())[:_SHOW]
        shown = "; ".join(f"{value!r} in {_rows(ids)}" for value, ids in first)
        more = f" and {len(unknown) - _SHOW} more values" if len(unknown) > _SHOW else ""
        raise DataError(
            f"{path}: column '{column}' has labels outside the label set: {shown}{more}; "
            f"allowed: {', '.join(labels)}"
        )


def _rows(ids: list[int]) -> str:
    """'row 3' or 'rows 3, 7, 9 (and 12 more)'."""
    if len(ids) == 1:
        return f"row {ids[0]}"
    shown = ", ".join(map(str, ids[:_SHOW]))
    more = f" (and {len(ids) - _SHOW} more)" if len(ids) > _SHOW else ""
    return f"rows {shown}{more}"
