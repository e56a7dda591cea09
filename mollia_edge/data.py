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
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, DataError, quoted, quoted_list
from .files import atomic_write, atomic_write_from, regular_file_problem

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


# ---------------------------------------------------------------------------- output checks
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet cell a formula (OWASP, CSV injection)."""
_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a spreadsheet shows it without running it: a string starting with ``=``,
    ``+``, ``-``, ``@``, tab or carriage return gets a leading single quote, unless it is a
    plain number such as ``-3.5``; every other value is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class _LineFeedRows:
    """The stream a ``csv.writer`` with ``lineterminator="\\r\\n"`` writes to, each row then
    ending in "\\n": with "\\n" alone Python 3.11 leaves a field holding a bare "\\r"
    unquoted, and a reader splits the row there."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, row: str) -> int:
        return self.out.write(row[:-2] + "\n" if row.endswith("\r\n") else row)


def check_writable_format(path: str | Path) -> None:
    """A :class:`DataError` now if a table cannot be written in ``path``'s format (its suffix,
    or Parquet without pyarrow): call it before the long work, not after."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise DataError(f"{path}: cannot write {quoted(path.suffix)} files; use " + ", ".join(WRITE_SUFFIXES))
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path}: writing Parquet needs pyarrow; run `pip install pyarrow` or write .csv, .tsv or .jsonl")


# ---------------------------------------------------------------------------- label names
LABEL_MAX_CHARS = 100
"""Label names are short: they go into every prompt, once per label."""


def normalise_label(name: str) -> str:
    """A label name or label cell as it is compared and written: Unicode NFC, invisible format
    characters (zero-width space, BOM, direction marks...) removed, outer whitespace stripped."""
    if name.isascii():
        return name.strip()
    text = unicodedata.normalize("NFC", name)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()


def check_label_set(names: Iterable[str]) -> tuple[str, ...]:
    """The label names, normalised (:func:`normalise_label`), in order; a :class:`ConfigError`
    for an empty, overlong or control-character name, or two names that are one after
    normalisation."""
    given = list(names)
    labels = tuple(normalise_label(name) for name in given)
    if any(not label for label in labels):
        raise ConfigError("a label name is empty: list the labels as --labels a,b,c")
    for label in labels:
        if len(label) > LABEL_MAX_CHARS:
            raise ConfigError(
                f"label name {quoted(label)} has {len(label):,} characters; "
                f"label names are short (at most {LABEL_MAX_CHARS})"
            )
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in label):
            raise ConfigError(
                f"label name {quoted(label)} holds a control character or a lone surrogate; use plain names"
            )
    first: dict[str, str] = {}
    for name, label in zip(given, labels):
        if label in first and first[label] == name:
            raise ConfigError(f"label {quoted(label)} is listed twice in the label set; list it once")
        if label in first:
            a, b = (n.encode("ascii", "backslashreplace").decode() for n in (first[label], name))  # show the difference
            raise ConfigError(
                f"labels {quoted(a)} and {quoted(b)} are the same label after Unicode "
                "normalisation (NFC, invisible characters removed); list it once"
            )
        first[label] = name
    return labels


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
    _check_regular_file(path)
    try:
        columns, rows = _read_parquet(path) if suffix == ".parquet" else _read_text_table(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    if not rows:
        what = "a header but no data rows" if columns else "no rows"
        raise DataError(f"{path}: the file has {what}; add the texts to label")
    return columns, rows


def _check_regular_file(path: Path) -> None:
    """A :class:`DataError` unless ``path`` is a regular file (never opens it: a pipe would block)."""
    problem = regular_file_problem(path)
    if problem is not None:
        advice = {"not found": "check the path", "is a folder": "give the table file inside it"}
        raise DataError(f"{path}: {'file not found' if problem == 'not found' else problem}; "
                        + advice.get(problem, "save the table to a file first"))


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
            raise DataError(
                f"{path}: no column {quoted(column)} (columns found: {quoted_list(columns)}); "
                "rename the column or choose another one"
            )

    texts = [_cell(path, row, text_column, i) for i, row in enumerate(rows, start=1)]
    empty = [i for i, text in enumerate(texts, start=1) if not text.strip()]
    if empty:
        raise DataError(
            f"{path}: column {quoted(text_column)} is empty in {_rows(empty)}; "
            "fill in or remove those rows"
        )

    gold = None
    if label_column is not None:
        cells = [normalise_label(_cell(path, row, label_column, i)) for i, row in enumerate(rows, start=1)]
        gold = [cell or None for cell in cells]
        if labels is not None:
            _check_labels(path, label_column, gold, labels)
    return TextTable(texts=texts, gold=gold, source=path, row_ids=list(range(1, len(rows) + 1)))


def write_table_atomic(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str], formula_guard: bool = True
) -> None:
    """Write ``rows`` as CSV, TSV or JSONL with the given ``columns``, in that order.

    With ``formula_guard`` (the default), CSV and TSV cells that a spreadsheet would run as a
    formula are written through :func:`spreadsheet_safe`.

    Each row is a dict; a missing key or ``None`` is an empty cell (JSON ``null``) and keys
    outside ``columns`` are left out.

    The table goes to a temporary file in the same folder, is flushed to disk, then renamed
    over ``path``: readers see the old file or the whole new one, never a half-written one.
    The file is readable by the user only (mode 0600): it holds the user's texts.
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

    def write(binary: IO[bytes]) -> None:
        out = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        if suffix == ".jsonl":
            for row in rows:
                record = {column: row.get(column) for column in columns}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            delimiter = "\t" if suffix == ".tsv" else ","
            writer = csv.writer(_LineFeedRows(out), delimiter=delimiter, lineterminator="\r\n")
            guard = spreadsheet_safe if formula_guard else (lambda value: value)
            writer.writerow([guard(column) for column in columns])
            for row in rows:
                values = (row.get(column) for column in columns)
                writer.writerow(["" if value is None else guard(value) for value in values])
        out.flush()
        out.detach()

    atomic_write(path, write)


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
    atomic_write_from(path, lambda tmp: pq.write_table(table, tmp))


