"""Masked-LM pretraining records: documents read from tables or .txt files, cut into chunks, masked, written.

Each document's word-pieces are cut into chunks of max_seq_length - 2 (the last one shorter), packed as
`[CLS] chunk [SEP]` (one segment: no next-sentence prediction, as RoBERTa) and masked `dupe_factor` times, each
time differently (masking.py). A seeded share of the documents (not of the chunks: a document's chunks would
tell about each other) is held out for evaluation, masked once. The records use google-research/bert's and TF
Model Garden's pretraining schema (see feature_spec).

TensorFlow is imported only where records are made: reading and checking the documents is quick.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pandas as pd

from bert_tf import tables
from bert_tf.errors import InputError
from bert_tf.files import exists, read_bytes
from bert_tf.progress import Progress

TEXT_SUFFIX = ".txt"
INPUT_SUFFIXES = (*tables.TABLE_SUFFIXES, TEXT_SUFFIX)
TRAIN_FILE, EVAL_FILE = "train.tf_record", "eval.tf_record"  # records.SPLIT_FILES' train and dev names
METADATA_FILE = "metadata.json"
OBJECTIVE = "masked_lm"
BATCH_SIZE = 1024  # chunks masked per call; part of what a seed gives (each batch draws from its own seed)
_SPLITS = {"train": "train", "eval": "dev"}  # this module's split → records.write_records' split (file name)


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
    """How chunks are made and masked, and which documents are held out (the command's flags)."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 5
    random_seed: int = 12345
    whole_word_masking: bool = False
    eval_fraction: float = 0.01
    max_eval_documents: int = 10_000

    def check(self) -> None:
        """One InputError for the first bad value (the upper bound of max_seq_length needs the encoder)."""
        if self.max_seq_length < 3:
            raise InputError(f"{self.max_seq_length} is out of range", flag="max_seq_length",
                             hint="use at least 3 ([CLS], a token and [SEP])")
        if self.max_predictions_per_seq < 1:
            raise InputError(f"{self.max_predictions_per_seq} is out of range", flag="max_predictions_per_seq",
                             hint="use 1 or more (20 at max_seq_length=128, 80 at 512, as google-research/bert)")
        if not 0 < self.masked_lm_prob < 1:
            raise InputError(f"{self.masked_lm_prob} is out of range", flag="masked_lm_prob",
                             hint="use a share of the tokens strictly between 0 and 1, such as 0.15")
        if self.dupe_factor < 1:
            raise InputError(f"{self.dupe_factor} is out of range", flag="dupe_factor", hint="use 1 or more")
        if not 0 <= self.random_seed < 2**63:
            raise InputError(f"{self.random_seed} is out of range", flag="random_seed",
                             hint="use a non-negative integer below 2**63")
        if not 0 <= self.eval_fraction < 1:
            raise InputError(f"{self.eval_fraction} is out of range", flag="eval_fraction",
                             hint="use 0 (no eval split) up to, but not including, 1")
        if self.max_eval_documents < 0:
            raise InputError(f"{self.max_eval_documents} is out of range", flag="max_eval_documents",
                             hint="use 0 or more")


@dataclasses.dataclass
class Documents:
    """The texts of every input file, in order, and where they came from (metadata.json's `sources`)."""

    texts: list[str]
    sources: list[dict]

    def __len__(self) -> int:
        return len(self.texts)


# --- Reading documents ------------------------------------------------------------------------------------------
def read_text_file(path: str) -> tuple[list[str], str]:
    """The documents of a .txt file (optionally .gz) and its layout.

    `paragraphs` when a blank line stands between two non-blank ones: documents are separated by blank lines
    (google-research/bert's layout, one sentence per line), their lines joined by newlines. Otherwise `lines`:
    each non-blank line is a document.
    """
    data = tables._read_bytes(path)  # the table reader's checks: a missing file, a directory, bad gzip
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"byte {data[error.start]:#04x} is not UTF-8", file=path,
                         row=data[: error.start].count(b"\n") + 1, hint="re-save the file as UTF-8") from None
    lines = [line.rstrip("\r") for line in content.split("\n")]
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if not filled:
        raise InputError("file is empty", file=path)
    body = lines[filled[0]: filled[-1] + 1]
    if all(line.strip() for line in body):
        return [line for line in body], "lines"
    documents, current = [], []
    for line in body + [""]:
        if line.strip():
            current.append(line)
        elif current:
            documents.append("\n".join(current))
            current = []
    return documents, "paragraphs"


