"""A pure-TensorFlow BERT encoder (tf.Module of plain tf.Variables) and its configuration.

Weights are named and laid out as in google-research/bert checkpoints: dense kernels are
[in, out], LayerNorm scale/offset are `gamma`/`beta`. The forward pass matches Hugging Face
`transformers.BertModel` in float32 (exact erf GELU, the config's LayerNorm epsilon).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

INPUT_KEYS = ("input_word_ids", "input_mask", "input_type_ids")

# dropout(x, rate): where BERT trains with dropout; inference passes `_no_dropout`.
Dropout = Callable[[tf.Tensor, float], tf.Tensor]

# google-research/bert adds this to the attention scores of padding tokens; softmax then gives them
# exactly 0 in float32, the same as Hugging Face's dtype-minimum mask.
_MASK_BIAS = -10000.0

_ACTIVATIONS = {
    # PyTorch's form of the exact GELU. tf.nn.gelu(approximate=False) computes 0.5·x·erfc(−x/√2), and TensorFlow's
    # bfloat16 Erfc kernel is several times slower than its Erf (README Results: the bf16 train step). The price, in
    # bfloat16 only: below x ≈ −2.5, erf(x/√2) rounds to within a bfloat16 step (2⁻⁸) of −1, so GELU(x) there is
    # off by up to about |x|·2⁻¹⁰ (0.003 at x = −3), the size of bfloat16's own rounding of unit-scale values.
    "gelu": lambda x: 0.5 * x * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0)))),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
}


@dataclasses.dataclass
class BertConfig:
    """Hyperparameters of a BERT encoder, as in `bert_config.json` / Hugging Face `config.json`."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BertConfig":
        """Builds a config from a dict, ignoring keys that are not BERT hyperparameters."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        """Reads `bert_config.json` or a Hugging Face `config.json`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def weight_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of the encoder, by google-research/bert variable name, in creation order."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert/embeddings/word_embeddings": (config.vocab_size, hidden),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, hidden),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, hidden),
        "bert/embeddings/LayerNorm/gamma": (hidden,),
        "bert/embeddings/LayerNorm/beta": (hidden,),
    }
    dense_shapes = {
        "attention/self/query": (hidden, hidden),
        "attention/self/key": (hidden, hidden),
        "attention/self/value": (hidden, hidden),
        "attention/output/dense": (hidden, hidden),
        "intermediate/dense": (hidden, intermediate),
        "output/dense": (intermediate, hidden),
    }
    for layer in range(config.num_hidden_layers):
        prefix = f"bert/encoder/layer_{layer}/"
        for name, kernel_shape in dense_shapes.items():
            shapes[prefix + name + "/kernel"] = kernel_shape
            shapes[prefix + name + "/bias"] = kernel_shape[1:]
            if name in ("attention/output/dense", "output/dense"):
                layer_norm = prefix + name.replace("dense", "LayerNorm")
                shapes[layer_norm + "/gamma"] = (hidden,)
                shapes[layer_norm + "/beta"] = (hidden,)
    shapes["bert/pooler/dense/kernel"] = (hidden, hidden)
    shapes["bert/pooler/dense/bias"] = (hidden,)
    return shapes


def _initial_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    # BERT's own initialization (truncated normal, stddev 0.02), for training from scratch.
    if name.endswith("/gamma"):
        return np.ones(shape, np.float32)
    if name.endswith(("/beta", "/bias")):
        return np.zeros(shape, np.float32)
    return tf.random.truncated_normal(shape, stddev=0.02).numpy()


