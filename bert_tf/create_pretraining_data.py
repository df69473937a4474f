r"""Masked-LM pretraining records from raw text, to pretrain an encoder further on your own domain's text.

  python -m bert_tf.create_pretraining_data --input_file=corpus.txt,train.csv --encoder=default \
    --max_seq_length=128 --max_predictions_per_seq=20 --masked_lm_prob=0.15 --dupe_factor=5 \
    --random_seed=12345 --output_dir=data/pretrain

Reads tables (their text column) and .txt files (a document per line, or documents separated by blank lines),
cuts each document into chunks of max_seq_length - 2 word-pieces, masks each chunk --dupe_factor times
(masking.py) and writes train.tf_record, eval.tf_record (held-out documents) and metadata.json. Everything is
read and checked before anything is written; files appear in --output_dir only once complete.
"""

from __future__ import annotations

from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import exits_cleanly_on_bad_input
from bert_tf.pretraining_data import (
    PretrainingSettings,
    create_pretraining_data,
    read_documents,
)

# TensorFlow is imported only once the input has passed every check (in create_pretraining_data).

FLAGS = bert_flags.FLAGS


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS, required=("input_file", "output_dir"))
    settings = PretrainingSettings(
        max_seq_length=FLAGS.max_seq_length, max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob, dupe_factor=FLAGS.dupe_factor, random_seed=FLAGS.random_seed,
        whole_word_masking=FLAGS.whole_word_masking, eval_fraction=FLAGS.eval_fraction,
        max_eval_documents=FLAGS.max_eval_documents,
    )
    settings.check()
    documents = read_documents([path for path in FLAGS.input_file if path], FLAGS.text_column)
    metadata = create_pretraining_data(
        documents, FLAGS.output_dir, settings,
        encoder=FLAGS.encoder if FLAGS["encoder"].present or not FLAGS.vocab_file else None,
        vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
    )
    print(f"Wrote {metadata.train_data_size} train examples ({metadata.chunks['train']} chunks × "
          f"{settings.dupe_factor} maskings) and {metadata.eval_data_size} eval examples "
          f"({metadata.documents['eval']} held-out documents) from {len(documents)} documents, "
          f"{sum(metadata.tokens.values())} word-pieces, to {FLAGS.output_dir}")


if __name__ == "__main__":
    bert_flags.define_pretraining_data_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
