"""Exporting the fine-tuned classifier as a SavedModel that serves raw strings.

The export holds the same tokenizer that wrote the training records (vocab and casing of the encoder), so
served texts become exactly the ids the model was trained on. Loading it needs only
`import tensorflow, tensorflow_text`:

    model = tf.saved_model.load("OUT/export")
    model.signatures["serving_default"](text=tf.constant(["a fine film"]))  # {"probabilities", "label"}

Records written with --long_document=sliding_window make an export that takes whole documents: it cuts them
into the same windows in-graph and aggregates the windows' logits as run_classifier did. A multi-label
export returns the labels at or over their thresholds (tuned on dev with --tune_thresholds, else 0.5).
`text` (and a pair export's `text_b`, as long) must be a 1-D batch of strings: a scalar or a 2-D tensor fails
with an InvalidArgumentError naming `text_must_be_a_1D_batch_of_strings`; wrap a single text as `[text]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bert_tf.encoders.bert import BertConfig, inference_outputs, weight_shapes
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.files import save_savedmodel
from bert_tf.long_documents import aggregate, sliding_windows
from bert_tf.model import BertClassifier, pool
from bert_tf.records import RecordsMetadata
from bert_tf.tokenization import (
    BertTextTokenizer,
    load_vocab,
    num_special_tokens,
    pack_inputs,
    trim_to_longest,
)

CHUNK_SIZE = 32  # rows per model call inside one serving call
# With jit_compile, the shapes a call of at most CHUNK_SIZE texts is padded to: XLA compiles once per input shape,
# so its rows are padded to a power of two and its length to a multiple of 8.
XLA_ROW_BUCKETS = (1, 2, 4, 8, 16, 32)
XLA_LENGTH_MULTIPLE = 8
PACKED_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")


class ServingModel(tf.Module):
    """Raw text (and text_b for pairs) → probabilities and the predicted label name(s).

    `inference_graph` (the default) serves a BertClassifier around a bert_tf-converted encoder through the encoder
    retraced for inference (bert.inference_outputs, on the model's own weights) instead of the encoder SavedModel's
    restored function, and runs a call that fits in one chunk without the chunk loop. Its outputs equal the
    model's to float32 rounding. False gives the export as it was before (bench/serving.py --compare_model_graph
    times both). `einsum_attention` (the default) is bert.forward's: False serves the transposes that training runs
    (bench/serving.py --compare_transposes times both).

    `jit_compile` (with the inference graph) runs the model (encoder and head, not the tokenizer) of a call of at
    most CHUNK_SIZE texts through XLA, compiled at the first call of each padded shape (XLA_ROW_BUCKETS × multiples of XLA_LENGTH_MULTIPLE up to
    max_seq_length); larger calls keep the chunk loop (bench/serving.py --compare_xla times both sizes).
    """

    def __init__(self, model: keras.Model, vocab_file: str, do_lower_case: bool, metadata: RecordsMetadata,
                 aggregation: str = "mean", thresholds: np.ndarray | None = None, global_step: int = 0,
                 temperature: float | None = None, inference_graph: bool = True, jit_compile: bool = False,
                 einsum_attention: bool = True):
        super().__init__()
        self.model = model
        self._inference_graph = inference_graph
        self._encode = inference_encoder(model, einsum_attention) if inference_graph else None
        self._compiled_logits = None
        if jit_compile and self._encode is None:
            logging.warning("--export_xla compiles the inference graph of bert_tf's own encoders only: this export "
                            "serves without XLA")
        elif jit_compile:
            self._compiled_logits = tf.function(self._model_logits, jit_compile=True)
        self._global_step = global_step
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self._tokenizer = BertTextTokenizer(load_vocab(vocab_file), do_lower_case)
        self._seq_length = metadata.max_seq_length
        self._head = metadata.head
        self._label_names = list(metadata.label_names)
        self._paired = metadata.paired
        self._window_stride = metadata.doc_stride if metadata.windowed else None
        # Which tokens a long text keeps, as in its records (tokenization.trim_segments; windows keep them all).
        self._truncation = {} if metadata.windowed else {"truncation": metadata.long_document,
                                                         "head_tokens": metadata.head_tokens}
        self._aggregation = aggregation
        self._temperature = 1.0 if temperature is None else float(temperature)  # --calibrate's; 1: none
        if thresholds is None:
            thresholds = self._head.default_thresholds(len(self._label_names))
        self._thresholds = None if thresholds is None else tf.constant(thresholds, tf.float32)

    @tf.function(input_signature=[])
    def global_step(self) -> tf.Tensor:
        """The training step of the exported weights (best/'s, with --final_weights=best)."""
        return tf.constant(self._global_step, tf.int64)

    @tf.function(input_signature=[])
    def label_names(self) -> tf.Tensor:
        """The columns of `probabilities`: the label names, in order (Python callers read them from the export)."""
        return tf.constant(self._label_names)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in PACKED_INPUTS])
    def packed_logits(self, input_word_ids, input_mask, input_type_ids) -> tf.Tensor:
        """The model alone: packed inputs [batch, length] → float32 logits [batch, k], for export_tflite.

        The serving signature's string ops and chunk loop have no TFLite kernels; export_tflite converts this
        function with a TFLite tokenizer and packing in front of it (see tflite_config).
        """
        inputs = {"input_word_ids": input_word_ids, "input_mask": input_mask, "input_type_ids": input_type_ids}
        return tf.cast(self.model(inputs, training=False), tf.float32)

    @tf.function(input_signature=[])
    def tflite_config(self) -> dict[str, tf.Tensor]:
        """How the serving signature tokenizes, packs and reads the logits, for export_tflite to do the same."""
        thresholds = self._thresholds if self._thresholds is not None else tf.zeros([0], tf.float32)
        return {
            "do_lower_case": tf.constant(self._tokenizer.lower_case),
            "max_seq_length": tf.constant(self._seq_length, tf.int32),
            "task_type": tf.constant(self._head.name),
            "label_names": tf.constant(self._label_names),
            "paired": tf.constant(self._paired),
            "doc_stride": tf.constant(self._window_stride or 0, tf.int32),
            "truncation": tf.constant(self._truncation.get("truncation", "truncate")),
            "head_tokens": tf.constant(-1 if self._truncation.get("head_tokens") is None
                                       else self._truncation["head_tokens"], tf.int32),  # -1: the default
            "aggregation": tf.constant(self._aggregation),
            "thresholds": thresholds,
            "temperature": tf.constant(self._temperature, tf.float32),
        }

    def _model_logits(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The model's float32 logits for packed inputs: through the inference graph when there is one."""
        if self._encode is None:
            return tf.cast(self.model(inputs, training=False), tf.float32)
        # Dropout is the identity at inference, so pooling goes straight to the head.
        features = pool(self._encode(inputs), inputs["input_mask"], self.model.pooling)
        return tf.cast(self.model.head(features), tf.float32)

    def _logits(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The model's logits for packed inputs, run length-sorted in chunks, each trimmed to its longest row.

        A large call mixes short and long texts; padding all of them to the longest would spend most of the
        compute on padding. Sorted chunks of CHUNK_SIZE rows stay close to their own length. With the inference
        graph, a call of at most CHUNK_SIZE rows is that one chunk, without the sort, the loop and the scatter.
        """
        count = tf.shape(inputs["input_mask"])[0]
        if not self._inference_graph:
            return self._chunked_logits(inputs, count)
        return tf.cond(count <= CHUNK_SIZE, lambda: self._chunk_logits(inputs),
                       lambda: self._chunked_logits(inputs, count))

    def _chunk_logits(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The logits of at most CHUNK_SIZE rows, trimmed to their longest; with jit_compile, through XLA, padded
        to one of the shapes it compiles once each (padding rows and tokens are masked out, then dropped)."""
        if self._compiled_logits is None:
            return self._model_logits(trim_to_longest(inputs))
        inputs = trim_to_longest(inputs, XLA_LENGTH_MULTIPLE)
        rows = tf.shape(inputs["input_mask"])[0]
        buckets = tf.constant(XLA_ROW_BUCKETS)
        padded_rows = tf.reduce_min(tf.boolean_mask(buckets, buckets >= rows))
        padded = {name: tf.pad(value, [[0, padded_rows - rows], [0, 0]]) for name, value in inputs.items()}
        return self._compiled_logits(padded)[:rows]

    def _chunked_logits(self, inputs: dict[str, tf.Tensor], count: tf.Tensor) -> tf.Tensor:
        order = tf.argsort(tf.reduce_sum(inputs["input_mask"], axis=1))
        num_chunks = (count + CHUNK_SIZE - 1) // CHUNK_SIZE
        chunks = tf.TensorArray(tf.float32, size=num_chunks, infer_shape=False,
                                element_shape=tf.TensorShape([None, len(self._label_names)]))

        def body(i, chunks):
            rows = order[i * CHUNK_SIZE:(i + 1) * CHUNK_SIZE]
            chunk = trim_to_longest({name: tf.gather(value, rows) for name, value in inputs.items()})
            return i + 1, chunks.write(i, self._model_logits(chunk))

        _, chunks = tf.while_loop(lambda i, _: i < num_chunks, body, (tf.constant(0), chunks))
        return tf.scatter_nd(order[:, None], chunks.concat(), [count, len(self._label_names)])

    def _probabilities(self, segments: list[tf.Tensor]) -> tf.Tensor:
        t = self._tokenizer
        tokens = [t.tokenize(s) for s in segments]
        if not self._window_stride:
            inputs = pack_inputs(tokens, self._seq_length, t.cls_id, t.sep_id, t.pad_id, **self._truncation)
            return self._head.probabilities(self._logits(inputs) / self._temperature)
        window = self._seq_length - num_special_tokens(1)
        windows, document, _ = sliding_windows(tokens[0], window, self._window_stride)
        logits = self._logits(pack_inputs([windows], self._seq_length, t.cls_id, t.sep_id, t.pad_id)) / self._temperature
        return aggregate(logits, document, tf.shape(segments[0])[0], self._head, self._aggregation)

    def _predict(self, segments: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        probs = self._probabilities(segments)
        return {"probabilities": probs, "label": self._head.serving_labels(probs, self._label_names, self._thresholds)}

    def signature(self) -> tf.types.experimental.ConcreteFunction:
        if self._paired:
            fn = tf.function(lambda text, text_b: self._predict(checked_pair(text, text_b)))
            return fn.get_concrete_function(tf.TensorSpec([None], tf.string, name="text"),
                                            tf.TensorSpec([None], tf.string, name="text_b"))
        fn = tf.function(lambda text: self._predict([checked_batch(text)]))
        return fn.get_concrete_function(tf.TensorSpec([None], tf.string, name="text"))


def inference_encoder(model: keras.Model, einsum_attention: bool = True
                      ) -> Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None:
    """bert.inference_outputs on the model's encoder weights, for a BertClassifier around a bert_tf conversion;
    None for any other model or encoder (TF Hub's BERTs), which the model's own call then serves."""
    if not isinstance(model, BertClassifier) or not isinstance(model.encoder, HubEncoder):
        return None
    weights, config = model.encoder.named_weights, model.encoder.bert_config
    if weights is None:
        return None
    config = BertConfig.from_dict(config)
    if any(name not in weights for name in weight_shapes(config)):
        return None
    # A partial, not a tracked attribute: the variables already belong to the model, under their own paths.
    return functools.partial(inference_outputs, config, weights, einsum_attention=einsum_attention)


def checked_batch(strings: tf.Tensor) -> tf.Tensor:
    """`strings`, failing with an InvalidArgumentError unless it is a 1-D batch.

    A signature does not check the shapes it declares: a scalar string reaches the tokenizer, whose kernels
    crash the process. A rank test would not do: the declared shape makes TensorFlow fold it into a constant
    at trace time, while EnsureShape checks the real tensor (its node name is what the error shows).
    """
    return tf.ensure_shape(strings, [None], name="text_must_be_a_1D_batch_of_strings")


def checked_pair(text: tf.Tensor, text_b: tf.Tensor) -> list[tf.Tensor]:
    """Both batches checked as `checked_batch` does, and of one length (else a text would meet another's text_b)."""
    text, text_b = checked_batch(text), checked_batch(text_b)
    same_length = tf.debugging.assert_equal(
        tf.shape(text)[0], tf.shape(text_b)[0], message="text and text_b must hold as many strings")
    with tf.control_dependencies([same_length]):
        return [tf.identity(text), tf.identity(text_b)]


def save_serving_model(serving: ServingModel, export_dir: str) -> str:
    """Writes the serving SavedModel to export_dir, via a temp dir renamed into place when complete."""
    return save_savedmodel(serving, export_dir, signatures={"serving_default": serving.signature()})