class BertEncoder(tf.Module):
    """BERT: embeddings, `num_hidden_layers` Transformer layers and the pooler.

    Call with a dict of int32 [batch, seq] tensors `input_word_ids`, `input_mask`, `input_type_ids`;
    returns the TF Hub BERT outputs `pooled_output`, `sequence_output`, `encoder_outputs`, `default`.
    """

    def __init__(self, config: BertConfig, weights: Mapping[str, np.ndarray] | None = None, name: str = "bert"):
        """`weights` maps every name of `weight_shapes(config)` to an array; without it, BERT's random init."""
        super().__init__(name=name)
        self.config = config
        shapes = weight_shapes(config)
        if weights is not None:
            missing = [key for key in shapes if key not in weights]
            if missing:
                raise ValueError(f"{len(missing)} BERT weights are missing, e.g. {missing[:3]}")
            wrong = [key for key, shape in shapes.items() if tuple(weights[key].shape) != shape]
            if wrong:
                key = wrong[0]
                raise ValueError(
                    f"{len(wrong)} BERT weights do not fit the config, e.g. {key} has shape "
                    f"{tuple(weights[key].shape)}, expected {shapes[key]}"
                )
        self.weights = {
            key: tf.Variable(
                np.asarray(weights[key], np.float32) if weights is not None else _initial_value(key, shape),
                name=key,
            )
            for key, shape in shapes.items()
        }

    def __call__(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> dict[str, Any]:
        # Each dropout op gets its own fixed op seed. Without one, a traced random op is seeded from the OS
        # when the SavedModel loads, and two runs with the same --seed would train differently.
        seeds = itertools.count(1)

        def dropout(x: tf.Tensor, rate: float) -> tf.Tensor:
            return tf.nn.dropout(x, rate=rate, seed=next(seeds)) if rate > 0 else x

        outputs = forward(self.config, self.weights, inputs, dropout if training else _no_dropout)
        return {**outputs, "default": outputs["pooled_output"]}


def _no_dropout(x: tf.Tensor, rate: float) -> tf.Tensor:
    return x


def forward(config: BertConfig, weights: Mapping[str, tf.Variable], inputs: Mapping[str, tf.Tensor],
            dropout: Dropout = _no_dropout, einsum_attention: bool = False) -> dict[str, Any]:
    """BERT's forward pass over its weights by name: `pooled_output`, `sequence_output`, `encoder_outputs`.

    `dropout(x, rate)` is applied where BERT trains with dropout; the default (inference) leaves it out.
    `einsum_attention` computes the attention products with einsum instead of transposes and matmuls: the same
    values; it serves small calls faster and large ones slower, and the transposes train faster (README Results:
    einsum attention).
    Activations stay [tokens, hidden] between the layers, rather than a `tensordot` on [batch, seq, hidden]: each
    dense layer is then one MatMul and BiasAdd (its gradient one BiasAddGrad), which Grappler's remapper fuses into
    one kernel (with oneDNN, the GELU too).
    """
    word_ids = inputs["input_word_ids"]
    batch, seq_length = tf.shape(word_ids)[0], tf.shape(word_ids)[1]
    tf.debugging.assert_less_equal(
        seq_length,
        config.max_position_embeddings,
        message=f"sequence is longer than max_position_embeddings={config.max_position_embeddings}",
    )
    embeddings = (
        tf.gather(weights["bert/embeddings/word_embeddings"], word_ids)
        + tf.gather(weights["bert/embeddings/token_type_embeddings"], inputs["input_type_ids"])
        + weights["bert/embeddings/position_embeddings"][tf.newaxis, :seq_length]
    )
    x = tf.reshape(_layer_norm(config, weights, embeddings, "bert/embeddings/LayerNorm"), [-1, config.hidden_size])
    x = dropout(x, config.hidden_dropout_prob)
    mask = tf.cast(inputs["input_mask"], tf.float32)
    attention_bias = (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * _MASK_BIAS
    encoder_outputs = []
    for layer in range(config.num_hidden_layers):
        x = _transformer_layer(config, weights, x, attention_bias, (batch, seq_length),
                               f"bert/encoder/layer_{layer}/", dropout, einsum_attention)
        encoder_outputs.append(tf.reshape(x, [batch, seq_length, config.hidden_size]))
    sequence = encoder_outputs[-1]
    pooled = tf.tanh(_dense(weights, sequence[:, 0], "bert/pooler/dense"))
    return {"pooled_output": pooled, "sequence_output": sequence, "encoder_outputs": encoder_outputs}


def inference_outputs(config: BertConfig, weights: Mapping[str, tf.Variable], inputs: Mapping[str, tf.Tensor],
                      einsum_attention: bool = True) -> dict[str, tf.Tensor]:
    """`forward` without dropout: `sequence_output` and `pooled_output` (the export's serving graph)."""
    outputs = forward(config, weights, inputs, einsum_attention=einsum_attention)
    return {"sequence_output": outputs["sequence_output"], "pooled_output": outputs["pooled_output"]}


def _transformer_layer(config: BertConfig, weights: Mapping[str, tf.Variable], x: tf.Tensor,
                       attention_bias: tf.Tensor, batch_and_length: tuple, prefix: str,
                       dropout: Dropout, einsum_attention: bool) -> tf.Tensor:
    """One Transformer layer on x of [batch * seq, hidden]."""
    heads = config.num_attention_heads
    head_size = config.hidden_size // heads
    batch, seq_length = batch_and_length
    query, key, value = (tf.reshape(_dense(weights, x, prefix + "attention/self/" + name),
                                    [batch, seq_length, heads, head_size]) for name in ("query", "key", "value"))
    context = _attention(query, key, value, attention_bias, config.attention_probs_dropout_prob, dropout,
                         einsum_attention)
    context = tf.reshape(context, [-1, config.hidden_size])
    attention = dropout(_dense(weights, context, prefix + "attention/output/dense"), config.hidden_dropout_prob)
    x = _layer_norm(config, weights, attention + x, prefix + "attention/output/LayerNorm")
    intermediate = _ACTIVATIONS[config.hidden_act](_dense(weights, x, prefix + "intermediate/dense"))
    output = dropout(_dense(weights, intermediate, prefix + "output/dense"), config.hidden_dropout_prob)
    return _layer_norm(config, weights, output + x, prefix + "output/LayerNorm")


def _attention(query: tf.Tensor, key: tf.Tensor, value: tf.Tensor, attention_bias: tf.Tensor, dropout_rate: float,
               dropout: Dropout, einsum_attention: bool) -> tf.Tensor:
    """Scaled dot-product attention of [batch, seq, heads, size] tensors, in that layout."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    if einsum_attention:
        scores = tf.einsum("bqhd,bkhd->bhqk", query, key) * scale + attention_bias
        probs = dropout(tf.nn.softmax(scores, axis=-1), dropout_rate)
        return tf.einsum("bhqk,bkhd->bqhd", probs, value)
    query, key, value = (tf.transpose(t, [0, 2, 1, 3]) for t in (query, key, value))  # [batch, heads, seq, size]
    scores = tf.matmul(query, key, transpose_b=True) * scale + attention_bias
    probs = dropout(tf.nn.softmax(scores, axis=-1), dropout_rate)
    return tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3])


def _dense(weights: Mapping[str, tf.Variable], x: tf.Tensor, name: str) -> tf.Tensor:
    # bias_add, not `+`: the remapper fuses MatMul with a BiasAdd only.
    return tf.nn.bias_add(tf.matmul(x, weights[name + "/kernel"]), weights[name + "/bias"])


def _layer_norm(config: BertConfig, weights: Mapping[str, tf.Variable], x: tf.Tensor, name: str) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    normalized = (x - mean) * tf.math.rsqrt(variance + config.layer_norm_eps)
    return normalized * weights[name + "/gamma"] + weights[name + "/beta"]
