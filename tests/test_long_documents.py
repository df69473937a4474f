"""Long documents: sliding windows in the records, per-document aggregation in evaluation and in the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    read_split,
    run_classifier,
    run_create_tfrecords,
    run_in_process,
    serve_in_fresh_process,
    write_csv,
)

from bert_tf.heads import head_for
from bert_tf.long_documents import aggregate, sliding_windows
from bert_tf.reports import read_results

SEQ_LENGTH = 16
WINDOW = SEQ_LENGTH - 2  # [CLS] and [SEP]
STRIDE = 5


def squad_spans(num_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """google-research/bert run_squad.py's doc spans (start, length): the reference for our windows."""
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, window)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, stride)
    return spans or [(0, 0)]


@pytest.mark.parametrize("window,stride", [(14, 5), (14, 14), (3, 1), (8, 7)])
def test_windows_are_run_squads_doc_spans(window, stride):
    rng = np.random.default_rng(window * 100 + stride)
    documents = [list(rng.integers(5, 1000, size=n)) for n in [0, 1, window - 1, window, window + 1, 3 * window, 47]]
    windows, document, index = sliding_windows(tf.ragged.constant(documents, dtype=tf.int32), window, stride)
    expected = [(d, k, doc[s:s + n]) for d, doc in enumerate(documents)
                for k, (s, n) in enumerate(squad_spans(len(doc), window, stride))]
    got = list(zip(document.numpy().tolist(), index.numpy().tolist(), windows.to_list()))
    assert got == [(d, k, [int(t) for t in w]) for d, k, w in expected]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_aggregate(logits: np.ndarray, document: np.ndarray, rule: str, task_type: str) -> np.ndarray:
    """The rules as the docs state them, one document at a time in NumPy."""
    rows = []
    for d in range(document.max() + 1):
        own = logits[document == d]
        if task_type == "multilabel":
            p = 1 / (1 + np.exp(-own))
            rows.append({"mean": 1 / (1 + np.exp(-own.mean(0))), "max": p.max(0), "vote": (p >= 0.5).mean(0)}[rule])
            continue
        p = softmax(own)
        if rule == "mean":
            rows.append(softmax(own.mean(0)))
        elif rule == "max":
            rows.append(softmax(own.max(0)))
        else:
            votes = np.bincount(p.argmax(1), minlength=own.shape[1])
            winners = np.flatnonzero(votes == votes.max())
            winner = winners[np.argmax(p.mean(0)[winners])]  # a tie goes to the higher mean probability
            rows.append(np.eye(own.shape[1])[winner])
    return np.array(rows)


