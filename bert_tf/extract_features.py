r"""Fixed feature vectors from a pretrained encoder (the feature-based approach; google-research/bert's
extract_features.py, one vector per text instead of JSON per token).

  python -m bert_tf.extract_features --input_file=texts.csv --text_column=text \
    --output_file=features.npy --pooling=mean --layers=-1,-2

Each text becomes the concatenation, over --layers, of that layer's pooling ("cls": the [CLS] vector,
"mean": the average of real tokens); --pooling=pooled gives BERT's pooler output. `.npy` holds a float32
[texts, dims] array; `.parquet` holds the table's columns plus one column `features` of lists.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from absl import app

from bert_tf import files
from bert_tf import flags as bert_flags
from bert_tf import tables
from bert_tf.errors import InputError, exits_cleanly_on_bad_input

FLAGS = bert_flags.FLAGS


def prepare_output(output_file: str) -> None:
    """Creates the output file's directory and tries a file there, so an unwritable place fails before the work."""
    if files.is_remote(output_file):
        import tensorflow as tf

        try:
            tf.io.gfile.makedirs(os.path.dirname(output_file))
        except tf.errors.OpError as error:
            raise InputError(f"cannot write there ({error.message})", flag="output_file") from None
        return
    if os.path.isdir(output_file):
        raise InputError(f"{output_file} is a directory", flag="output_file",
                         hint="give a file name ending in .npy or .parquet")
    directory = os.path.dirname(os.path.abspath(output_file))
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise InputError(f"cannot write here ({error.strerror or error})", file=directory, flag="output_file") from None


def write_features(output_file: str, vectors: np.ndarray, table: tables.TextTable, text_column: str) -> None:
    """Writes the vectors (.npy) or the table with them (.parquet) via a temp file beside output_file, renamed into
    place once complete; a failed write (a full disk) leaves nothing behind. Remote: written locally, then copied."""
    if files.is_remote(output_file):
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix=".features-") as local:
            local_file = os.path.join(local, os.path.basename(output_file))
            write_features(local_file, vectors, table, text_column)
            tf.io.gfile.copy(local_file, output_file, overwrite=True)
        return
    temp = output_file + ".tmp" + os.path.splitext(output_file)[1]
    try:
        if output_file.endswith(".npy"):
            np.save(temp, vectors)
        else:
            import pandas as pd

            pd.DataFrame({"example_id": table.example_ids, text_column: table.texts, "features": list(vectors)}
                         ).to_parquet(temp)
        os.replace(temp, output_file)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS, required=("input_file", "output_file"))
    suffix = os.path.splitext(FLAGS.output_file)[1]
    if suffix not in (".npy", ".parquet"):
        raise InputError("must end in .npy or .parquet", flag="output_file")
    try:
        layers = [int(layer) for layer in FLAGS.layers]
    except ValueError:
        raise InputError(f"'{','.join(FLAGS.layers)}' is not a list of layer numbers", flag="layers") from None
    prepare_output(FLAGS.output_file)
    table = tables.read_text_table(FLAGS.input_file, FLAGS.text_column, [], labels_required=False)
    from bert_tf.features import extract, load_feature_encoder  # TensorFlow: only once the flags are checked

    encoder, tokenizer, num_layers = load_feature_encoder(FLAGS.encoder, FLAGS.vocab_file, FLAGS.do_lower_case,
                                                         FLAGS.max_seq_length)
    if any(not -num_layers <= layer < num_layers for layer in layers):
        raise InputError(f"the encoder has {num_layers} layers", flag="layers", hint=f"use -{num_layers}..{num_layers - 1}")
    vectors = extract(table.texts, encoder, tokenizer, FLAGS.pooling, layers, FLAGS.max_seq_length, FLAGS.batch_size)
    write_features(FLAGS.output_file, vectors, table, FLAGS.text_column)
    print(f"Wrote {vectors.shape[0]} × {vectors.shape[1]} features to {FLAGS.output_file}")


if __name__ == "__main__":
    bert_flags.define_extract_features_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
