"""The records' format: tf.Example TFRecords in TF Model Garden's schema, their metadata.json, writing both.

The tf.data pipelines that feed training and evaluation from these files are in input_pipeline.py.

Features of every record:
  input_ids, input_mask, segment_ids   int64 [max_seq_length]
  label_ids                            int64 [] (multiclass), int64 [num_labels] multi-hot (multilabel),
                                       float [] (regression)
  is_real_example                      int64 []  (0 for the padding rows added for fixed-size eval batches)
  example_id                           int64 []  (the example's row in its source file)
  weight                               float []  (1.0; per-example loss weight)
  window_index                         int64 []  (--long_document=sliding_window: the window's place in its
                                                  document, whose row is example_id; 0 otherwise)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf

from bert_tf.errors import InputError, stops_held
from bert_tf.files import copy_tree, is_remote
from bert_tf.heads import TaskHead, head_for
from bert_tf.long_documents import sliding_windows
from bert_tf.tokenization import BertTextTokenizer, count_truncated, num_special_tokens, pack_inputs

SPLIT_FILES = {"train": "train.tf_record", "dev": "eval.tf_record", "test": "predict.tf_record"}
# metadata.json's record count of each split (TF Model Garden's key names).
SPLIT_SIZE_KEYS = {"train": "train_data_size", "dev": "eval_data_size", "test": "test_data_size"}
METADATA_FILE = "metadata.json"
SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")


def _encode(message: str, fields: list[str], values: list[tf.Tensor], sizes: tf.Tensor) -> tf.Tensor:
    return tf.io.encode_proto(sizes=sizes, values=values, field_names=fields, message_type=message)


def _feature(values: tf.Tensor) -> tf.Tensor:
    """[batch, k] int64, float32 or string → [batch] serialized tensorflow.Feature protos."""
    batch, width = tf.shape(values)[0], tf.shape(values)[1]
    if values.dtype == tf.int64:
        list_type, field = "tensorflow.Int64List", "int64_list"
    elif values.dtype == tf.string:
        list_type, field = "tensorflow.BytesList", "bytes_list"
    else:
        list_type, field = "tensorflow.FloatList", "float_list"
    serialized_list = _encode(list_type, ["value"], [values], tf.fill([batch, 1], width))
    return _encode("tensorflow.Feature", [field], [serialized_list[:, None]], tf.ones([batch, 1], tf.int32))


def serialize_examples(features: dict[str, tf.Tensor]) -> tf.Tensor:
    """Serializes a batch of tf.Examples in-graph: {name: [batch] or [batch, k]} → [batch] strings.

    tf.io.encode_proto builds the protos in C++ a whole batch at a time, which is several times faster than
    building tf.train.Example objects in Python (bench/bench_tfrecords.py).
    """
    entries = []
    batch = None
    for name in sorted(features):
        values = tf.convert_to_tensor(features[name])
        if values.dtype != tf.string:
            values = tf.cast(values, tf.float32 if values.dtype.is_floating else tf.int64)
        if values.shape.rank == 1:
            values = values[:, None]
        serialized = _feature(values)
        batch = tf.shape(serialized)[0]
        entries.append(
            _encode(
                "tensorflow.Features.FeatureEntry",
                ["key", "value"],
                [tf.fill([batch, 1], name), serialized[:, None]],
                tf.ones([batch, 2], tf.int32),
            )
        )
    feature_map = _encode("tensorflow.Features", ["feature"], [tf.stack(entries, axis=1)], tf.fill([batch, 1], len(entries)))
    return _encode("tensorflow.Example", ["features"], [feature_map[:, None]], tf.ones([batch, 1], tf.int32))


def shard_paths(directory: str, split: str, num_records: int, max_records_per_file: int) -> list[str]:
    base = os.path.join(directory, SPLIT_FILES[split])
    num_shards = max(1, -(-num_records // max_records_per_file))
    if num_shards == 1:
        return [base]
    return [f"{base}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


class ExampleWriter:
    """Tokenizes, packs and serializes tables of examples into TFRecord files, a batch at a time, in-graph.

    With a window_stride, each text becomes one record per sliding window (long_documents.py) instead of
    one truncated record; the windows share their document's example_id and label. Otherwise `truncation`
    and `head_tokens` say which tokens a long text keeps (tokenization.trim_segments), as the export does.
    """

    BATCH_SIZE = 2048

    def __init__(self, tokenizer: BertTextTokenizer, max_seq_length: int, paired: bool, window_stride: int | None = None,
                 truncation: str = "truncate", head_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.paired = paired
        self.window_stride = window_stride
        self.truncation = truncation
        self.head_tokens = head_tokens
        self._encoders = {}

    def _encoder(self, label_ids: np.ndarray, keep_text: bool):
        """The tf.function for this label shape; traced once (a signature with a free batch size)."""
        key = (label_ids.dtype.str, label_ids.shape[1:], keep_text)
        if key not in self._encoders:
            t, length, paired, stride = self.tokenizer, self.max_seq_length, self.paired, self.window_stride
            truncation = {} if stride else {"truncation": self.truncation, "head_tokens": self.head_tokens}
            label_spec = tf.TensorSpec([None, *label_ids.shape[1:]], tf.as_dtype(label_ids.dtype))
            strings = tf.TensorSpec([None], tf.string)

            @tf.function(input_signature=[strings, strings, label_spec, tf.TensorSpec([None], tf.int64)], autograph=False)
            def encode(texts, texts_b, labels, example_ids):
                segments = [t.tokenize(texts)] + ([t.tokenize(texts_b)] if paired else [])
                if stride:
                    windows, document, window_index = sliding_windows(segments[0], length - num_special_tokens(1), stride)
                    segments, truncated = [windows], tf.constant(0)
                    labels, example_ids = tf.gather(labels, document), tf.gather(example_ids, document)
                    # Only a document's first window keeps its text: the rest would repeat it.
                    texts = tf.where(window_index == 0, tf.gather(texts, document), "")
                else:
                    window_index = tf.zeros_like(example_ids)
                    truncated = tf.reduce_sum(tf.cast(count_truncated(segments, length), tf.int32))
                packed = pack_inputs(segments, length, t.cls_id, t.sep_id, t.pad_id, **truncation)
                count = tf.shape(labels)[0]
                features = {
                    "input_ids": packed["input_word_ids"],
                    "input_mask": packed["input_mask"],
                    "segment_ids": packed["input_type_ids"],
                    "label_ids": labels,
                    "is_real_example": tf.ones([count], tf.int64),
                    "example_id": example_ids,
                    "weight": tf.ones([count], tf.float32),
                    "window_index": window_index,
                }
                if keep_text:  # the test split keeps its text, so predictions can show it
                    features["text"] = texts
                    if paired:
                        features["text_b"] = texts_b
                return serialize_examples(features), truncated

            self._encoders[key] = encode
        return self._encoders[key]

    def write(self, table, label_ids: np.ndarray, directory: str, split: str, per_file: int, progress,
              keep_text: bool) -> tuple[list[str], int, int]:
        """Writes one split (a tables.TextTable) into directory; returns (paths, records written, truncated)."""
        encode = self._encoder(label_ids, keep_text)
        texts_b = table.texts_b if table.texts_b is not None else [""] * len(table)
        example_ids = np.asarray(table.example_ids, np.int64)
        truncated = 0

        def batches():
            nonlocal truncated
            for start in range(0, len(table), self.BATCH_SIZE):
                stop = start + self.BATCH_SIZE
                serialized, num_truncated = encode(
                    tf.constant(table.texts[start:stop]), tf.constant(texts_b[start:stop]),
                    tf.constant(label_ids[start:stop]), tf.constant(example_ids[start:stop]),
                )
                truncated += int(num_truncated)
                progress.update(min(stop, len(table)) - start)
                yield serialized.numpy()

        paths, written = write_records(directory, split, batches(), per_file)
        return paths, written, truncated


def write_records(directory: str, split: str, serialized_batches: Iterable[np.ndarray], per_file: int
                  ) -> tuple[list[str], int]:
    """Writes serialized examples into a split's files in directory, per_file to a file.

    The number of records is known only at the end (a document may make several windows), so shards are
    written under provisional names and renamed to -NNNNN-of-NNNNN once complete. Returns (paths, count).
    """
    written = 0
    writer = None
    provisional = []
    batches = iter(serialized_batches)
    try:
        while True:
            with stops_held():  # making a batch runs TensorFlow: a SIGTERM waits for the batch's end
                batch = next(batches, None)
                if batch is None:
                    break
                for record in batch:
                    if written % per_file == 0:
                        if writer is not None:
                            writer.close()
                        provisional.append(os.path.join(directory, f".{SPLIT_FILES[split]}-{len(provisional):05d}"))
                        writer = tf.io.TFRecordWriter(provisional[-1])
                    writer.write(record)
                    written += 1
    finally:
        if writer is not None:
            writer.close()
    if not provisional:  # an empty split still gets its (empty) file
        provisional.append(os.path.join(directory, f".{SPLIT_FILES[split]}-00000"))
        tf.io.TFRecordWriter(provisional[0]).close()
    paths = shard_paths(directory, split, written, per_file)
    for source, target in zip(provisional, paths):
        os.replace(source, target)
    return paths, written


@dataclasses.dataclass(frozen=True)
class RecordsMetadata:
    """metadata.json: what run_classifier, the export and the tools need to know about a directory of records.

    The *_data_size fields count records (what a training step or an eval batch consumes): windows, when
    documents are cut into windows (long_document="sliding_window"); `documents` counts the table rows.
    """

    task_type: str
    num_labels: int
    label_names: list[str]
    max_seq_length: int
    train_data_size: int = 0
    eval_data_size: int = 0
    test_data_size: int = 0
    documents: dict[str, int] = dataclasses.field(default_factory=dict)
    long_document: str = "truncate"
    doc_stride: int | None = None
    head_tokens: int | None = None  # long_document="head_tail": tokens kept from a long text's start
    test_has_labels: bool = False
    paired: bool = False
    text_column: str | None = None
    text_b_column: str | None = None
    label_columns: list[str] = dataclasses.field(default_factory=list)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    truncated_examples: dict[str, int] = dataclasses.field(default_factory=dict)
    encoder: str = ""
    vocab_size: int | None = None
    vocab_sha256: str | None = None
    do_lower_case: bool | None = None

    @property
    def head(self) -> TaskHead:
        return head_for(self.task_type)

    @property
    def windowed(self) -> bool:
        return self.long_document == "sliding_window"

    def size(self, split: str) -> int:
        """Records in a split (0 when the records have none)."""
        return getattr(self, SPLIT_SIZE_KEYS[split])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, content: dict) -> "RecordsMetadata":
        """Keys this version does not know are ignored, so records written by a newer one still load."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in content.items() if key in known})