@pytest.mark.parametrize("task_type", ["multiclass", "multilabel"])
@pytest.mark.parametrize("rule", ["mean", "max", "vote"])
def test_aggregation_follows_its_rule(rule, task_type):
    rng = np.random.default_rng(7)
    document = np.repeat(np.arange(6), [1, 2, 3, 4, 2, 5])
    logits = rng.normal(0, 2, size=(len(document), 3)).astype(np.float32)
    # Document 1: two windows voting for different classes, a tie the mean probability must break.
    logits[1:3] = [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    got = aggregate(logits, document, 6, head_for(task_type), rule).numpy()
    expected = reference_aggregate(logits, document, rule, task_type)
    if rule == "vote" and task_type == "multiclass":
        assert got.argmax(1).tolist() == expected.argmax(1).tolist()
        assert got[1].argmax() == 0
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_vote_refuses_regression():
    with pytest.raises(ValueError, match="vote needs classes"):
        aggregate(np.zeros((2, 1), np.float32), np.array([0, 0]), 1, head_for("regression"), "vote")


# --- Records ----------------------------------------------------------------------------------------------
LONG_WORDS = ["good", "film", "bad", "plot", "great", "movie", "awful", "fine"]


def long_text(num_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(LONG_WORDS, size=num_words))


def test_long_document_becomes_linked_windows(tmp_path, tiny_vocab):
    long = long_text(3 * SEQ_LENGTH, seed=0)  # one token per word: 3 × max_seq_length tokens
    rows = [("good film", "pos"), (long, "neg"), ("bad plot", "neg")]
    train = write_csv(str(tmp_path / "train.csv"), rows)
    out = str(tmp_path / "records")
    metadata = run_in_process([f"--train_file={train}", f"--test_file={train}", "--text_column=text",
                               "--label_column=label", f"--vocab_file={tiny_vocab}", f"--max_seq_length={SEQ_LENGTH}",
                               "--long_document=sliding_window", f"--doc_stride={STRIDE}", f"--output_dir={out}"])
    spans = squad_spans(3 * SEQ_LENGTH, WINDOW, STRIDE)
    assert len(spans) >= 3
    assert metadata["documents"] == {"train": 3, "test": 3}
    assert metadata["train_data_size"] == metadata["test_data_size"] == 2 + len(spans)
    assert (metadata["long_document"], metadata["doc_stride"]) == ("sliding_window", STRIDE)

    records = read_split(out, "train")
    vocab = open(tiny_vocab).read().split("\n")
    token_ids = [vocab.index(word) for word in long.split()]
    from_long = records["example_id"] == 1  # the second data row
    assert records["example_id"].tolist() == [0] + [1] * len(spans) + [2]
    assert records["window_index"][from_long].tolist() == list(range(len(spans)))
    assert set(records["label_ids"][from_long].tolist()) == {0}  # "neg": each window carries its document's label
    for (start, length), ids, mask in zip(spans, records["input_ids"][from_long], records["input_mask"][from_long]):
        assert ids[:length + 2].tolist() == [2, *token_ids[start:start + length], 3]
        assert mask.sum() == length + 2
    # The test split keeps each document's text once, on its first window.
    from bert_tf.records import read_texts

    assert read_texts(out, "test") == [text for text, _ in rows]


@pytest.mark.parametrize("flags,expected", [
    (["--doc_stride=20"], "--doc_stride: 20 is out of range"),
    (["--doc_stride=0"], "--doc_stride: 0 is out of range"),
    (["--long_document=truncate", "--doc_stride=4"], "--doc_stride: applies only with --long_document=sliding_window"),
    (["--text_b_column=label"], "--long_document: sliding windows cut single texts"),
])
def test_bad_window_flags(tmp_path, tiny_vocab, flags, expected):
    train = write_csv(str(tmp_path / "train.csv"), [("good film", "pos"), ("bad plot", "neg")])
    args = [sys.executable, "-m", "bert_tf.create_tfrecords", f"--train_file={train}", "--text_column=text",
            "--label_column=label", f"--vocab_file={tiny_vocab}", f"--max_seq_length={SEQ_LENGTH}",
            "--long_document=sliding_window", f"--output_dir={tmp_path / 'out'}", *flags]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert expected in done.stderr.splitlines()[-1], done.stderr[-1000:]
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


# --- Training, evaluation, prediction and export on windows -----------------------------------------------
def sentiment_documents(count: int, seed: int) -> list[tuple[str, str]]:
    """Documents of 5 to 60 words whose label is the majority sentiment of their words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = (["good", "great", "fine", "love"] if label == "pos" else ["bad", "awful", "poor", "hate"])
        fillers = ["the", "movie", "film", "plot", "was", "very"]
        n = int(rng.integers(5, 60))
        rows.append((" ".join(rng.choice(words if rng.random() < 0.6 else fillers) for _ in range(n)), label))
    return rows


@pytest.fixture(scope="module")
def windowed_run(tmp_path_factory, tiny_encoder):
    tmp = tmp_path_factory.mktemp("windowed")
    test_rows = sentiment_documents(9, seed=3) + [(long_text(3 * SEQ_LENGTH, seed=1), "pos")]
    paths = {split: write_csv(str(tmp / f"{split}.csv"), rows) for split, rows in
             (("train", sentiment_documents(48, seed=1)), ("dev", sentiment_documents(16, seed=2)), ("test", test_rows))}
    records = str(tmp / "records")
    run_create_tfrecords(f"--train_file={paths['train']}", f"--dev_file={paths['dev']}",
                         f"--test_file={paths['test']}", "--text_column=text", "--label_column=label",
                         f"--encoder={tiny_encoder}", f"--max_seq_length={SEQ_LENGTH}",
                         "--long_document=sliding_window", f"--doc_stride={STRIDE}", f"--output_dir={records}")
    out = str(tmp / "run")
    run_classifier(records, tiny_encoder, out, "--num_train_epochs=3", "--do_train", "--do_eval", "--do_predict",
                   "--do_export", "--final_weights=last")  # window_logits reads the latest checkpoint
    return records, out, [text for text, _ in test_rows]


def window_logits(records: str, out: str, encoder_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Every test window's logits from the trained checkpoint, computed directly (not through the tool)."""
    from bert_tf.encoders.hub_layers import HubEncoder
    from bert_tf.input_pipeline import model_inputs
    from bert_tf.model import BertClassifier

    run = json.load(open(os.path.join(out, "run_config.json")))
    model = BertClassifier(HubEncoder(os.path.join(encoder_dir, "encoder")), 2, pooling=run["pooling"])
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(out)).expect_partial()
    windows = read_split(records, "test")
    logits = model(model_inputs(windows), training=False).numpy()
    return logits, windows["example_id"]


