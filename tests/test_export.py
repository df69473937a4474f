"""The serving model: a large call runs in length-sorted chunks and returns what one padded batch would."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from conftest import TINY_WORDS

from bert_tf import export
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.model import BertClassifier
from bert_tf.records import RecordsMetadata
from bert_tf.tokenization import pack_inputs


def test_chunked_call_equals_one_padded_batch(tiny_encoder):
    rng = np.random.default_rng(0)
    count = 3 * export.CHUNK_SIZE + 5  # several chunks and a partial one
    texts = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 14)))) for _ in range(count)]
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 3, pooling="mean")
    metadata = RecordsMetadata(task_type="multiclass", num_labels=3, label_names=["a", "b", "c"], max_seq_length=16)
    serving = export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata)

    outputs = serving.signature()(text=tf.constant(texts))
    t = serving._tokenizer
    padded = pack_inputs([t.tokenize(tf.constant(texts))], 16, t.cls_id, t.sep_id, t.pad_id)
    expected = tf.nn.softmax(model(padded, training=False)).numpy()
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert [label.decode() for label in outputs["label"].numpy()] == [["a", "b", "c"][i] for i in expected.argmax(1)]
