r"""Fine-tunes a TF Hub BERT encoder on TFRecords from create_tfrecords; evaluates, predicts and exports.

  python -m bert_tf.run_classifier --data_dir=data/bbc_news --output_dir=runs/bbc_news \
    --do_train --do_eval --do_predict --do_export

Runs on one CPU/GPU, several GPUs, several machines (TF_CONFIG) or a TPU (--use_tpu --tpu_name=…) with the
same code. Leaves in --output_dir: model.ckpt-N checkpoints, train/ and eval/ TensorBoard logs,
eval_results.txt, test_results.tsv, predictions.tsv and export/ (a SavedModel serving raw strings).
The steps themselves are bert_tf.run's; this module turns flags into its RunConfig and prints what they did.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input
from bert_tf.run_config import RunConfig, check_settings

if TYPE_CHECKING:
    from bert_tf.run import ClassifierRun

FLAGS = bert_flags.FLAGS


def profile_steps(value: list[str] | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        start, end = (int(part) for part in value)
    except ValueError:
        start = end = -1
    if not 0 <= start < end:
        raise InputError(f"'{','.join(value)}' is not START,END", flag="profile_steps", hint="e.g. --profile_steps=20,25")
    return start, end


def config_from_flags() -> RunConfig:
    """Every RunConfig field from the flag of the same name."""
    values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(RunConfig)}
    return RunConfig(**{**values, "profile_steps": profile_steps(FLAGS.profile_steps)})


def print_results(title: str, result: dict) -> None:
    print(f"***** {title} results *****")
    for key in sorted(result):
        print(f"  {key} = {result[key]}")


def run_steps(run: "ClassifierRun", config: RunConfig) -> None:
    """Train (or restore), then evaluate, predict and export, as the do_ flags say, printing what each did."""
    if config.do_train:
        run.train()
    else:
        run.restore()
    if config.do_eval:
        result, report_path = run.evaluate()
        if run.chief:
            print_results("Eval", result)
            if report_path:
                print(f"Report: {report_path}")
    if config.do_predict:
        predictions, result = run.predict()
        if run.chief:
            print(f"Wrote {len(predictions.example_ids)} predictions to "
                  f"{os.path.join(config.output_dir, 'test_results.tsv')}")
            if result is not None:
                print_results("Test", result)
    if config.do_export:
        path = run.export()
        if path:
            print(f"Exported the serving SavedModel to {path}")


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS)
    config = config_from_flags()
    if not (config.do_train or config.do_eval or config.do_predict or config.do_export):
        raise InputError("nothing to do", hint="pass at least one of --do_train, --do_eval, --do_predict, --do_export")
    check_settings(config)
    from bert_tf.run import ClassifierRun  # only now: TensorFlow takes seconds to import, a flag typo answers at once

    with ClassifierRun(config) as run:
        run_steps(run, config)
    print(f"TensorBoard: tensorboard --logdir {config.output_dir}")


if __name__ == "__main__":
    bert_flags.define_classifier_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