def _read_text_table(path: Path) -> tuple[list[str], list[Row]]:
    """Decode a CSV, TSV or JSONL file as UTF-8 (BOM allowed) into column names and rows."""
    raw = path.read_bytes()
    _check_not_utf16(path, raw)
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


def _check_not_utf16(path: Path, raw: bytes) -> None:
    """A :class:`DataError` for UTF-16 (or UTF-32) text, with or without a byte-order mark, and
    for any NUL byte: no UTF-8 text table holds one."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); re-save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul < 0:
        return
    head = raw[:4096]
    if head.count(0) * 8 >= len(head):
        raise DataError(f"{path}: the file looks like UTF-16 (NUL bytes between the characters); re-save it as UTF-8")
    line = raw.count(b"\n", 0, nul) + 1
    raise DataError(f"{path}: NUL byte at offset {nul}, line {line}: not a text table; re-save it as UTF-8 text")


def _parse_delimited(path: Path, content: str, delimiter: str) -> tuple[list[str], list[Row]]:
    """Split CSV/TSV text (quoted fields may hold delimiters and newlines) into rows."""
    try:
        reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
        records = [record for record in reader if record]
    except csv.Error as exc:
        raise DataError(f"{path}: malformed table ({exc}); re-export the file") from None
    header, body = [c.strip() for c in records[0]], records[1:]
    duplicates = sorted(c for c, n in Counter(header).items() if n > 1)
    if duplicates:
        raise DataError(f"{path}: duplicate column names {quoted_list(duplicates)}; rename them")
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
    for line_no, line in enumerate(content.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        record = _json_line(path, line, line_no)
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {line_no} is not a JSON object; write one {{...}} per line"
            )
        if _SURROGATE_ESCAPE.search(line) and not _utf8_encodable(record):
            raise DataError(
                f"{path}: line {line_no} holds a lone surrogate escape (\\ud800-\\udfff), which is no "
                "character; fix or remove it"
            )
        columns.update(dict.fromkeys(record))
        rows.append(record)
    return list(columns), rows


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _NonFinite(ValueError):
    """NaN or Infinity in a JSON line: Python's json reads them, JSON has no such values."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


class _HugeInteger(ValueError):
    """An integer too long for Python to turn into a number (or back into text)."""


MAX_INTEGER_DIGITS = 4000
"""Digits of a JSON integer at most (Python refuses to convert more than 4,300)."""


def _integer(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS:
        raise _HugeInteger(text)
    return int(text)


def _json_line(path: Path, line: str, line_no: int) -> Any:
    """One JSONL line parsed; a :class:`DataError` naming the line if it is not strict JSON."""
    try:
        return json.loads(line, parse_float=_finite_float, parse_int=_integer, parse_constant=_no_constant)
    except _HugeInteger as exc:
        raise DataError(
            f"{path}: line {line_no} holds an integer of {len(str(exc)):,} digits, too long to read as a number; "
            "write it as a string (in quotes)"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {line_no} is not valid JSON ({exc.msg}); fix or remove it") from None
    except _NonFinite:
        raise DataError(
            f"{path}: line {line_no} holds NaN or Infinity, which is not a JSON value; "
            'write it as a string ("NaN") or leave the key out'
        ) from None
    except RecursionError:
        raise DataError(
            f"{path}: line {line_no} nests arrays or objects too deeply to read; store the text as a string"
        ) from None


def _utf8_encodable(value: Any) -> bool:
    """Whether every string in ``value`` (keys and nested values too) can be written as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


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
        rows = table.to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        problem = quoted(str(exc), 200, quote=False)
        raise DataError(f"{path}: cannot read Parquet ({problem}); re-export the file") from None
    bad = [i for i, row in enumerate(rows, start=1) if not _utf8_encodable(row)]
    if bad:
        raise DataError(f"{path}: {_rows(bad)} hold text that is not valid Unicode; re-export the file")
    return table.column_names, rows


def _cell(path: Path, row: Row, column: str, row_id: int) -> str:
    """One cell as a string; missing and null cells are empty, numbers become text."""
    value = row.get(column)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise DataError(
            f"{path}: row {row_id}, column {quoted(column)} holds a JSON "
            f"{type(value).__name__}, not text; store a string there"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{path}: row {row_id}, column {quoted(column)} holds {value}, not text; store a string there")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{path}: row {row_id}, column {quoted(column)} holds a character that cannot be written as "
            "UTF-8 (a lone surrogate); fix the row"
        ) from None
    return text


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
        shown = "; ".join(f"{quoted(value)} in {_rows(ids)}" for value, ids in first)
        more = f" and {len(unknown) - _SHOW} more values" if len(unknown) > _SHOW else ""
        raise DataError(
            f"{path}: column {quoted(column)} has labels outside the label set: {shown}{more}; "
            f"allowed: {quoted_list(labels, quote=False)}"
        )


def _rows(ids: list[int]) -> str:
    """'row 3' or 'rows 3, 7, 9 (and 12 more)'."""
    if len(ids) == 1:
        return f"row {ids[0]}"
    shown = ", ".join(map(str, ids[:_SHOW]))
    more = f" (and {len(ids) - _SHOW} more)" if len(ids) > _SHOW else ""
    return f"rows {shown}{more}"
