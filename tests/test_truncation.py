"""--long_document=tail|head_tail (and --head_tokens): which tokens a long text keeps, in the records and the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_VOCAB, assert_one_error_line, read_split, run_in_process, write_csv

from bert_tf import export
from bert_tf.records import RecordsMetadata, read_metadata
from bert_tf.tokenization import trim_segments

SEQ_LENGTH = 16
BUDGET = SEQ_LENGTH - 2  # [CLS] and [SEP]
PAIR_BUDGET = SEQ_LENGTH - 3  # [CLS], [SEP] and [SEP]
# Words the tiny vocab holds whole: one word, one token (its id is TINY_VOCAB.index(word)).
WORDS = ["good", "great", "fine", "love", "bad", "awful", "poor", "hate", "movie", "film", "plot", "the", "a", "was",
         "is", "not", "very", "and", "it"]
CLS, SEP = TINY_VOCAB.index("[CLS]"), TINY_VOCAB.index("[SEP]")


def reference_keep(tokens: list, kept: int, mode: str, head_tokens: int | None, budget: int) -> list:
    """The tokens a segment keeps when it may keep `kept` of them, as the README states it."""
    if kept >= len(tokens):
        return list(tokens)
    if mode == "truncate":
        return tokens[:kept]
    head = 0 if mode == "tail" else kept * (budget // 4 if head_tokens is None else head_tokens) // budget
    return tokens[:head] + tokens[len(tokens) - (kept - head):]


def reference_pair_lengths(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """google-research/bert's _truncate_seq_pair: pop from the longer segment, ties pop from b."""
    while n_a + n_b > budget:
        if n_a > n_b:
            n_a -= 1
        else:
            n_b -= 1
    return n_a, n_b


def lengths_around(budget: int, seed: int) -> list[int]:
    """Lengths shorter than, equal to, one over and far over the budget, and random ones."""
    rng = np.random.default_rng(seed)
    edges = [1, 2, budget - 1, budget, budget + 1, budget + 2, 2 * budget, 2 * budget + 1, 10 * budget, 300]
    return edges + [int(n) for n in rng.integers(1, 6 * budget, size=30)]


def random_texts(lengths: list[int], seed: int) -> tuple[list[str], list[list[int]]]:
    rng = np.random.default_rng(seed)
    words = [list(rng.choice(WORDS, size=n)) for n in lengths]
    return [" ".join(w) for w in words], [[TINY_VOCAB.index(x) for x in w] for w in words]


# --- The in-graph trimming ---------------------------------------------------------------------------------
MODES = [("truncate", None), ("tail", None), ("head_tail", None), ("head_tail", 0), ("head_tail", 5),
         ("head_tail", BUDGET - 1), ("head_tail", BUDGET)]


@pytest.mark.parametrize("mode,head_tokens", MODES)
def test_trim_segments_keeps_the_defined_tokens(mode, head_tokens):
    rng = np.random.default_rng(1)
    documents = [list(range(1000, 1000 + n)) for n in [0] + lengths_around(BUDGET, seed=2)]
    rng.shuffle(documents)
    got = trim_segments([tf.ragged.constant(documents, dtype=tf.int32)], BUDGET, mode, head_tokens)[0].to_list()
    assert got == [reference_keep(d, BUDGET, mode, head_tokens, BUDGET) for d in documents]


@pytest.mark.parametrize("mode,head_tokens", [("tail", None), ("head_tail", None), ("head_tail", 7)])
def test_trim_segments_of_pairs_keep_the_defined_tokens_of_each_segment(mode, head_tokens):
    lengths_a, lengths_b = lengths_around(PAIR_BUDGET, seed=3), lengths_around(PAIR_BUDGET, seed=4)[::-1]
    a = [list(range(1000, 1000 + n)) for n in lengths_a]
    b = [list(range(5000, 5000 + n)) for n in lengths_b]
    got = trim_segments([tf.ragged.constant(a, dtype=tf.int32), tf.ragged.constant(b, dtype=tf.int32)],
                        PAIR_BUDGET, mode, head_tokens)
    expected_a, expected_b = [], []
    for x, y in zip(a, b):
        k_a, k_b = reference_pair_lengths(len(x), len(y), PAIR_BUDGET)
        expected_a.append(reference_keep(x, k_a, mode, head_tokens, PAIR_BUDGET))
        expected_b.append(reference_keep(y, k_b, mode, head_tokens, PAIR_BUDGET))
    assert [s.to_list() for s in got] == [expected_a, expected_b]