def write_metadata(directory: str, metadata: RecordsMetadata) -> None:
    with tf.io.gfile.GFile(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump(metadata.to_json(), f, indent=2, sort_keys=True)
        f.write("\n")


def read_metadata(data_dir: str) -> RecordsMetadata:
    path = os.path.join(data_dir, METADATA_FILE)
    rewrite = "rewrite the records with `python -m bert_tf.create_tfrecords` (or `make tfrecords`)"
    if not tf.io.gfile.exists(path):
        raise InputError(f"no {METADATA_FILE} here", file=data_dir, flag="data_dir", hint=rewrite.replace("rewrite", "write"))
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return RecordsMetadata.from_json(json.load(f))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"is not valid JSON ({error})", file=path, hint=rewrite) from None
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(f"lacks or mangles a field ({type(error).__name__}: {error})", file=path, hint=rewrite) from None


def check_split_files(data_dir: str, split: str, metadata: RecordsMetadata) -> None:
    """The split's record files exist (a truncated one is found as it is read: training.RecordsDamaged)."""
    files = split_files(data_dir, split)
    if not files:
        raise InputError(f"no {SPLIT_FILES[split]} here, though {METADATA_FILE} counts "
                         f"{metadata.size(split)} {split} records", file=data_dir, flag="data_dir",
                         hint="rewrite the records with `python -m bert_tf.create_tfrecords`")


