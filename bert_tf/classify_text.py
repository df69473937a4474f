r"""Classifies texts with an exported bert_tf model, using only tensorflow and tensorflow_text.

  python -m bert_tf.classify_text --model=runs/bbc_news/export "A text to classify" "Another one"
  python -m bert_tf.classify_text --model=runs/bbc_news/export --input_file=texts.txt   # one text a line
  cat texts.txt | python -m bert_tf.classify_text --model=runs/bbc_news/export --input_file=-

Prints one line per input, in input order: the label, its probability and the text. Tabs, newlines and other
control characters in the text and the label are escaped (\t, \n, \\, \x07, …), so line N of the output is always
input N. A pair-task export (trained with --text_b_column) takes each input as TEXT<TAB>TEXT_B: one tab between
the two texts, in an argument as in a line. Empty or whitespace-only texts are refused, naming the input.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import TYPE_CHECKING

from absl import app

from bert_tf import flags as bert_flags
from bert_tf.errors import InputError, exits_cleanly_on_bad_input

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow is imported inside the functions that use it: a misspelt flag answers before its seconds-long import.
FLAGS = bert_flags.FLAGS

BATCH_SIZE = 256  # inputs per serving call: a large file is classified (and printed) a batch at a time
EXPORT_INPUTS = ({"text"}, {"text", "text_b"})
PASS_AN_EXPORT = "pass OUTPUT_DIR/export of a run_classifier --do_export run"
FINE_TUNE_IT = "fine-tune it first (run_classifier --encoder=… --do_train --do_export) and pass that run's export/"
# Written by run_classifier (run_directory.RUN_FILE and BEST_DIR; that module imports Keras, this one must not).
RUN_FILE = "run_config.json"
BEST_DIR = "best"


@dataclasses.dataclass(frozen=True)
class Input:
    """One input (TEXT<TAB>TEXT_B for a pair export) and where it came from: line `number` of `file`, or
    argument `number` when `file` is None."""

    text: str
    number: int
    file: str | None = None

    def error(self, message: str, hint: str | None = None) -> InputError:
        if self.file is not None:
            return InputError(message, file=self.file, row=self.number, hint=hint)
        return InputError(f"argument {self.number}: {message}", hint=hint)


def refuse_what_is_not_an_export(path: str) -> None:
    """One line saying what `path` is instead, and what to pass, for the directories users pass by mistake."""
    import tensorflow as tf

    if not path or not tf.io.gfile.exists(path):
        raise InputError("no exported model there", flag="model", hint="run run_classifier with --do_export first")
    parent = os.path.dirname(path.rstrip("/"))
    if tf.io.gfile.exists(os.path.join(path, RUN_FILE)) or tf.io.gfile.glob(os.path.join(path, "model.ckpt-*.index")):
        raise InputError(f"{path} is a run directory, not an export", flag="model",
                         hint=f"pass {os.path.join(path, 'export')}" + _unless_exported(path))
    if os.path.basename(path.rstrip("/")) == BEST_DIR and tf.io.gfile.exists(os.path.join(parent, RUN_FILE)):
        raise InputError(f"{path} holds a run's best weights (a checkpoint), not an export", flag="model",
                         hint=f"pass {os.path.join(parent, 'export')}" + _unless_exported(parent))
    if tf.io.gfile.exists(os.path.join(path, "encoder", "saved_model.pb")):
        raise InputError(f"{path} is a BERT encoder (encoder/ + preprocess/), not a classifier's export", flag="model",
                         hint=FINE_TUNE_IT)
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise InputError(f"{path} is not a SavedModel (it has no saved_model.pb)", flag="model", hint=PASS_AN_EXPORT)


def _unless_exported(run_dir: str) -> str:
    import tensorflow as tf

    exported = tf.io.gfile.exists(os.path.join(run_dir, "export", "saved_model.pb"))
    return "" if exported else " (the run has none yet: rerun run_classifier on it with --do_export)"


def load_serving_signature(path: str) -> tf.types.experimental.ConcreteFunction:
    """The serving_default of the export at `path` (refuse_what_is_not_an_export(path) passed), checked to be a
    bert_tf export's: it takes text (and text_b)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the export uses)

    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # a damaged SavedModel raises protobuf, OS, value or TensorFlow errors
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot load it ({message})", flag="model", file=path, hint=PASS_AN_EXPORT) from None
    serve = loaded.signatures.get("serving_default")
    inputs = set(serve.structured_input_signature[1]) if serve is not None else set()
    if inputs in EXPORT_INPUTS:
        return serve
    if hasattr(loaded, "bert_config_json") or "input_word_ids" in inputs:
        raise InputError(f"{path} is a BERT encoder, not a classifier's export", flag="model", hint=FINE_TUNE_IT)
    takes = f"a serving_default taking {', '.join(sorted(inputs))}" if serve is not None else "no serving_default"
    raise InputError(f"{path} is a SavedModel with {takes}, not a bert_tf export (which takes text)", flag="model",
                     hint=PASS_AN_EXPORT)


