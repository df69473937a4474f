r"""Classifies texts with an exported bert_tf model, using only tensorflow and tensorflow_text.

  python -m bert_tf.classify_text --model=runs/bbc_news/export "A text to classify" "Another one"
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)
from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input

FLAGS = bert_flags.FLAGS


@exits_cleanly_on_bad_input
def main(argv):
    texts = argv[1:]
    if not texts:
        raise InputError("give the texts to classify as arguments")
    if not FLAGS.model or not tf.io.gfile.exists(FLAGS.model):
        raise InputError("no exported model there", flag="model", hint="run run_classifier with --do_export first")
    serve = tf.saved_model.load(FLAGS.model).signatures["serving_default"]
    outputs = serve(text=tf.constant(texts))
    for text, label, probs in zip(texts, outputs["label"].numpy(), outputs["probabilities"].numpy()):
        print(f"{label.decode('utf-8'):>16}  {probs.max():.3f}  {text}")


if __name__ == "__main__":
    bert_flags.define_classify_text_flags()
    app.run(main)
