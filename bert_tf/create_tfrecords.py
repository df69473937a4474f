r"""Turns a table of texts and labels into BERT-ready tf.Example TFRecords.

  python -m bert_tf.create_tfrecords \
    --train_file=train.csv --dev_file=dev.csv --test_file=test.csv \
    --text_column=text --label_column=label --output_dir=data/my_task

Writes train.tf_record, eval.tf_record and predict.tf_record (sharded when large) and metadata.json, which
run_classifier reads for the sequence length, labels and task type. Everything is read and checked before
anything is written; files appear in --output_dir only once complete.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from absl import app, logging

from bert_tf import flags as bert_flags
from bert_tf import tables
from bert_tf.errors import InputError, exits_cleanly_on_bad_input
from bert_tf.labels import LabelSpace, encode_labels, infer_label_space
from bert_tf.progress import Progress

if TYPE_CHECKING:
    from bert_tf.records import RecordsMetadata

# TensorFlow is imported only once the tables have passed every check (in create_tfrecords): importing it
# takes seconds, and a typo in a column name should be reported at once.

FLAGS = bert_flags.FLAGS


def read_splits(task_name: str | None, data_dir: str | None, files: dict[str, str | None], text_column: str | None,
                label_columns: list[str] | None, text_b_column: str | None = None) -> dict[str, tables.TextTable]:
    """The train/dev/test tables of a known task, or of `files` (split → path; dev and test optional)."""
    if task_name:
        task = task_name.lower()
        if task == "bbc_news":
            return tables.read_bbc_news()
        if task not in tables.GLUE_TASKS:
            raise InputError(f"unknown task '{task_name}'", flag="task_name", hint=f"use bbc_news or one of {', '.join(tables.GLUE_TASKS)}")
        if not data_dir:
            raise InputError(f"GLUE task {task} needs the directory of its files", flag="data_dir")
        splits = {split: tables.read_glue_split(task, data_dir, split) for split in ("train", "dev", "test")}
        return {split: table for split, table in splits.items() if table is not None}
    if not files.get("train"):
        raise InputError("name the train table (or a --task_name)", flag="train_file")
    if not text_column or not label_columns:
        raise InputError("name the text and label columns", flag="text_column" if not text_column else "label_column")
    return {
        split: tables.read_text_table(path, text_column, label_columns, text_b_column, labels_required=split != "test")
        for split, path in files.items() if path
    }


def vocab_and_casing(encoder: str | None, vocab_file: str | None, do_lower_case: bool | None) -> tuple[str, bool, int, str]:
    """(vocab file, lower-case?, max positions, encoder handle) from vocab_file or the encoder's own assets.

    encoder None means the default encoder, or none at all when a vocab_file is given.
    """
    if vocab_file:
        lower = True if do_lower_case is None else do_lower_case
        return vocab_file, lower, 512, encoder or ""
    from bert_tf.encoders.loading import encoder_info

    encoder = encoder or "default"
    info = encoder_info(encoder)
    lower = info.do_lower_case if do_lower_case is None else do_lower_case
    return info.vocab_file, lower, info.max_position_embeddings, encoder


def check_max_seq_length(max_seq_length: int, max_positions: int, num_segments: int) -> None:
    least = 1 + num_segments + num_segments  # [CLS], a [SEP] per segment, and one token of each
    if not least <= max_seq_length <= max_positions:
        raise InputError(
            f"{max_seq_length} is out of range", flag="max_seq_length",
            hint=f"use {least}..{max_positions} ({max_positions} is the encoder's number of positions)",
        )


def window_stride(long_document: str, doc_stride: int | None, max_seq_length: int, paired: bool) -> int | None:
    """Tokens between window starts for --long_document=sliding_window; None when documents are truncated."""
    if long_document != "sliding_window":
        if doc_stride is not None:
            raise InputError("applies only with --long_document=sliding_window", flag="doc_stride")
        return None
    if paired:
        raise InputError("sliding windows cut single texts, not sentence pairs", flag="long_document",
                         hint="drop --text_b_column, or use --long_document=truncate")
    from bert_tf.long_documents import default_stride
    from bert_tf.tokenization import num_special_tokens

    window = max_seq_length - num_special_tokens(1)
    stride = default_stride(window) if doc_stride is None else doc_stride
    if not 1 <= stride <= window:
        raise InputError(f"{stride} is out of range", flag="doc_stride",
                         hint=f"use 1..{window} (a window holds max_seq_length - 2 = {window} tokens)")
    return stride


def head_length(long_document: str, head_tokens: int | None, max_seq_length: int, paired: bool) -> int | None:
    """Tokens --long_document=head_tail keeps from a long text's start (--head_tokens, default a quarter of the
    budget); None for the other modes. Pairs: see tokenization.trim_segments."""
    if long_document != "head_tail":
        if head_tokens is not None:
            raise InputError("applies only with --long_document=head_tail", flag="head_tokens")
        return None
    from bert_tf.tokenization import default_head_tokens, num_special_tokens

    specials = num_special_tokens(2 if paired else 1)
    budget = max_seq_length - specials
    head = default_head_tokens(budget) if head_tokens is None else head_tokens
    if not 0 <= head <= budget:
        raise InputError(f"{head} is out of range", flag="head_tokens",
                         hint=f"use 0..{budget} (the tokens of a text: max_seq_length - {specials} = {budget})")
    return head


def create_tfrecords(splits: dict[str, tables.TextTable], task_type: str, output_dir: str, max_seq_length: int,
                     max_examples_per_file: int, long_document: str = "truncate", doc_stride: int | None = None, *,
                     head_tokens: int | None = None, encoder: str | None = None, vocab_file: str | None = None,
                     do_lower_case: bool | None = None, text_column: str | None = None,
                     text_b_column: str | None = None, label_space: LabelSpace | None = None) -> RecordsMetadata:
    """Checks every split, then writes records and metadata.json to output_dir; returns the metadata.

    The tokenizer is the encoder's (vocab and casing), or vocab_file's; see vocab_and_casing. The labels are
    the train split's, or `label_space`'s (records of new data for a trained model; no train split needed).
    """
    if label_space is None:
        if "train" not in splits:
            raise InputError("a train split is required", flag="train_file")
        label_space = infer_label_space(splits["train"], task_type)
    label_ids = {split: encode_labels(table, label_space) for split, table in splits.items()}
    first = next(iter(splits.values()))
    paired = first.texts_b is not None
    for split, table in splits.items():
        if (table.texts_b is not None) != paired:
            raise InputError(f"has a second text column where {next(iter(splits))} has none, or the other way round",
                             file=table.source)

    from bert_tf import records
    from bert_tf.tokenization import BertTextTokenizer, load_vocab, vocab_digest

    vocab_file, lower_case, max_positions, encoder = vocab_and_casing(encoder, vocab_file, do_lower_case)
    check_max_seq_length(max_seq_length, max_positions, 2 if paired else 1)
    stride = window_stride(long_document, doc_stride, max_seq_length, paired)
    head = head_length(long_document, head_tokens, max_seq_length, paired)
    vocab = load_vocab(vocab_file)
    example_writer = records.ExampleWriter(BertTextTokenizer(vocab, lower_case), max_seq_length, paired, stride,
                                           long_document, head)

    try:
        staging = records.staging_dir(output_dir)
    except OSError as error:
        raise InputError(f"cannot write here ({error.strerror})", file=output_dir, flag="output_dir") from None
    try:
        truncated, files, counts = {}, {}, {}
        for split, table in splits.items():
            with Progress(len(table), f"{split} examples") as progress:
                paths, counts[split], truncated[split] = example_writer.write(
                    table, label_ids[split], staging, split, max_examples_per_file, progress, keep_text=split == "test"
                )
            files[split] = [os.path.basename(p) for p in paths]
        metadata = records.RecordsMetadata(
            task_type=label_space.task_type, num_labels=label_space.num_labels, label_names=list(label_space.names),
            max_seq_length=max_seq_length, **{records.SPLIT_SIZE_KEYS[split]: count for split, count in counts.items()},
            documents={split: len(table) for split, table in splits.items()}, long_document=long_document,
            doc_stride=stride, test_has_labels="test" in splits and splits["test"].labels is not None, paired=paired,
            text_column=text_column, text_b_column=text_b_column, label_columns=first.label_columns,
            sources={split: table.source for split, table in splits.items()}, files=files,
            truncated_examples=truncated, encoder=encoder, vocab_size=len(vocab), vocab_sha256=vocab_digest(vocab),
            do_lower_case=lower_case, head_tokens=head,
        )
        records.write_metadata(staging, metadata)
        records.publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS)
    if not FLAGS.output_dir:
        raise InputError("say where to write the records", flag="output_dir")
    splits = read_splits(FLAGS.task_name, FLAGS.data_dir,
                         {"train": FLAGS.train_file, "dev": FLAGS.dev_file, "test": FLAGS.test_file},
                         FLAGS.text_column, FLAGS.label_column, FLAGS.text_b_column)
    metadata = create_tfrecords(
        splits, FLAGS.task_type, FLAGS.output_dir, FLAGS.max_seq_length, FLAGS.max_examples_per_file,
        FLAGS.long_document, FLAGS.doc_stride, head_tokens=FLAGS.head_tokens,
        encoder=FLAGS.encoder if FLAGS["encoder"].present or not FLAGS.vocab_file else None,
        vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case, text_column=FLAGS.text_column,
        text_b_column=FLAGS.text_b_column,
    )
    truncated = [f"{count} of {len(splits[split])} {split}" for split, count in metadata.truncated_examples.items() if count]
    if truncated:
        logging.info("Truncated to %d tokens: %s examples (see --long_document)", metadata.max_seq_length,
                     ", ".join(truncated))
    print(f"Wrote {', '.join(f'{len(t)} {s}' for s, t in splits.items())} examples "
          f"({metadata.task_type}, {metadata.num_labels} labels) to {FLAGS.output_dir}")
    if metadata.windowed:
        print(f"as {', '.join(f'{metadata.size(s)} {s}' for s in splits)} windows of "
              f"{metadata.max_seq_length} tokens, {metadata.doc_stride} apart")


if __name__ == "__main__":
    bert_flags.define_tfrecord_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
