"""BERT's masked-language-model head as a Keras 3 layer, and where its pretrained weights come from.

The head is google-research/bert's `get_masked_lm_output`: the encoder's sequence output is gathered at the masked
positions, then transform dense (hidden → hidden) → the encoder's activation (exact erf GELU for BERT) → LayerNorm,
and decoded with the encoder's own word-embedding matrix (logits = h · Eᵀ + output bias). The decoder is tied: it
reads the encoder's variable rather than a copy, so training the head's decoder trains the embeddings, as in BERT.

The head's own weights (dense, LayerNorm, output bias) come from the source checkpoint when it has them: `convert`
writes them beside the SavedModels as `OUT/mlm_head.npz` (google-research names, dense kernel [in, out]), and
`load_mlm_head_weights` reads them back. A checkpoint without them (all-MiniLM-L6-v2, a bare `BertModel`) gives
none, and the head starts from BERT's initialization.
"""

from __future__ import annotations

import io
import os
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bert_tf.encoders.bert import _ACTIVATIONS, BertConfig

HEAD_FILE = "mlm_head.npz"
_DENSE = "cls/predictions/transform/dense"
_LAYER_NORM = "cls/predictions/transform/LayerNorm"
_OUTPUT_BIAS = "cls/predictions/output_bias"
# Each weight's Hugging Face keys, in order of preference, and whether HF stores it transposed ([out, in]). Old
# PyTorch BERT dumps name LayerNorm's weight/bias gamma/beta; `cls.predictions.decoder.bias` is the output bias
# under the name of the decoder it is tied to.
_HF_KEYS = {
    f"{_DENSE}/kernel": (["cls.predictions.transform.dense.weight"], True),
    f"{_DENSE}/bias": (["cls.predictions.transform.dense.bias"], False),
    f"{_LAYER_NORM}/gamma": (["cls.predictions.transform.LayerNorm.weight",
                              "cls.predictions.transform.LayerNorm.gamma"], False),
    f"{_LAYER_NORM}/beta": (["cls.predictions.transform.LayerNorm.bias",
                             "cls.predictions.transform.LayerNorm.beta"], False),
    _OUTPUT_BIAS: (["cls.predictions.bias", "cls.predictions.decoder.bias"], False),
}
# The word-embedding variable's Keras name in HubEncoder (`loading.variable_name`: '/' becomes '_'):
# 'bert/embeddings/word_embeddings' in bert_tf's conversions (google-research names), and
# 'word_embeddings/embeddings' in TF Hub's BERTs (TF Model Garden's BertEncoder).
WORD_EMBEDDING_NAMES = ("bert_embeddings_word_embeddings", "word_embeddings_embeddings")