# --- Through create_tfrecords' records ---------------------------------------------------------------------
def write_records(tmp_path, tiny_vocab, texts: list[str], *flags: str,
                  texts_b: list[str] | None = None) -> tuple[str, dict]:
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(len(texts))]
    if texts_b is None:
        train = write_csv(str(tmp_path / "train.csv"), list(zip(texts, labels)))
        columns = ["--text_column=text"]
    else:
        train = write_csv(str(tmp_path / "train.csv"), list(zip(texts, texts_b, labels)), ("text", "text_b", "label"))
        columns = ["--text_column=text", "--text_b_column=text_b"]
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", *columns, "--label_column=label",
                               f"--vocab_file={tiny_vocab}", f"--max_seq_length={SEQ_LENGTH}", f"--output_dir={out}",
                               *flags])
    return out, metadata


def record_rows(records: dict[str, np.ndarray]) -> list[list[int]]:
    """Each record's real ids (input_mask 1), in the order of the table's rows."""
    order = np.argsort(records["example_id"])
    return [ids[mask == 1].tolist() for ids, mask in zip(records["input_ids"][order], records["input_mask"][order])]


@pytest.mark.parametrize("mode,head_tokens", [("truncate", None), ("tail", None), ("head_tail", None),
                                              ("head_tail", 0), ("head_tail", 5), ("head_tail", BUDGET)])
def test_records_keep_the_defined_tokens(tmp_path, tiny_vocab, mode, head_tokens):
    lengths = lengths_around(BUDGET, seed=5)
    texts, ids = random_texts(lengths, seed=6)
    flags = [f"--long_document={mode}"] + ([f"--head_tokens={head_tokens}"] if head_tokens is not None else [])
    out, metadata = write_records(tmp_path, tiny_vocab, texts, *flags)

    expected = [[CLS, *reference_keep(row, BUDGET, mode, head_tokens, BUDGET), SEP] for row in ids]
    assert record_rows(read_split(out, "train")) == expected
    assert metadata["truncated_examples"] == {"train": sum(n > BUDGET for n in lengths)}
    assert metadata["long_document"] == mode
    # What the export needs to repeat it: the head actually used (a quarter of 14 tokens, rounded down: 3).
    assert metadata["head_tokens"] == ((BUDGET // 4 if head_tokens is None else head_tokens)
                                       if mode == "head_tail" else None)
    assert read_metadata(out).head_tokens == metadata["head_tokens"]


@pytest.mark.parametrize("mode,head_tokens", [("tail", None), ("head_tail", None), ("head_tail", 6)])
def test_pair_records_cut_each_segment_the_same_way(tmp_path, tiny_vocab, mode, head_tokens):
    lengths_a, lengths_b = lengths_around(PAIR_BUDGET, seed=7), lengths_around(PAIR_BUDGET, seed=8)[::-1]
    texts_a, ids_a = random_texts(lengths_a, seed=9)
    texts_b, ids_b = random_texts(lengths_b, seed=10)
    flags = [f"--long_document={mode}"] + ([f"--head_tokens={head_tokens}"] if head_tokens is not None else [])
    out, metadata = write_records(tmp_path, tiny_vocab, texts_a, *flags, texts_b=texts_b)

    expected = []
    for a, b in zip(ids_a, ids_b):
        k_a, k_b = reference_pair_lengths(len(a), len(b), PAIR_BUDGET)
        expected.append([CLS, *reference_keep(a, k_a, mode, head_tokens, PAIR_BUDGET), SEP,
                         *reference_keep(b, k_b, mode, head_tokens, PAIR_BUDGET), SEP])
    records = read_split(out, "train")
    assert record_rows(records) == expected
    assert metadata["truncated_examples"] == {"train": sum(a + b > PAIR_BUDGET for a, b in zip(lengths_a, lengths_b))}
    order = np.argsort(records["example_id"])
    for row, a, type_ids, mask in zip(expected, ids_a, records["segment_ids"][order], records["input_mask"][order]):
        first = row.index(SEP) + 1  # [CLS] a [SEP] are segment 0
        assert type_ids[mask == 1].tolist() == [0] * first + [1] * (len(row) - first)


# --- Through the export ------------------------------------------------------------------------------------
def tiny_classifier(tiny_encoder: str):
    from bert_tf.encoders.hub_layers import HubEncoder
    from bert_tf.model import BertClassifier

    return BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 2, pooling="mean")


def direct_probabilities(model, records_dir: str) -> np.ndarray:
    """The model's probabilities on the records' own inputs, in the order of the table's rows."""
    from bert_tf.input_pipeline import model_inputs

    records = read_split(records_dir, "train")
    order = np.argsort(records["example_id"])
    return tf.nn.softmax(model(model_inputs({k: v[order] for k, v in records.items()}), training=False)).numpy()


def serving_model(model, tiny_encoder: str, metadata: RecordsMetadata) -> export.ServingModel:
    return export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata)


def served(serving: export.ServingModel, texts: list[str], texts_b: list[str] | None) -> np.ndarray:
    inputs = {"text": tf.constant(texts)} | ({"text_b": tf.constant(texts_b)} if texts_b is not None else {})
    return serving.signature()(**inputs)["probabilities"].numpy()


