"""Converts a Hugging Face or google-research/bert BERT dir into TF Hub-format encoder + preprocess SavedModels.

  python -m bert_tf.export_encoder --source=DIR --output_dir=OUT [--do_lower_case=true|false]

writes OUT/encoder and OUT/preprocess, which `--encoder=OUT` (or tensorflow_hub.load) then uses, and OUT/mlm_head.npz
when the checkpoint has a masked-LM head (bert_tf/encoders/masked_lm.py).
"""

from __future__ import annotations

import os

from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input

FLAGS = bert_flags.FLAGS


@exits_cleanly_on_bad_input
def main(argv):
    bert_flags.check_command_line(argv, FLAGS, required=("source", "output_dir"))
    from bert_tf.encoders.convert import convert  # TensorFlow loads slowly; not needed for flag errors

    try:
        convert(FLAGS.source, FLAGS.output_dir, do_lower_case=FLAGS.do_lower_case)
    except (ValueError, FileNotFoundError) as error:
        raise InputError(str(error), flag="source") from None
    output_dir = os.path.abspath(FLAGS.output_dir)
    head = os.path.join(output_dir, "mlm_head.npz")  # the checkpoint's masked-LM head, if it has one
    written = [os.path.join(output_dir, part) for part in ("encoder", "preprocess")] + (
        [head] if os.path.isfile(head) else [])
    print(f"Wrote {', '.join(written[:-1])} and {written[-1]}")


if __name__ == "__main__":
    bert_flags.define_export_encoder_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
