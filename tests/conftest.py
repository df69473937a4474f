"""Shared fixtures: a tiny BERT encoder (2 layers, width 32) in TF Hub format and tiny labelled tables."""

from __future__ import annotations

# Before any test module imports TensorFlow: bert_tf's import picks TensorFlow's allocator and oneDNN kernels
# (bert_tf/__init__.py), and the tests should run what users run.
import bert_tf  # noqa: F401

import os
import random

import numpy as np
import pytest

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

TINY_WORDS = [
    "good", "great", "fine", "love", "bad", "awful", "poor", "hate", "movie", "film", "plot", "the", "a",
    "was", "is", "not", "very", "and", "it", "!", ".", ",", "##s", "##ly",
]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
TINY_CONFIG = {
    "vocab_size": len(TINY_VOCAB),
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,  # deterministic training, so runs on different strategies can be compared
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
}


def shared_data(*parts: str) -> str:
    """A file of ../shared/data; in CI its absence is a failure, elsewhere a skip."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI needs ../shared beside the repo")
        pytest.skip(f"{path} not available")
    return path


def write_tiny_encoder(directory: str, config: dict | None = None, seed: int = 0) -> str:
    """Exports a random tiny BERT as `directory/encoder` + `directory/preprocess` (what export_encoder writes)."""
    from bert_tf.encoders.bert import BertConfig, weight_shapes
    from bert_tf.encoders.convert import export_encoder_savedmodel
    from bert_tf.tokenization import export_preprocessor

    bert_config = BertConfig.from_dict(config or TINY_CONFIG)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(bert_config).items():
        if name.endswith("/gamma"):
            weights[name] = np.ones(shape, np.float32)
        elif name.endswith(("/beta", "/bias")):
            weights[name] = np.zeros(shape, np.float32)
        else:
            weights[name] = rng.normal(0, 0.2, shape).astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    vocab = os.path.join(directory, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(TINY_VOCAB) + "\n")
    export_encoder_savedmodel(bert_config, weights, vocab, True, os.path.join(directory, "encoder"))
    export_preprocessor(vocab, True, os.path.join(directory, "preprocess"))
    return directory


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    return write_tiny_encoder(str(tmp_path_factory.mktemp("tiny_encoder")))


def sentiment_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Learnable toy sentiment: positive words → "pos", negative words → "neg"."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = ["good", "great", "fine", "love"] if label == "pos" else ["bad", "awful", "poor", "hate"]
        text = f"the {rng.choice(['movie', 'film', 'plot'])} was {rng.choice(['very ', ''])}{rng.choice(words)} !"
        rows.append((text, label))
    return rows


def write_csv(path: str, rows: list[tuple], header: tuple = ("text", "label")) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory, tiny_encoder) -> str:
    """TFRecords of the toy sentiment task, tokenized with the tiny encoder's vocab."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("tiny_records")
    train = write_csv(str(tmp / "train.csv"), sentiment_rows(64, seed=1))
    dev = write_csv(str(tmp / "dev.csv"), sentiment_rows(20, seed=2))
    test = write_csv(str(tmp / "test.csv"), sentiment_rows(10, seed=3))
    out = str(tmp / "records")
    subprocess.run(
        [sys.executable, "-m", "bert_tf.create_tfrecords", f"--train_file={train}", f"--dev_file={dev}",
         f"--test_file={test}", "--text_column=text", "--label_column=label", f"--encoder={tiny_encoder}",
         "--max_seq_length=16", f"--output_dir={out}"],
        check=True, capture_output=True,
    )
    return out