@pytest.mark.parametrize("mode,flags,paired", [("tail", [], False), ("head_tail", [], False),
                                                ("head_tail", ["--head_tokens=9"], False), ("tail", [], True),
                                                ("head_tail", [], True)])
def test_the_export_sees_the_records_ids(tmp_path, tiny_vocab, tiny_encoder, mode, flags, paired):
    assert open(os.path.join(tiny_encoder, "vocab.txt")).read() == open(tiny_vocab).read()
    lengths = lengths_around(PAIR_BUDGET if paired else BUDGET, seed=11)
    texts, _ = random_texts(lengths, seed=12)
    texts_b = random_texts(lengths[::-1], seed=13)[0] if paired else None
    out, _ = write_records(tmp_path, tiny_vocab, texts, f"--long_document={mode}", *flags, texts_b=texts_b)
    metadata = read_metadata(out)
    model = tiny_classifier(tiny_encoder)
    direct = direct_probabilities(model, out)

    np.testing.assert_allclose(served(serving_model(model, tiny_encoder, metadata), texts, texts_b), direct, atol=1e-5)
    # The comparison tells truncations apart: an export that kept the head would serve other probabilities...
    head_only = RecordsMetadata(**{**metadata.to_json(), "long_document": "truncate", "head_tokens": None})
    served_head = served(serving_model(model, tiny_encoder, head_only), texts, texts_b)
    total = np.array(lengths) + (np.array(lengths[::-1]) if paired else 0)
    long = total > (PAIR_BUDGET if paired else BUDGET)
    assert np.abs(served_head - direct)[long].min() > 1e-6 and np.abs(served_head - direct)[long].max() > 1e-3
    # ... except on the texts that fit, which every truncation leaves whole.
    np.testing.assert_allclose(served_head[~long], direct[~long], atol=1e-5)


@pytest.mark.parametrize("flags", [["--long_document=head_tail", "--head_tokens=4"], ["--long_document=tail"]])
def test_the_saved_export_truncates_as_its_records(tmp_path, tiny_vocab, tiny_encoder, flags):
    texts, _ = random_texts(lengths_around(BUDGET, seed=14), seed=15)
    out, _ = write_records(tmp_path, tiny_vocab, texts, *flags)
    model = tiny_classifier(tiny_encoder)
    export_dir = export.save_serving_model(serving_model(model, tiny_encoder, read_metadata(out)),
                                           str(tmp_path / "export"))
    loaded = tf.saved_model.load(export_dir).signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(loaded["probabilities"].numpy(), direct_probabilities(model, out), atol=1e-5)


# --- Flags and metadata ------------------------------------------------------------------------------------
ONLY_HEAD_TAIL = "--head_tokens: applies only with --long_document=head_tail"


@pytest.mark.parametrize("flags,expected", [
    (["--long_document=head_tail", f"--head_tokens={BUDGET + 1}"], f"--head_tokens: {BUDGET + 1} is out of range"),
    (["--long_document=head_tail", "--head_tokens=-1"], "--head_tokens: -1 is out of range"),
    (["--head_tokens=3"], ONLY_HEAD_TAIL),
    (["--long_document=tail", "--head_tokens=3"], ONLY_HEAD_TAIL),
    (["--long_document=sliding_window", "--head_tokens=3"], ONLY_HEAD_TAIL),
    (["--long_document=tail", "--doc_stride=4"], "--doc_stride: applies only with --long_document=sliding_window"),
    (["--long_document=head_tail", f"--head_tokens={PAIR_BUDGET + 1}", "--text_b_column=text"],
     f"use 0..{PAIR_BUDGET}"),
])
def test_bad_truncation_flags(tmp_path, tiny_vocab, flags, expected):
    train = write_csv(str(tmp_path / "train.csv"), [("good film", "pos"), ("bad plot", "neg")])
    args = [sys.executable, "-m", "bert_tf.create_tfrecords", f"--train_file={train}", "--text_column=text",
            "--label_column=label", f"--vocab_file={tiny_vocab}", f"--max_seq_length={SEQ_LENGTH}",
            f"--output_dir={tmp_path / 'out'}", *flags]
    assert_one_error_line(subprocess.run(args, capture_output=True, text=True), expected)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_metadata_without_head_tokens_still_loads_and_truncates_the_head(tmp_path, tiny_vocab, tiny_encoder):
    texts, _ = random_texts(lengths_around(BUDGET, seed=16), seed=17)
    out, written = write_records(tmp_path, tiny_vocab, texts)  # --long_document=truncate, as before
    old = {key: value for key, value in written.items() if key != "head_tokens"}  # a metadata.json of before
    with open(os.path.join(out, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(old, f)
    metadata = read_metadata(out)
    assert (metadata.long_document, metadata.head_tokens) == ("truncate", None)
    model = tiny_classifier(tiny_encoder)
    serving = serving_model(model, tiny_encoder, metadata)
    np.testing.assert_allclose(served(serving, texts, None), direct_probabilities(model, out), atol=1e-5)
