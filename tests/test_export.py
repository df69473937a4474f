"""The serving model: a large call runs in length-sorted chunks and returns what one padded batch would; input that
is not a 1-D batch of strings is an error, not a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
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


# Each bad call in one fresh process: a crash (segfault) fails the test instead of killing pytest, and a good
# call after the bad ones shows the process is alive.
BAD_CALLS = """
import json, tensorflow as tf, tensorflow_text
serve = tf.saved_model.load({export_dir!r}).signatures["serving_default"]
errors = []
for call in {calls!r}:
    try:
        serve(**{{name: tf.constant(value) for name, value in call.items()}})
        errors.append(None)
    except tf.errors.InvalidArgumentError as error:
        errors.append(str(error))
good = serve(**{{name: tf.constant([value]) for name, value in {good!r}.items()}})
print(json.dumps({{"errors": errors, "shape": good["probabilities"].shape.as_list()}}))
"""


def save_tiny_export(tiny_encoder: str, export_dir: str, paired: bool) -> str:
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 3, pooling="mean")
    metadata = RecordsMetadata(task_type="multiclass", num_labels=3, label_names=["a", "b", "c"], max_seq_length=16,
                               paired=paired)
    return export.save_serving_model(
        export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata), export_dir)


@pytest.mark.parametrize("paired", [False, True], ids=["single", "pair"])
def test_text_that_is_not_a_1d_batch_is_an_error_not_a_crash(tiny_encoder, tmp_path, paired):
    export_dir = save_tiny_export(tiny_encoder, str(tmp_path / "export"), paired)
    if paired:
        calls = [{"text": "a good film", "text_b": ["x"]}, {"text": ["a good film"], "text_b": "x"},
                 {"text": [["a", "b"]], "text_b": [["c", "d"]]}, {"text": ["a", "b"], "text_b": ["c"]}]
        good = {"text": "the film", "text_b": "was good"}
    else:
        calls = [{"text": "a good film"}, {"text": [["a good film", "bad"]]}]
        good = {"text": "the film"}
    script = BAD_CALLS.format(export_dir=export_dir, calls=calls, good=good)
    served = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    expected = ["text_must_be_a_1D_batch_of_strings"] * (len(calls) - paired) + ["as many strings"] * paired
    refused = [error is not None and part in error for error, part in zip(result["errors"], expected)]
    assert refused == [True] * len(calls)
    assert result["shape"] == [1, 3]


@pytest.mark.parametrize("pooling", ["pooled", "cls", "mean"])
@pytest.mark.parametrize("count", [1, 5, 2 * export.CHUNK_SIZE + 3], ids=["one", "one_chunk", "chunks"])
def test_inference_graph_serves_what_the_model_computes(tiny_encoder, pooling, count):
    # The retraced encoder (export.inference_encoder, its attention by einsum and by transposes), with one chunk
    # skipping the loop, against the model's own call on one padded batch; pairs, so that segment ids other than 0
    # are read too.
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 9)))) for _ in range(2 * count)]
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 3, pooling=pooling)
    model.head.kernel.assign(rng.normal(0, 1, model.head.kernel.shape))  # so the head sees every feature
    metadata = RecordsMetadata(task_type="multiclass", num_labels=3, label_names=["a", "b", "c"], max_seq_length=16,
                               paired=True)
    settings = {"einsum": {}, "transposes": {"einsum_attention": False}, "model": {"inference_graph": False}}
    served = {}
    for name, setting in settings.items():
        serving = export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata, **setting)
        assert (serving._encode is not None) == (name != "model")
        served[name] = serving.signature()(text=tf.constant(texts[:count]),
                                           text_b=tf.constant(texts[count:]))["probabilities"].numpy()
    t = serving._tokenizer
    segments = [t.tokenize(tf.constant(part)) for part in (texts[:count], texts[count:])]
    expected = tf.nn.softmax(model(pack_inputs(segments, 16, t.cls_id, t.sep_id, t.pad_id), training=False)).numpy()
    for name in settings:
        np.testing.assert_allclose(served[name], expected, atol=1e-5, err_msg=name)


def test_the_inference_graph_is_only_for_bert_tf_encoders():
    # Other models keep their own call, as do BertClassifiers around TF Hub's BERTs (HubEncoder.named_weights is
    # None without the bert_config_json that bert_tf's conversions carry).
    assert export.inference_encoder(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None


@pytest.mark.parametrize("count", [1, 5, 2 * export.CHUNK_SIZE + 3], ids=["one", "one_chunk", "chunks"])
def test_the_xla_export_serves_what_the_model_computes(tiny_encoder, tmp_path, count):
    # Saved and loaded back: the padded shapes XLA compiles (rows to a power of two, length to a multiple of
    # XLA_LENGTH_MULTIPLE) change no probability, and calls of at most CHUNK_SIZE texts do run through XLA.
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 14)))) for _ in range(count)]
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 3, pooling="mean")
    model.head.kernel.assign(rng.normal(0, 1, model.head.kernel.shape))
    metadata = RecordsMetadata(task_type="multiclass", num_labels=3, label_names=["a", "b", "c"], max_seq_length=16)
    serving = export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata, jit_compile=True)
    signature = serving.signature()
    compiled = [function.attr["_XlaMustCompile"].b
                for function in signature.graph.as_graph_def().library.function]
    assert any(compiled)
    export_dir = export.save_serving_model(serving, str(tmp_path / "export"))
    served = tf.saved_model.load(export_dir).signatures["serving_default"](text=tf.constant(texts))
    t = serving._tokenizer
    expected = tf.nn.softmax(model(pack_inputs([t.tokenize(tf.constant(texts))], 16, t.cls_id, t.sep_id, t.pad_id),
                                   training=False)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