def guess_text_column(frame: pd.DataFrame, path: str) -> str:
    """The table's text column when --text_column is not given: its only column, a column named `text`, or
    the column whose cells are on average more than twice as long as any other column's."""
    names = [str(name) for name in frame.columns]
    if len(names) == 1:
        return names[0]
    if "text" in names:
        return "text"
    lengths = {name: float(frame[name].map(lambda cell: len(str(cell)) if cell is not None else 0).mean())
               for name in names}
    longest = max(names, key=lengths.get)
    if all(lengths[longest] > 2 * lengths[name] for name in names if name != longest):
        return longest
    raise InputError("cannot tell which column holds the text", file=path, flag="text_column",
                     hint=f"name it with --text_column (columns are: {', '.join(names)})")


def read_documents(paths: list[str], text_column: str | None = None) -> Documents:
    """Every document of the input files: tables (their text column; other columns are ignored) and .txt files."""
    if not paths:
        raise InputError("name at least one input file", flag="input_file")
    texts, sources = [], []
    for path in paths:
        base = path.removesuffix(".gz")
        suffix = os.path.splitext(base)[1].lower()
        if suffix not in INPUT_SUFFIXES:
            raise InputError(f"unknown input format '{suffix or base}'", file=path,
                             hint=f"use one of {', '.join(INPUT_SUFFIXES)} (optionally .gz)")
        if suffix == TEXT_SUFFIX:
            documents, layout = read_text_file(path)
            source = {"file": path, "layout": layout, "text_column": None}
        else:
            frame = tables.read_dataframe(path)
            column = text_column or (guess_text_column(frame, path) if not frame.empty else "text")
            documents = tables.text_table(frame, path, column, [], labels_required=False).texts
            source = {"file": path, "layout": "table", "text_column": column}
        texts.extend(documents)
        sources.append({**source, "documents": len(documents)})
    return Documents(texts, sources)


def held_out_documents(num_documents: int, eval_fraction: float, max_eval_documents: int, seed: int) -> np.ndarray:
    """[num_documents] bool: the documents held out for evaluation, a seeded random choice.

    round(eval_fraction × documents), at least 1 (when eval_fraction > 0) and at most max_eval_documents; one
    document at least always stays for training.
    """
    wanted = 0 if eval_fraction == 0 else max(1, round(eval_fraction * num_documents))
    count = max(0, min(wanted, max_eval_documents, num_documents - 1))
    held = np.zeros(num_documents, bool)
    held[np.random.default_rng([seed, 0]).permutation(num_documents)[:count]] = True
    return held


# --- Making records ---------------------------------------------------------------------------------------------
def cut_into_chunks(texts: list[str], tokenizer, chunk_length: int):
    """(chunks [n, (≤ chunk_length)] int32 RaggedTensor, each chunk's document [n], each document's tokens).

    A document's chunks hold its word-pieces in order, all of them: chunk k holds pieces [k·L, (k + 1)·L).
    A document without a word-piece (only control characters) makes no chunk.
    """
    import tensorflow as tf

    from bert_tf.long_documents import sliding_windows

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def chunk(batch):
        tokens = tokenizer.tokenize(batch)
        windows, document, _ = sliding_windows(tokens, chunk_length, chunk_length)
        keep = windows.row_lengths() > 0
        return tf.ragged.boolean_mask(windows, keep), tf.boolean_mask(document, keep), tokens.row_lengths()

    values, lengths, documents, tokens = [], [], [], []
    with Progress(len(texts), "documents tokenized") as progress:
        for start in range(0, len(texts), BATCH_SIZE):
            batch = texts[start: start + BATCH_SIZE]
            windows, document, row_tokens = chunk(tf.constant(batch))
            values.append(windows.flat_values.numpy())
            lengths.append(windows.row_lengths().numpy())
            documents.append(document.numpy() + start)
            tokens.append(row_tokens.numpy())
            progress.update(len(batch))
    chunks = tf.RaggedTensor.from_row_lengths(np.concatenate(values).astype(np.int32), np.concatenate(lengths))
    return chunks, np.concatenate(documents), np.concatenate(tokens)


