"""The classifier: a TF Hub BERT encoder, a pooling of its outputs, dropout and a dense head.

A plain Keras 3 model (as TF Model Garden's models are), returning logits; the task's head (heads.py) decides
how they become probabilities (softmax, sigmoid or identity) and which loss trains them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bert_tf.encoders.hub_layers import HubEncoder

POOLINGS = ("pooled", "cls", "mean")


def choose_pooling(pooling: str, encoder: str, paired: bool) -> str:
    """--pooling=auto: for the default encoder mean, or pooled for sentence pairs; pooled for every other
    encoder (see README, Encoders)."""
    # all-MiniLM-L6-v2 was trained as a sentence encoder through mean pooling, and its pooler never was: on
    # single texts mean pooling ties or wins, on GoEmotions the pooler learns only the label prior. On pairs
    # (MRPC) its pooler wins (bench/pooling.py and the sweep in README Results measure both). BERTs published
    # with a trained pooler use it, as google-research/bert does.
    if pooling != "auto":
        return pooling
    if encoder == "default":
        return "pooled" if paired else "mean"
    return "pooled"


def pool(outputs: dict[str, tf.Tensor], input_mask: tf.Tensor, pooling: str) -> tf.Tensor:
    """One vector per example.

    "pooled" is BERT's pooler ([CLS] → dense → tanh), trained by BERT's next-sentence objective; "cls" is
    [CLS]'s last hidden state without it; "mean" averages the real (unmasked) tokens, which is how sentence
    encoders such as all-MiniLM-L6-v2 were trained (their pooler never was).
    """
    if pooling == "pooled":
        return outputs["pooled_output"]
    sequence = outputs["sequence_output"]
    if pooling == "cls":
        return sequence[:, 0]
    mask = tf.cast(input_mask, sequence.dtype)[:, :, None]
    return tf.reduce_sum(sequence * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class BertClassifier(keras.Model):
    """Encoder → pooling → Dropout → Dense(num_labels) logits.

    >>> from bert_tf.encoders.registry import resolve_encoder
    >>> model = BertClassifier(HubEncoder(resolve_encoder("default").encoder), num_labels=3, pooling="mean")
    >>> ids = tf.constant([[101, 7592, 102]])
    >>> model({"input_word_ids": ids, "input_mask": tf.ones_like(ids), "input_type_ids": tf.zeros_like(ids)}).shape
    TensorShape([1, 3])
    """

    def __init__(self, encoder: HubEncoder, num_labels: int, pooling: str = "pooled", dropout_rate: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = keras.layers.Dropout(dropout_rate)
        # BERT's initializer for new layers: truncated normal, stddev 0.02.
        self.head = keras.layers.Dense(
            num_labels, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="logits"
        )
        # Built here, not by a first call: under MirroredStrategy the restored encoder may only be called in
        # a replica context, and the optimizer needs every variable before training starts.
        self.head.build((None, encoder.hidden_size))

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        outputs = self.encoder(inputs, training=training)
        features = pool(outputs, inputs["input_mask"], self.pooling)
        return self.head(self.dropout(features, training=training))