def test_windows_aggregate_per_document_in_eval_predict_and_export(windowed_run, tiny_encoder):
    records, out, test_texts = windowed_run
    metadata = json.load(open(os.path.join(records, "metadata.json")))
    results = read_results(os.path.join(out, "eval_results.txt"))
    assert int(results["eval_examples"]) == 16  # documents, not windows
    assert int(results["eval_windows"]) == metadata["eval_data_size"] > 16

    logits, example_ids = window_logits(records, out, tiny_encoder)
    _, document = np.unique(example_ids, return_inverse=True)
    assert np.bincount(document)[-1] >= 3  # the 3 × max_seq_length document
    expected = reference_aggregate(logits, document, "mean", "multiclass")

    written = np.loadtxt(os.path.join(out, "test_results.tsv"), delimiter="\t")
    assert written.shape == (10, 2)
    np.testing.assert_allclose(written, expected, atol=1e-5)
    predictions = open(os.path.join(out, "predictions.tsv")).read().splitlines()[1:]
    assert [line.split("\t")[3] for line in predictions] == [" ".join(t.split()) for t in test_texts]

    # The export takes whole documents and windows them in-graph: same probabilities, one row per document.
    served = serve_in_fresh_process(os.path.join(out, "export"), test_texts)
    np.testing.assert_allclose(np.array(served["probabilities"]), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["max", "vote"])
def test_other_aggregations_in_eval_and_export(windowed_run, tiny_encoder, tmp_path, rule):
    records, out, test_texts = windowed_run
    logits, example_ids = window_logits(records, out, tiny_encoder)
    _, document = np.unique(example_ids, return_inverse=True)
    expected = reference_aggregate(logits, document, rule, "multiclass")

    rerun = str(tmp_path / "run")
    os.makedirs(rerun)
    for name in os.listdir(out):
        if name.startswith(("model.ckpt-", "checkpoint", "run_config")):
            os.link(os.path.join(out, name), os.path.join(rerun, name))
    run_classifier(records, tiny_encoder, rerun, "--do_predict", "--do_export", f"--aggregation={rule}")
    written = np.loadtxt(os.path.join(rerun, "test_results.tsv"), delimiter="\t")
    assert written.argmax(1).tolist() == expected.argmax(1).tolist()
    if rule == "max":
        np.testing.assert_allclose(written, expected, atol=1e-5)

    served = tf.saved_model.load(os.path.join(rerun, "export")).signatures["serving_default"](
        text=tf.constant(test_texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), written, atol=1e-5)