def _stream(split: str, dupe: int, batch: int) -> int:
    """The second half of a batch's seed: distinct for every split, duplicate and batch."""
    return (list(_SPLITS).index(split) << 56) | (dupe << 32) | batch


def write_split(encode, chunks, members: np.ndarray, dupes: int, seed: int, directory: str, split: str) -> int:
    """Writes `dupes` maskings of the chunks `members` into the split's file, each in its own seeded order;
    returns the number of records."""
    import tensorflow as tf

    from bert_tf import records

    def batches():
        for dupe in range(dupes):
            order = members[np.random.default_rng([seed, 1 + list(_SPLITS).index(split), dupe]).permutation(len(members))]
            for number, start in enumerate(range(0, len(order), BATCH_SIZE)):
                indices = order[start: start + BATCH_SIZE]
                serialized = encode(tf.gather(chunks, indices), tf.constant([seed, _stream(split, dupe, number)], tf.int64))
                progress.update(len(indices))
                yield serialized.numpy()

    with Progress(dupes * len(members), f"{split} examples") as progress:
        _, written = records.write_records(directory, _SPLITS[split], batches(), per_file=2**62)
    return written


def record_encoder(vocab: list[str], settings: PretrainingSettings):
    """The tf.function (chunks [batch, (ids)] int32, seed [2] int64) → [batch] serialized tf.Examples."""
    import tensorflow as tf

    from bert_tf.masking import MaskedLmMasker
    from bert_tf.records import serialize_examples

    masker = MaskedLmMasker(vocab, settings.max_seq_length, settings.max_predictions_per_seq,
                            settings.masked_lm_prob, settings.whole_word_masking)
    spec = [tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1, row_splits_dtype=tf.int64),
            tf.TensorSpec([2], tf.int64)]
    return tf.function(lambda chunks, seed: serialize_examples(masker.features(chunks, seed)), input_signature=spec)


# --- metadata.json and the records' schema ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PretrainingMetadata:
    """metadata.json of a directory of pretraining records (written last: a directory that has one is complete).

    `documents`, `chunks` and `tokens` (word-pieces, [CLS]/[SEP] excluded) count each split's source text;
    train_data_size and eval_data_size its records (train: chunks × dupe_factor; eval: chunks, masked once).
    """

    settings: dict
    train_data_size: int
    eval_data_size: int
    documents: dict[str, int]
    chunks: dict[str, int]
    tokens: dict[str, int]
    sources: list[dict]
    files: dict[str, list[str]]
    encoder: str
    vocab_size: int
    vocab_sha256: str
    do_lower_case: bool
    objective: str = OBJECTIVE

    def to_json(self) -> dict:
        content = dataclasses.asdict(self)
        content.update(content.pop("settings"))  # the settings as top-level keys, as create_tfrecords' metadata
        return content

    @classmethod
    def from_json(cls, content: dict) -> PretrainingMetadata:
        names = {field.name for field in dataclasses.fields(PretrainingSettings)}
        settings = {name: content[name] for name in names if name in content}
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(settings=settings, **{key: value for key, value in content.items() if key in known and key != "settings"})

    @property
    def max_seq_length(self) -> int:
        return self.settings["max_seq_length"]

    @property
    def max_predictions_per_seq(self) -> int:
        return self.settings["max_predictions_per_seq"]


