"""Keras 3 layers for TF Hub BERT encoders and preprocessors.

`hub.KerasLayer` is a tf-keras (Keras 2) layer, which Keras 3 models refuse; Keras 3's own `TFSMLayer`
wraps the restored variables under their SavedModel names ('bert/.../kernel:0'), and optimizers then fail
building slot variables from those names. These layers wrap `hub.load(handle)` and expose the restored
variables as Keras weights with legal names, so fine-tuning updates the very variables the SavedModel's
functions read.
"""

from __future__ import annotations

import json

import keras
import tensorflow as tf

from bert_tf.encoders.loading import load_savedmodel, variable_name

ENCODER_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")


class HubEncoder(keras.layers.Layer):
    """A TF Hub BERT encoder (the API of `bert_en_uncased_L-12_H-768_A-12/4`) as a Keras 3 layer.

    Create it inside `strategy.scope()`: the SavedModel's variables are restored as the strategy's
    (mirrored) variables only there.

    Example (the embedded default encoder, converted offline on first use):
    >>> from bert_tf.encoders.registry import resolve_encoder
    >>> encoder = HubEncoder(resolve_encoder("default").encoder)
    >>> ids = tf.constant([[101, 7592, 102, 0]])
    >>> outputs = encoder({"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32),
    ...                    "input_type_ids": tf.zeros_like(ids)})
    >>> outputs["sequence_output"].shape
    TensorShape([1, 4, 384])

    Pass `trainable=False` for the feature-based approach (the encoder stays as published).
    """

    def __init__(self, handle: str, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self._savedmodel = load_savedmodel(handle)
        trainable_ids = {id(v) for v in self._savedmodel.trainable_variables}
        for variable in self._savedmodel.variables:
            # Only weights: TF Hub BERTs also hold a bool `do_lower_case` (ours a string config), which
            # Keras cannot count or summarize.
            if variable.dtype.is_floating:
                self._track_existing(variable, trainable=id(variable) in trainable_ids)
        self.built = True

    @property
    def hidden_size(self) -> int:
        """Width of the outputs, read from the saved function's signature (a call would need a replica context)."""
        traced = self._savedmodel.__call__.concrete_functions[0]
        return int(traced.structured_outputs["pooled_output"].shape[-1])

    @property
    def bert_config(self) -> dict | None:
        """The encoder's `bert_config.json` values when its SavedModel carries them (bert_tf's conversions do; TF
        Hub's BERTs do not), e.g. `hidden_act` and `layer_norm_eps` for a masked-LM head."""
        if not hasattr(self._savedmodel, "bert_config_json"):
            return None
        return json.loads(self._savedmodel.bert_config_json.numpy().decode("utf-8"))

    @property
    def named_weights(self) -> dict[str, tf.Variable] | None:
        """The weights by google-research/bert name (`bert/encoder/layer_0/...`) when the SavedModel is bert_tf's
        conversion (it keeps them as `encoder.weights`, beside `bert_config_json`); None for TF Hub's BERTs."""
        weights = getattr(getattr(self._savedmodel, "encoder", None), "weights", None)
        if weights is None or self.bert_config is None:
            return None
        return dict(weights)

    def _track_existing(self, variable: tf.Variable, trainable: bool) -> None:
        # keras.Variable wraps an existing tf.Variable (and a strategy's MirroredVariable) without copying.
        wrapped = keras.Variable(
            initializer=variable, trainable=trainable, dtype=variable.dtype, shape=variable.shape,
            name=variable_name(variable),
        )
        self._track_variable(wrapped)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        inputs = {name: tf.cast(inputs[name], tf.int32) for name in ENCODER_INPUTS}
        outputs = self._savedmodel(inputs, training=bool(training) and self.trainable)
        return {"pooled_output": outputs["pooled_output"], "sequence_output": outputs["sequence_output"]}

    def get_config(self) -> dict:
        return {**super().get_config(), "handle": self.handle}


class HubPreprocessor(keras.layers.Layer):
    """A TF Hub BERT preprocessor (the API of `bert_en_uncased_preprocess/3`) as a Keras 3 layer.

    Strings → the three int32 encoder inputs at `seq_length`, for one text or a pair:
    >>> from bert_tf.encoders.registry import resolve_encoder
    >>> preprocess = HubPreprocessor(resolve_encoder("default").preprocess, seq_length=8)
    >>> preprocess(tf.constant(["hello world"]))["input_word_ids"].numpy().tolist()
    [[101, 7592, 2088, 102, 0, 0, 0, 0]]
    """

    def __init__(self, handle: str, seq_length: int = 128, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.handle = handle
        self.seq_length = seq_length
        self._savedmodel = load_savedmodel(handle)
        self.built = True

    def call(self, texts: tf.Tensor | list[tf.Tensor]) -> dict[str, tf.Tensor]:
        segments = texts if isinstance(texts, (list, tuple)) else [texts]
        tokenized = [self._savedmodel.tokenize(tf.reshape(segment, [-1])) for segment in segments]
        return self._savedmodel.bert_pack_inputs(tokenized, seq_length=tf.constant(self.seq_length, tf.int32))

    def get_config(self) -> dict:
        return {**super().get_config(), "handle": self.handle, "seq_length": self.seq_length}
