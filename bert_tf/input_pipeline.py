"""The tf.data input pipeline: records (records.py) → shuffled, length-bucketed batches for training, and
padded, length-sorted batches for evaluation and prediction.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from bert_tf.records import RecordsMetadata, parse_examples, split_files
from bert_tf.tokenization import trim_to_longest


def model_inputs(features: dict[str, tf.Tensor], pad_multiple: int | None = None) -> dict[str, tf.Tensor]:
    """Record feature names (TF Model Garden's) → the TF Hub encoder's input names.

    With a pad_multiple the batch is cut to its longest real sequence, rounded up to that multiple: records
    are padded to max_seq_length, and a batch of short sentences would otherwise spend most of its compute
    on padding. None keeps max_seq_length, for TPUs, which compile one program per shape.
    """
    inputs = {
        "input_word_ids": features["input_ids"],
        "input_mask": features["input_mask"],
        "input_type_ids": features["segment_ids"],
    }
    return inputs if pad_multiple is None else trim_to_longest(inputs, pad_multiple)


def train_dataset(data_dir: str, metadata: RecordsMetadata, global_batch_size: int, seed: int, epoch: int,
                  batches_per_bucket_window: int = 0,
                  parse: Callable[[tf.Tensor], dict[str, tf.Tensor]] | None = None) -> tf.data.Dataset:
    """One epoch of shuffled, full training batches.

    The shuffle seed is derived from (seed, epoch) and not reshuffled on iteration, so a run resumed in the
    middle of an epoch sees the same order as one that never stopped, and every worker of a multi-worker
    run shuffles alike (each then keeps its shard of every global batch). Partial batches are dropped:
    TPUs compile one program per shape, and a smaller last batch would be a second one.

    With batches_per_bucket_window=W, each window of W batches' worth of shuffled examples is sorted by
    length before batching, and the batches are shuffled again: batches then hold sentences of similar
    length, so trimming a batch to its longest sentence removes most of the padding.

    `parse` turns a batch of serialized records into features (default: the classification records'
    parse_examples; run_pretraining passes the masked-LM records' own); `metadata` needs `train_data_size`.
    """
    if parse is None:
        parse = lambda serialized: parse_examples(serialized, metadata)
    files = split_files(data_dir, "train")
    dataset = tf.data.TFRecordDataset(files)
    size = metadata.train_data_size
    epoch_seed = seed * 1000 + epoch
    dataset = dataset.shuffle(min(size, 100_000), seed=epoch_seed, reshuffle_each_iteration=False)
    if batches_per_bucket_window > 1:
        window = global_batch_size * batches_per_bucket_window
        dataset = dataset.batch(window).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.map(_sort_by_length).unbatch().batch(global_batch_size, drop_remainder=True)
        dataset = dataset.shuffle(batches_per_bucket_window, seed=epoch_seed + 1, reshuffle_each_iteration=False)
    else:
        dataset = dataset.batch(global_batch_size, drop_remainder=True)
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return _shard_by_data(dataset.prefetch(tf.data.AUTOTUNE))


def _sort_by_length(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    order = tf.argsort(tf.reduce_sum(features["input_mask"], axis=1), stable=True)
    return {name: tf.gather(value, order) for name, value in features.items()}


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Multi-worker: each worker keeps its share of every global batch. Sharding by file (tf.data's default)
    # would need at least one file per worker and gives workers unequal step counts.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def padded_eval_dataset(data_dir: str, split: str, metadata: RecordsMetadata, global_batch_size: int,
                        batches_per_bucket_window: int = 0) -> tf.data.Dataset:
    """All examples of a split, padded with `is_real_example=0` rows to full batches.

    Every batch has the same shape (TPUs need that, and each multi-worker replica must run as many steps as
    the others); the padding rows are weighted out of every metric. With batches_per_bucket_window=W, each
    window of W batches' worth of examples is sorted by length (as in training), so trimmed batches carry
    little padding; the order is otherwise the file's, and the caller restores it from example_id.
    """
    window = global_batch_size * max(batches_per_bucket_window, 1)
    records = tf.data.TFRecordDataset(split_files(data_dir, split))
    dataset = records.batch(window).map(lambda s: parse_examples(s, metadata), num_parallel_calls=tf.data.AUTOTUNE)
    if batches_per_bucket_window > 1:
        dataset = dataset.map(_sort_by_length)
    dataset = dataset.unbatch()
    padding = (-metadata.size(split)) % global_batch_size
    if padding:
        # A copy of the first record, read on its own: repeating a take(1) of `dataset` would parse and sort
        # a whole window again for every filler row.
        first = records.take(1).batch(1).map(lambda s: parse_examples(s, metadata)).unbatch()
        filler = first.map(lambda features: {**features, "is_real_example": tf.constant(0, tf.int32)})
        dataset = dataset.concatenate(filler.repeat(padding))
    dataset = dataset.batch(global_batch_size, drop_remainder=True)
    return _shard_by_data(dataset.prefetch(tf.data.AUTOTUNE))
