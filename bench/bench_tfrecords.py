"""Examples/second writing TFRecords: bert_tf's in-graph path vs Hugging Face tokenizers + a Python tf.train.Example writer.

    .venv/bin/python bench/bench_tfrecords.py            # SST-2 train, 67,349 rows, max_seq_length 128
    .venv/bin/python bench/bench_tfrecords.py --rows 5000

Both runs are timed end to end in one process, from reading the TSV to the records being on disk (TensorFlow's
import is outside both timings): ours is `create_tfrecords.create_tfrecords` (read + check the table, tokenize
and pack with tensorflow-text, serialize with tf.io.encode_proto); the peer reads the TSV with pandas, encodes
with `tokenizers.BertWordPieceTokenizer.encode_batch` (truncation + padding to max_seq_length) and writes one
`tf.train.Example` per row with `tf.io.TFRecordWriter`. Afterwards the two files are checked to hold the same ids.
The last line printed is one JSON object with both rates and their ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

from shared_data import REPO, SHARED, copy_first_rows, default_encoder_dir

sys.path.insert(0, REPO)
DEFAULT_DATA = os.path.join(SHARED, "sst2", "train.tsv")


def run_ours(path: str, vocab_file: str, max_seq_length: int, output_dir: str) -> int:
    from bert_tf import create_tfrecords, tables

    table = tables.read_text_table(path, "sentence", ["label"])
    metadata = create_tfrecords.create_tfrecords({"train": table}, "auto", output_dir, max_seq_length, 10**9,
                                                 vocab_file=vocab_file, do_lower_case=True, text_column="sentence")
    return metadata.train_data_size


def run_hf_python(path: str, vocab_file: str, max_seq_length: int, output_file: str) -> int:
    import pandas as pd
    import tensorflow as tf
    from tokenizers import BertWordPieceTokenizer

    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    texts = frame["sentence"].tolist()
    names = sorted(set(frame["label"]))
    labels = [names.index(label) for label in frame["label"]]
    tokenizer = BertWordPieceTokenizer(vocab_file, lowercase=True)
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.enable_padding(length=max_seq_length, pad_id=0)

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    written = 0
    with tf.io.TFRecordWriter(output_file) as writer:
        for start in range(0, len(texts), 1024):
            for i, encoding in enumerate(tokenizer.encode_batch(texts[start : start + 1024]), start):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "input_ids": ints(encoding.ids),
                    "input_mask": ints(encoding.attention_mask),
                    "segment_ids": ints(encoding.type_ids),
                    "label_ids": ints([labels[i]]),
                    "is_real_example": ints([1]),
                    "example_id": ints([i]),
                    "weight": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])),
                }))
                writer.write(example.SerializeToString())
                written += 1
    return written


def same_records(ours_dir: str, peer_file: str, max_seq_length: int) -> bool:
    import tensorflow as tf

    from bert_tf import records

    spec = {name: tf.io.FixedLenFeature([max_seq_length], tf.int64) for name in records.SEQUENCE_FEATURES}
    spec["label_ids"] = tf.io.FixedLenFeature([], tf.int64)
    files = [records.split_files(ours_dir, "train"), [peer_file]]
    datasets = [tf.data.TFRecordDataset(f).batch(4096).map(lambda s: tf.io.parse_example(s, spec)) for f in files]
    for a, b in zip(*datasets):
        if any(not bool(tf.reduce_all(a[name] == b[name])) for name in spec):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="use only the first N rows (a quick run)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="TSV with sentence and label columns (SST-2 layout)")
    parser.add_argument("--vocab_file", default=None, help="WordPiece vocab (default: all-MiniLM-L6-v2's, uncased)")
    parser.add_argument("--max_seq_length", type=int, default=128)
    args = parser.parse_args()
    vocab_file = args.vocab_file or os.path.join(default_encoder_dir(), "vocab.txt")

    import tensorflow as tf  # noqa: F401  (imported before the clocks start, for both runs)

    with tempfile.TemporaryDirectory(prefix="bench_tfrecords-") as tmp:
        path = args.data
        if args.rows is not None:
            path = os.path.join(tmp, "input.tsv")
            copy_first_rows(args.data, path, args.rows)

        started = time.perf_counter()
        ours_rows = run_ours(path, vocab_file, args.max_seq_length, os.path.join(tmp, "ours"))
        ours_seconds = time.perf_counter() - started

        started = time.perf_counter()
        peer_rows = run_hf_python(path, vocab_file, args.max_seq_length, os.path.join(tmp, "hf.tf_record"))
        peer_seconds = time.perf_counter() - started

        assert ours_rows == peer_rows, (ours_rows, peer_rows)
        identical = same_records(os.path.join(tmp, "ours"), os.path.join(tmp, "hf.tf_record"), args.max_seq_length)

    ours_rate, peer_rate = ours_rows / ours_seconds, peer_rows / peer_seconds
    print(f"rows: {ours_rows}, max_seq_length: {args.max_seq_length}, same ids/masks/segments/labels: {identical}")
    print(f"bert_tf create_tfrecords:          {ours_rate:10,.0f} examples/s ({ours_seconds:.1f} s)")
    print(f"HF tokenizers + Python tf.Example: {peer_rate:10,.0f} examples/s ({peer_seconds:.1f} s)")
    print(f"ours / HF+Python: {ours_rate / peer_rate:.2f}x")
    print(json.dumps({
        "ex_per_s_ours": round(ours_rate, 1),
        "ex_per_s_hf_python": round(peer_rate, 1),
        "ours_over_hf_python": round(ours_rate / peer_rate, 3),
    }))


if __name__ == "__main__":
    main()
