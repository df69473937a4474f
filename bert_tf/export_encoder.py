"""Converts a Hugging Face or google-research/bert BERT dir into TF Hub-format encoder + preprocess SavedModels.

  python -m bert_tf.export_encoder --source=DIR --output_dir=OUT [--do_lower_case=true|false]

writes OUT/encoder and OUT/preprocess, which `--encoder=OUT` (or tensorflow_hub.load) then uses.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from bert_tf.errors import EXIT_BAD_INPUT

_SOURCE = flags.DEFINE_string(
    "source", None, "Hugging Face BERT dir (config.json, model.safetensors, vocab.txt) or google-research/bert "
    "checkpoint dir (bert_config.json, bert_model.ckpt.*, vocab.txt)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write encoder/ and preprocess/.")
_DO_LOWER_CASE = flags.DEFINE_boolean(
    "do_lower_case", None, "Lower-case input text; by default taken from the source (tokenizer_config.json or dir name)."
)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not _SOURCE.value or not _OUTPUT_DIR.value:
        print("error: --source and --output_dir are both required", file=sys.stderr)
        return EXIT_BAD_INPUT
    from bert_tf.encoders.convert import convert  # TensorFlow loads slowly; not needed for flag errors

    try:
        convert(_SOURCE.value, _OUTPUT_DIR.value, do_lower_case=_DO_LOWER_CASE.value)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    output_dir = os.path.abspath(_OUTPUT_DIR.value)
    print(f"Wrote {os.path.join(output_dir, 'encoder')} and {os.path.join(output_dir, 'preprocess')}")
    return 0


if __name__ == "__main__":
    app.run(main)
