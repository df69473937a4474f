"""--layerwise_lr_decay: each encoder variable trains at its layer's defined rate, the head at the full one."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG, assert_one_error_line, run_classifier

from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.model import BertClassifier
from bert_tf.optimization import FusedAdamW, layerwise_learning_rates

DECAY = 0.5


def expected_factor(name: str, num_layers: int) -> float:
    """The rule, written out for the google-research names of a converted encoder."""
    for layer in range(num_layers):
        if f"bert_encoder_layer_{layer}_" in name:
            return DECAY ** (num_layers - layer)
    if name.startswith("bert_embeddings_"):
        return DECAY ** (num_layers + 1)
    return 1.0  # the pooler and the head


def test_one_step_moves_each_variable_at_its_layers_rate(tiny_encoder):
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), 2, pooling="pooled")
    factors = layerwise_learning_rates(model.encoder.trainable_variables, DECAY)
    learning_rate = 1e-3
    optimizer = FusedAdamW(learning_rate=learning_rate, weight_decay=0.0, epsilon=1e-12,
                           learning_rate_multipliers=factors)
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    # Adam's first step moves every weight by lr × gradient / |gradient|: here exactly its learning rate.
    optimizer.apply([tf.ones_like(variable) for variable in model.trainable_variables], model.trainable_variables)
    layers = TINY_CONFIG["num_hidden_layers"]
    seen = set()
    for variable, start in zip(model.trainable_variables, before):
        rate = expected_factor(variable.name, layers) * learning_rate
        np.testing.assert_allclose(start - variable.numpy(), rate, rtol=1e-4, err_msg=variable.path)
        seen.add(round(rate / learning_rate, 6))
    assert seen == {1.0, DECAY, DECAY**2, DECAY**3}  # head/pooler, top layer, lowest layer, embeddings


def test_tf_hub_bert_names_say_their_layer():
    names = ["word_embeddings/embeddings", "position_embedding/embeddings", "embeddings/layer_norm/gamma",
             "transformer/layer_0/self_attention/query/kernel", "transformer/layer_11/output/bias",
             "pooler_transform/kernel"]
    variables = [types.SimpleNamespace(name=name.replace("/", "_"), path=name) for name in names]
    factors = layerwise_learning_rates(variables, 0.9)
    assert factors == pytest.approx({
        "word_embeddings/embeddings": 0.9**13, "position_embedding/embeddings": 0.9**13,
        "embeddings/layer_norm/gamma": 0.9**13, "transformer/layer_0/self_attention/query/kernel": 0.9**12,
        "transformer/layer_11/output/bias": 0.9,
    })
    with pytest.raises(ValueError, match="cannot tell which layer .*'mystery_kernel'"):
        layerwise_learning_rates([types.SimpleNamespace(name="mystery_kernel", path="mystery/kernel")], 0.9)


def test_decay_out_of_range_is_one_line(tiny_records, tiny_encoder, tmp_path):
    result = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), "--do_train",
                            "--layerwise_lr_decay=1.5", check=False)
    assert_one_error_line(result, "--layerwise_lr_decay: 1.5 is out of range")
