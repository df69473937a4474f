"""extract_features: pooled vectors equal a direct numpy pooling of the encoder's layer outputs; the output place is
made (or refused) before the work."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_hub as hub
from tokenizers import BertWordPieceTokenizer

from conftest import assert_one_error_line, write_csv

TEXTS = ["the movie was great !", "awful plot", "it is not very good and the film was poor"]


def reference(encoder_dir: str, layers: list[int]) -> np.ndarray:
    """Mean of the real tokens of each layer, from HF token ids and a direct call of the SavedModel."""
    tokenizer = BertWordPieceTokenizer(os.path.join(encoder_dir, "vocab.txt"), lowercase=True)
    encodings = [tokenizer.encode(text).ids for text in TEXTS]
    length = max(map(len, encodings))
    ids = np.array([e + [0] * (length - len(e)) for e in encodings], np.int32)
    mask = (ids > 0).astype(np.int32)
    outputs = hub.load(os.path.join(encoder_dir, "encoder"))(
        {"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask), "input_type_ids": tf.zeros_like(ids)})
    pooled = []
    for layer in layers:
        hidden = outputs["encoder_outputs"][layer].numpy()
        pooled.append((hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True))
    return np.concatenate(pooled, axis=1)


def test_mean_pooled_layers_match_a_direct_computation(tiny_encoder, tmp_path):
    table = write_csv(str(tmp_path / "texts.csv"), [(text, "x") for text in TEXTS])
    for output in ("features.npy", "features.parquet"):
        subprocess.run(
            [sys.executable, "-m", "bert_tf.extract_features", f"--input_file={table}", "--text_column=text",
             f"--output_file={tmp_path / output}", f"--encoder={tiny_encoder}", "--pooling=mean", "--layers=-1,-2",
             "--max_seq_length=16"],
            check=True, capture_output=True,
        )
    expected = reference(tiny_encoder, [-1, -2])
    np.testing.assert_allclose(np.load(tmp_path / "features.npy"), expected, atol=1e-5)
    frame = pd.read_parquet(tmp_path / "features.parquet")
    assert frame["text"].tolist() == TEXTS
    np.testing.assert_allclose(np.stack(frame["features"].to_numpy()), expected, atol=1e-5)


def extract_features(table: str, output_file: str, encoder: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bert_tf.extract_features", f"--input_file={table}", f"--output_file={output_file}",
         f"--encoder={encoder}", "--max_seq_length=16", *flags], capture_output=True, text=True, timeout=300)


def test_output_place_is_made_or_refused_before_the_work(tiny_encoder, tmp_path):
    table = write_csv(str(tmp_path / "texts.csv"), [(text, "x") for text in TEXTS])
    (tmp_path / "a_file").write_text("in the way")
    # A missing encoder too: the output place is checked first, before any encoder is loaded or text read.
    refused = extract_features(table, str(tmp_path / "a_file" / "features.npy"), str(tmp_path / "no_encoder"))
    assert_one_error_line(refused, "--output_file", "a_file", "cannot write here")
    assert sorted(os.listdir(tmp_path)) == ["a_file", "texts.csv"]

    made = extract_features(table, str(tmp_path / "new" / "dir" / "features.npy"), tiny_encoder)
    assert made.returncode == 0, made.stderr[-3000:]
    assert np.load(tmp_path / "new" / "dir" / "features.npy").shape[0] == len(TEXTS)
    assert os.listdir(tmp_path / "new" / "dir") == ["features.npy"]


def test_a_sequence_longer_than_the_encoders_positions_is_one_line(tiny_encoder, tmp_path):
    table = write_csv(str(tmp_path / "texts.csv"), [(text, "x") for text in TEXTS])
    refused = extract_features(table, str(tmp_path / "features.npy"), tiny_encoder, "--max_seq_length=128")
    assert_one_error_line(refused, "--max_seq_length", "128 is out of range", "64 positions")
    assert not os.path.exists(tmp_path / "features.npy")
