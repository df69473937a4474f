"""extract_features: pooled vectors equal a direct numpy pooling of the encoder's layer outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_hub as hub
from tokenizers import BertWordPieceTokenizer

from conftest import write_csv

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
