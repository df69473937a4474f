r"""Further masked-LM pretraining of an encoder on create_pretraining_data's records; exports the encoder.

  python -m bert_tf.run_pretraining --data_dir=data/pretrain --output_dir=runs/pretrain \
    --encoder=default --num_train_steps=1000

Trains the encoder with BERT's masked-LM head on train.tf_record, on one CPU/GPU, several GPUs, several machines
(TF_CONFIG) or a TPU, with run_classifier's training loop (checkpoints, resume, SIGTERM, TensorBoard). Leaves in
--output_dir: model.ckpt-N checkpoints, train/ and eval/ TensorBoard logs, eval_results.txt (the held-out
eval.tf_record before and after training) and export/: encoder/, preprocess/ and mlm_head.npz, a TF Hub-format
encoder for --encoder=OUTPUT_DIR/export (create_tfrecords, run_classifier, extract_features, run_pretraining).
The steps themselves are bert_tf.pretraining's; this module turns flags into its PretrainingConfig.
"""

from __future__ import annotations

import dataclasses

from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input
from bert_tf.pretraining_config import PretrainingConfig, check_settings
from bert_tf.pretraining_data import read_metadata
from bert_tf.run_classifier import print_results

FLAGS = bert_flags.FLAGS


def config_from_flags() -> PretrainingConfig:
    """Every PretrainingConfig field from the flag of the same name."""
    for name in ("vocab_file", "do_lower_case"):  # the encoder group's; the export keeps the encoder's own
        if FLAGS[name].present:
            raise InputError("is not for run_pretraining: the records and the export use --encoder's vocab and casing",
                             flag=name)
    return PretrainingConfig(**{field.name: FLAGS[field.name].value for field in dataclasses.fields(PretrainingConfig)})


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS)
    config = config_from_flags()
    check_settings(config)
    read_metadata(config.data_dir)  # classification records or none: one line before TensorFlow loads
    from bert_tf.pretraining import PretrainingRun  # only now: TensorFlow takes seconds to import

    with PretrainingRun(config) as run:
        step = run.train()
        result = run.evaluate()
        if run.chief and result is not None:
            print_results("Eval", result)
        path = run.export()
    if path:
        print(f"Exported the encoder of step {step} to {path} (encoder/, preprocess/, mlm_head.npz): use it as "
              f"--encoder={path}")
    print(f"TensorBoard: tensorboard --logdir {config.output_dir}")


if __name__ == "__main__":
    bert_flags.define_pretraining_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