def fingerprint(data_dir: str, split: str) -> str:
    """Identifies the split's records cheaply: metadata.json and the record files' names and sizes."""
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(os.path.join(data_dir, METADATA_FILE), "rb") as f:
        digest.update(f.read())
    for path in split_files(data_dir, split):
        digest.update(f"{os.path.basename(path)}:{tf.io.gfile.stat(path).length};".encode())
    return digest.hexdigest()[:16]


def feature_spec(metadata: RecordsMetadata) -> dict[str, tf.io.FixedLenFeature]:
    length = metadata.max_seq_length
    spec = {name: tf.io.FixedLenFeature([length], tf.int64) for name in SEQUENCE_FEATURES}
    spec.update(
        label_ids=metadata.head.label_feature(metadata.num_labels),
        is_real_example=tf.io.FixedLenFeature([], tf.int64),
        example_id=tf.io.FixedLenFeature([], tf.int64),
        weight=tf.io.FixedLenFeature([], tf.float32, default_value=1.0),
        window_index=tf.io.FixedLenFeature([], tf.int64, default_value=0),
    )
    return spec


def split_files(data_dir: str, split: str) -> list[str]:
    pattern = os.path.join(data_dir, SPLIT_FILES[split])
    return sorted(tf.io.gfile.glob(pattern) + tf.io.gfile.glob(pattern + "-*-of-*"))