def head_weight_shapes(hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """The head's own weights by google-research/bert name (the decoder matrix is the encoder's, so not here)."""
    return {
        f"{_DENSE}/kernel": (hidden_size, hidden_size),
        f"{_DENSE}/bias": (hidden_size,),
        f"{_LAYER_NORM}/gamma": (hidden_size,),
        f"{_LAYER_NORM}/beta": (hidden_size,),
        _OUTPUT_BIAS: (vocab_size,),
    }


def find_word_embeddings(encoder: keras.layers.Layer) -> keras.Variable:
    """The encoder's own [vocab, hidden] word-embedding variable (not a copy), found by name among its weights."""
    found = [
        weight for weight in encoder.weights
        if len(weight.shape) == 2
        and any(weight.name == name or weight.name.endswith("_" + name) for name in WORD_EMBEDDING_NAMES)
    ]
    if len(found) != 1:
        matrices = [f"{weight.name} {tuple(weight.shape)}" for weight in encoder.weights if len(weight.shape) == 2]
        problem = "several" if found else "no"
        raise ValueError(
            f"encoder {getattr(encoder, 'handle', encoder.name)} has {problem} word-embedding variable "
            f"(a [vocab, hidden] weight named {' or '.join(WORD_EMBEDDING_NAMES)}) for the MLM head's tied decoder; "
            f"its matrices are: {', '.join(matrices[:6]) or 'none'}{', …' if len(matrices) > 6 else ''}"
        )
    return found[0]


class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM head: logits over the vocab at the masked positions, decoded with the tied embeddings.

    Call it with the encoder's `sequence_output` [batch, seq, hidden] and `masked_lm_positions` [batch, P] (int);
    it returns float32 logits [batch, P, vocab]. Only the P gathered positions are decoded, as in
    google-research/bert, which matters because the vocab-sized matmul is the head's cost.

    `embedding_table` is the encoder's [vocab, hidden] word-embedding variable; the layer reads it but does not
    track it, so it belongs to the encoder only (put both in one model to train it). `initial_weights` maps
    `head_weight_shapes`' names to arrays (as `load_mlm_head_weights` returns them); without it the head has
    BERT's initialization: dense kernel truncated normal (stddev `initializer_range`), the rest ones/zeros.

    >>> table = keras.Variable(np.linspace(-1, 1, 12).reshape(6, 2), dtype="float32", name="word_embeddings")
    >>> head = MaskedLMHead(table, seed=0)
    >>> sequence_output = tf.reshape(tf.range(8, dtype=tf.float32), [1, 4, 2])
    >>> head(sequence_output, tf.constant([[1, 3]])).shape
    TensorShape([1, 2, 6])
    >>> sorted((w.name, tuple(w.shape)) for w in head.weights)  # no [vocab, hidden] weight of its own
    [('layer_norm_beta', (2,)), ('layer_norm_gamma', (2,)), ('output_bias', (6,)), ('transform_bias', (2,)), ('transform_kernel', (2, 2))]
    """

    def __init__(self, embedding_table: keras.Variable | tf.Variable, hidden_act: str = "gelu",
                 layer_norm_eps: float = 1e-12, initial_weights: Mapping[str, np.ndarray] | None = None,
                 initializer_range: float = 0.02, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; use one of {sorted(_ACTIVATIONS)}")
        vocab_size, hidden_size = (int(size) for size in embedding_table.shape)
        # object.__setattr__ bypasses Keras's (and tf.Module's) tracking: the table is the encoder's weight, and
        # tracked here too it would be counted, checkpointed and updated twice.
        object.__setattr__(self, "_embedding_table", embedding_table)
        self.hidden_act, self.layer_norm_eps = hidden_act, layer_norm_eps
        zeros, ones = keras.initializers.Zeros(), keras.initializers.Ones()
        kernel_init = keras.initializers.TruncatedNormal(stddev=initializer_range, seed=seed)
        self.transform_kernel = self.add_weight((hidden_size, hidden_size), kernel_init, name="transform_kernel")
        self.transform_bias = self.add_weight((hidden_size,), zeros, name="transform_bias")
        self.layer_norm_gamma = self.add_weight((hidden_size,), ones, name="layer_norm_gamma")
        self.layer_norm_beta = self.add_weight((hidden_size,), zeros, name="layer_norm_beta")
        self.output_bias = self.add_weight((vocab_size,), zeros, name="output_bias")
        if initial_weights is not None:
            self._assign(initial_weights, head_weight_shapes(hidden_size, vocab_size))
        self.built = True

    @classmethod
    def for_encoder(cls, encoder: keras.layers.Layer, initial_weights: Mapping[str, np.ndarray] | None = None,
                    **kwargs) -> "MaskedLMHead":
        """The head of a `HubEncoder`: its word embeddings, and its activation and LayerNorm epsilon when its
        SavedModel records its config (bert_tf's conversions do; TF Hub's BERTs are exact-GELU, 1e-12)."""
        config = getattr(encoder, "bert_config", None) or {}
        return cls(find_word_embeddings(encoder), hidden_act=config.get("hidden_act", "gelu"),
                   layer_norm_eps=config.get("layer_norm_eps", 1e-12), initial_weights=initial_weights, **kwargs)

    def _named_variables(self) -> dict[str, keras.Variable]:
        """The head's variables by google-research/bert name (head_weight_shapes' order)."""
        return dict(zip(head_weight_shapes(1, 1), (self.transform_kernel, self.transform_bias, self.layer_norm_gamma,
                                                   self.layer_norm_beta, self.output_bias)))

    def named_weights(self) -> dict[str, np.ndarray]:
        """The head's current weights as float32 arrays by google-research/bert name: what `initial_weights`
        takes, `save_mlm_head_weights` writes and `load_mlm_head_weights` reads back."""
        return {name: np.asarray(variable.numpy(), np.float32) for name, variable in self._named_variables().items()}

    def _assign(self, values: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> None:
        missing = sorted(set(shapes) - set(values))
        if missing:
            raise ValueError(f"the MLM head's initial_weights lack {', '.join(missing)}")
        variables = self._named_variables()
        for name, shape in shapes.items():
            if tuple(np.shape(values[name])) != shape:
                raise ValueError(f"the MLM head's {name} has shape {tuple(np.shape(values[name]))}, the encoder's "
                                 f"embeddings need {shape}")
            variables[name].assign(np.asarray(values[name], np.float32))

    def call(self, sequence_output: tf.Tensor, masked_lm_positions: tf.Tensor) -> tf.Tensor:
        dtype = self.compute_dtype
        # [batch, P, hidden]: the batch_dims=1 gather is google-research's gather_indexes without the flattening.
        x = tf.gather(tf.cast(sequence_output, dtype), tf.cast(masked_lm_positions, tf.int32), batch_dims=1)
        x = tf.einsum("bph,hk->bpk", x, tf.cast(self.transform_kernel, dtype)) + tf.cast(self.transform_bias, dtype)
        x = _ACTIVATIONS[self.hidden_act](x)
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        x = (x - mean) * tf.math.rsqrt(variance + self.layer_norm_eps)
        x = x * tf.cast(self.layer_norm_gamma, dtype) + tf.cast(self.layer_norm_beta, dtype)
        logits = tf.einsum("bph,vh->bpv", x, tf.cast(self._embedding_table, dtype))
        # float32 logits: the softmax over a 30k vocab loses too much in bfloat16.
        return tf.cast(logits, tf.float32) + tf.cast(self.output_bias, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_act": self.hidden_act, "layer_norm_eps": self.layer_norm_eps}


def read_source_mlm_head(source_dir: str, config: BertConfig) -> dict[str, np.ndarray] | None:
    """The MLM head's weights in a Hugging Face or google-research/bert dir, by google-research name; None when
    the checkpoint has none (or only part of one, with a warning)."""
    from bert_tf.encoders.convert import detect_source_format, weights_file

    shapes = head_weight_shapes(config.hidden_size, config.vocab_size)
    path = weights_file(source_dir)
    found = {}
    if detect_source_format(source_dir) == "hf":
        from safetensors import safe_open  # reads only the head's tensors, not the whole file again

        with safe_open(path, framework="np") as tensors:
            available = set(tensors.keys())
            for name, (keys, transpose) in _HF_KEYS.items():
                key = next((key for key in keys if key in available), None)
                if key is not None:
                    value = tensors.get_tensor(key).astype(np.float32)
                    found[name] = value.T if transpose else value
    else:
        reader = tf.train.load_checkpoint(path.removesuffix(".index"))
        found = {name: reader.get_tensor(name).astype(np.float32) for name in shapes if reader.has_tensor(name)}
    if not found:
        return None
    if len(found) < len(shapes):
        logging.warning("%s has only part of an MLM head (no %s); it is not kept, and a masked-LM head starts fresh",
                        path, ", ".join(sorted(set(shapes) - set(found))))
        return None
    wrong = {name: value.shape for name, value in found.items() if tuple(value.shape) != shapes[name]}
    if wrong:
        name = next(iter(wrong))
        raise ValueError(f"{path}: the MLM head's {name} has shape {wrong[name]}, the config needs {shapes[name]}")
    return found


def save_mlm_head_weights(weights: Mapping[str, np.ndarray] | None, output_dir: str) -> str | None:
    """Writes `output_dir/mlm_head.npz` (None removes one left by an earlier conversion); returns its path."""
    from bert_tf.files import atomic_write

    path = os.path.join(output_dir, HEAD_FILE)
    if weights is None:
        if os.path.exists(path):  # a re-export of a headless checkpoint must not keep another model's head
            os.remove(path)
        return None
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value, np.float32) for name, value in weights.items()})
    atomic_write(path, buffer.getvalue())
    return path


def _head_file(encoder_dir: str) -> str | None:
    # Both the export's root (OUT) and its encoder SavedModel (OUT/encoder, what resolve_encoder returns) lead
    # to OUT/mlm_head.npz.
    candidates = [os.path.join(encoder_dir, HEAD_FILE)]
    if os.path.basename(os.path.normpath(encoder_dir)) == "encoder":
        candidates.append(os.path.join(os.path.dirname(os.path.normpath(encoder_dir)), HEAD_FILE))
    return next((path for path in candidates if tf.io.gfile.exists(path)), None)


def load_mlm_head_weights(encoder_dir: str) -> dict[str, np.ndarray] | None:
    """The MLM head weights kept with a converted encoder (`OUT` or `OUT/encoder`), by google-research name.

    None, logged, when there are none: the source checkpoint had no MLM head (all-MiniLM-L6-v2), or the encoder
    is a TF Hub URL or another SavedModel; a `MaskedLMHead` then starts from BERT's initialization.
    """
    path = None if encoder_dir.startswith(("http://", "https://")) else _head_file(encoder_dir)
    if path is None:
        logging.info("%s has no pretrained MLM head (%s); the masked-LM head is freshly initialized",
                     encoder_dir, HEAD_FILE)
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        with np.load(io.BytesIO(f.read()), allow_pickle=False) as archive:
            weights = {name: archive[name] for name in archive.files}
    expected = set(head_weight_shapes(1, 1))
    if set(weights) != expected:
        raise ValueError(f"{path} is not an MLM head: it holds {sorted(weights)}, expected {sorted(expected)}")
    return weights