def takes_pairs(serve: tf.types.experimental.ConcreteFunction) -> bool:
    return "text_b" in serve.structured_input_signature[1]


def read_inputs(arguments: list[str], input_file: str | None) -> list[Input]:
    """The texts to classify: the command's arguments, or --input_file's lines (- for stdin)."""
    if arguments and input_file:
        raise InputError("give the texts as arguments or in --input_file, not both")
    if input_file:
        return read_lines(input_file)
    if not arguments:
        raise InputError("give the texts to classify as arguments, or --input_file=FILE (one text a line; - for stdin)")
    return [Input(text, number) for number, text in enumerate(arguments, 1)]


def read_lines(path: str) -> list[Input]:
    """A UTF-8 file's (or stdin's) lines, without their line ends; a final line end makes no extra line."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as error:
        raise InputError(f"cannot read it ({error.strerror or error})", file=name, flag="input_file") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(f"byte {data[error.start]:#04x} is not UTF-8", file=name, row=line,
                         hint="re-save the file as UTF-8") from None
    if not content:
        raise InputError("is empty: it holds no text to classify", file=name, flag="input_file")
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [Input(line.removesuffix("\r"), number, name) for number, line in enumerate(lines, 1)]


def split_inputs(inputs: list[Input], paired: bool) -> tuple[list[str], list[str] | None]:
    """The texts (and a pair export's second texts), refusing an empty text as training does."""
    texts, texts_b = [], [] if paired else None
    for item in inputs:
        parts = item.text.split("\t") if paired else [item.text]
        if paired and len(parts) != 2:
            raise item.error(f"holds {len(parts) - 1} tabs; this pair-task export takes TEXT<TAB>TEXT_B",
                             hint="put exactly one tab between the text and its text_b")
        for part, name in zip(parts, ("text", "text_b")):
            if not part.strip():
                raise item.error(f"empty {name}", hint="give a text, or drop the input")
        texts.append(parts[0])
        if paired:
            texts_b.append(parts[1])
    return texts, texts_b


_BREAKS_A_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")  # control characters, and \ itself
_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(character: str) -> str:
    code = ord(character)
    return _NAMED_ESCAPES.get(character) or (f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")


def one_line(text: str) -> str:
    r"""`text` with whatever would break or move a terminal line escaped (the output is one line per input).

    >>> print(one_line("a\tb\nc\\d\x07\u2028"))
    a\tb\nc\\d\x07\u2028
    """
    return _BREAKS_A_LINE.sub(lambda match: _escape(match[0]), text)


def classify(serve: tf.types.experimental.ConcreteFunction, inputs: list[Input], texts: list[str],
             texts_b: list[str] | None) -> None:
    """Prints `label  probability  input` per input, a batch at a time."""
    import tensorflow as tf

    for start in range(0, len(texts), BATCH_SIZE):
        batch = {"text": tf.constant(texts[start:start + BATCH_SIZE])}
        if texts_b is not None:
            batch["text_b"] = tf.constant(texts_b[start:start + BATCH_SIZE])
        outputs = serve(**batch)
        for item, label, probs in zip(inputs[start:], outputs["label"].numpy(), outputs["probabilities"].numpy()):
            print(f"{one_line(label.decode('utf-8')):>16}  {probs.max():.3f}  {one_line(item.text)}")


@exits_cleanly_on_bad_input
def main(argv):
    refuse_what_is_not_an_export(FLAGS.model)
    inputs = read_inputs(argv[1:], FLAGS.input_file)
    serve = load_serving_signature(FLAGS.model)
    texts, texts_b = split_inputs(inputs, takes_pairs(serve))
    classify(serve, inputs, texts, texts_b)


if __name__ == "__main__":
    bert_flags.define_classify_text_flags()
    app.run(main, flags_parser=bert_flags.parse_or_exit)