def parse_examples(serialized: tf.Tensor, metadata: RecordsMetadata) -> dict[str, tf.Tensor]:
    """Parses a batch of serialized records; ints become int32 (TPUs have no int64 on device)."""
    parsed = tf.io.parse_example(serialized, feature_spec(metadata))
    return {name: tf.cast(value, tf.int32) if value.dtype == tf.int64 else value for name, value in parsed.items()}


def iterate_numpy(data_dir: str, split: str, metadata: RecordsMetadata, batch_size: int = 1024) -> Iterator[dict[str, np.ndarray]]:
    """Reads a split back in file order, as numpy batches (for tests and tools)."""
    dataset = tf.data.TFRecordDataset(split_files(data_dir, split)).batch(batch_size)
    for serialized in dataset:
        yield {name: value.numpy() for name, value in parse_examples(serialized, metadata).items()}


def read_texts(data_dir: str, split: str) -> list[str] | None:
    """The raw texts kept in a split's records (the test split keeps them), one per document in file order.

    None if the records hold no text.
    """
    texts = []
    spec = {"text": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "window_index": tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    for serialized in tf.data.TFRecordDataset(split_files(data_dir, split)).batch(4096):
        parsed = tf.io.parse_example(serialized, spec)
        first_windows = parsed["text"].numpy()[parsed["window_index"].numpy() == 0]
        texts.extend(t.decode("utf-8") for t in first_windows)
    return texts if any(texts) else None


def staging_dir(output_dir: str) -> str:
    """Where records are written before publish: inside output_dir (local), or a local temp dir (remote)."""
    if is_remote(output_dir):
        tf.io.gfile.makedirs(output_dir)
        return tempfile.mkdtemp(prefix=".staging-")
    os.makedirs(output_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=".staging-", dir=output_dir)


def publish(staging: str, output_dir: str) -> None:
    """Moves (remote: copies) the finished files of `staging` into `output_dir`, metadata.json last.

    Records of an earlier run are removed first, so the directory never mixes splits or shards of two runs
    under one metadata.json; readers need metadata.json, so they never see a half-copied directory as records.
    """
    for name in [METADATA_FILE, *SPLIT_FILES.values()]:
        pattern = os.path.join(output_dir, name)
        for old in tf.io.gfile.glob(pattern) + tf.io.gfile.glob(pattern + "-*-of-*"):
            tf.io.gfile.remove(old)
    if is_remote(output_dir):
        copy_tree(staging, output_dir, last=METADATA_FILE)
        shutil.rmtree(staging)
        return
    for name in sorted(os.listdir(staging), key=lambda name: name == METADATA_FILE):
        os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    os.rmdir(staging)