def read_metadata(data_dir: str) -> PretrainingMetadata:
    """A pretraining directory's metadata.json; one InputError when it is missing or describes other records."""
    path = os.path.join(data_dir, METADATA_FILE)
    if not exists(path):
        raise InputError(f"no {METADATA_FILE} here", file=data_dir, flag="data_dir",
                         hint="write the records with `python -m bert_tf.create_pretraining_data`")
    rewrite = "rewrite the records with `python -m bert_tf.create_pretraining_data`"
    try:
        content = json.loads(read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"is not valid JSON ({error})", file=path, hint=rewrite) from None
    if not isinstance(content, dict) or content.get("objective") != OBJECTIVE:
        raise InputError("holds classification records, not pretraining records", file=data_dir, flag="data_dir",
                         hint="write them with `python -m bert_tf.create_pretraining_data`")
    try:
        return PretrainingMetadata.from_json(content)
    except (KeyError, TypeError) as error:
        raise InputError(f"lacks or mangles a field ({type(error).__name__}: {error})", file=path,
                         hint=rewrite) from None


def feature_spec(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """tf.io.parse_example's spec of the records: google-research/bert's and TF Model Garden's pretraining names
    (without next_sentence_labels: there is no next-sentence prediction)."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([max_seq_length], tf.int64)
            for name in ("input_ids", "input_mask", "segment_ids")}
    spec.update({name: tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
                 for name in ("masked_lm_positions", "masked_lm_ids")})
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32)
    return spec


# --- The whole step ---------------------------------------------------------------------------------------------
def create_pretraining_data(documents: Documents, output_dir: str, settings: PretrainingSettings, *,
                            encoder: str | None = None, vocab_file: str | None = None,
                            do_lower_case: bool | None = None) -> PretrainingMetadata:
    """Writes train.tf_record, eval.tf_record and metadata.json to output_dir (staged, then moved in); returns
    the metadata. The tokenizer is the encoder's (vocab and casing) or vocab_file's, as create_tfrecords'."""
    settings.check()
    from bert_tf import records
    from bert_tf.create_tfrecords import check_max_seq_length, vocab_and_casing
    from bert_tf.tokenization import BertTextTokenizer, load_vocab, vocab_digest

    vocab_file, lower_case, max_positions, encoder = vocab_and_casing(encoder, vocab_file, do_lower_case)
    check_max_seq_length(settings.max_seq_length, max_positions, 1)
    vocab = load_vocab(vocab_file)
    chunks, chunk_document, document_tokens = cut_into_chunks(documents.texts, BertTextTokenizer(vocab, lower_case),
                                                              settings.max_seq_length - 2)
    if not len(chunk_document):
        raise InputError("no document holds a word-piece", file=documents.sources[0]["file"])
    held = held_out_documents(len(documents), settings.eval_fraction, settings.max_eval_documents,
                              settings.random_seed)
    members = {"train": np.flatnonzero(~held[chunk_document]), "eval": np.flatnonzero(held[chunk_document])}
    try:
        staging = records.staging_dir(output_dir)
    except OSError as error:
        raise InputError(f"cannot write here ({error.strerror})", file=output_dir, flag="output_dir") from None
    try:
        encode = record_encoder(vocab, settings)
        sizes = {split: write_split(encode, chunks, members[split], settings.dupe_factor if split == "train" else 1,
                                    settings.random_seed, staging, split) for split in members}
        metadata = PretrainingMetadata(
            settings=dataclasses.asdict(settings), train_data_size=sizes["train"], eval_data_size=sizes["eval"],
            documents={"train": int((~held).sum()), "eval": int(held.sum())},
            chunks={split: len(chunk_ids) for split, chunk_ids in members.items()},
            tokens={"train": int(document_tokens[~held].sum()), "eval": int(document_tokens[held].sum())},
            sources=documents.sources, files={"train": [TRAIN_FILE], "eval": [EVAL_FILE]}, encoder=encoder,
            vocab_size=len(vocab), vocab_sha256=vocab_digest(vocab), do_lower_case=lower_case,
        )
        with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
        records.publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata
