"""Exporting the fine-tuned classifier as a SavedModel that serves raw strings.

The export holds the same tokenizer that wrote the training records (vocab and casing of the encoder), so
served texts become exactly the ids the model was trained on. Loading it needs only
`import tensorflow, tensorflow_text`:

    model = tf.saved_model.load("OUT/export")
    model.signatures["serving_default"](text=tf.constant(["a fine film"]))  # {"probabilities", "label"}
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bert_tf.files import save_savedmodel
from bert_tf.model import probabilities
from bert_tf.tfrecords import trim_to_longest
from bert_tf.tokenization import BertTextTokenizer, load_vocab, pack_inputs


class ServingModel(tf.Module):
    """Raw text (and text_b for pairs) → probabilities and the predicted label name(s)."""

    def __init__(self, model: keras.Model, vocab_file: str, do_lower_case: bool, metadata: dict):
        super().__init__()
        self.model = model
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self._tokenizer = BertTextTokenizer(load_vocab(vocab_file), do_lower_case)
        self._seq_length = metadata["max_seq_length"]
        self._task_type = metadata["task_type"]
        self._label_names = list(metadata["label_names"])
        self._paired = bool(metadata.get("paired"))

    def _predict(self, segments: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        t = self._tokenizer
        inputs = pack_inputs([t.tokenize(s) for s in segments], self._seq_length, t.cls_id, t.sep_id, t.pad_id)
        inputs = trim_to_longest(inputs)  # one short sentence need not pay for max_seq_length
        probs = probabilities(tf.cast(self.model(inputs, training=False), tf.float32), self._task_type)
        names = tf.constant(self._label_names)
        if self._task_type == "multiclass":
            label = tf.gather(names, tf.argmax(probs, axis=-1))
        elif self._task_type == "multilabel":
            chosen = tf.ragged.boolean_mask(tf.broadcast_to(names, tf.shape(probs)), probs >= 0.5)
            label = tf.strings.reduce_join(chosen, axis=-1, separator=",")
        else:
            label = tf.strings.as_string(probs[:, 0])
        return {"probabilities": probs, "label": label}

    def signature(self) -> tf.types.experimental.ConcreteFunction:
        if self._paired:
            fn = tf.function(lambda text, text_b: self._predict([text, text_b]))
            return fn.get_concrete_function(tf.TensorSpec([None], tf.string, name="text"),
                                            tf.TensorSpec([None], tf.string, name="text_b"))
        fn = tf.function(lambda text: self._predict([text]))
        return fn.get_concrete_function(tf.TensorSpec([None], tf.string, name="text"))


def export_classifier(model: keras.Model, vocab_file: str, do_lower_case: bool, metadata: dict, export_dir: str) -> str:
    """Writes the serving SavedModel to export_dir, via a temp dir renamed into place when complete."""
    serving = ServingModel(model, vocab_file, do_lower_case, metadata)
    return save_savedmodel(serving, export_dir, signatures={"serving_default": serving.signature()})
