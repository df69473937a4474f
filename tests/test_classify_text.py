"""classify_text: texts from arguments, a file or stdin, one output line per input, pair exports, and one error
line for an empty text or a --model that is not an export."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import assert_one_error_line

from bert_tf import classify_text, export
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.errors import InputError
from bert_tf.model import BertClassifier
from bert_tf.records import RecordsMetadata

# Label names holding a tab, a newline and a backslash: the output escapes them as it does the texts.
ODD_LABELS = ["a\tb", "c\nd", "e\\f"]
OUTPUT_LINE = re.compile(r" *(\S+)  (\d\.\d{3})  (.*)")


def save_export(tiny_encoder: str, export_dir: str, paired: bool, label_names: list[str]) -> str:
    """An export of the tiny encoder with an untrained head: what it predicts does not matter here."""
    model = BertClassifier(HubEncoder(os.path.join(tiny_encoder, "encoder")), len(label_names), pooling="mean")
    metadata = RecordsMetadata(task_type="multiclass", num_labels=len(label_names), label_names=label_names,
                               max_seq_length=16, paired=paired)
    serving = export.ServingModel(model, os.path.join(tiny_encoder, "vocab.txt"), True, metadata)
    return export.save_serving_model(serving, export_dir)


@pytest.fixture(scope="module")
def exports(tiny_encoder, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("exports")
    return {"single": save_export(tiny_encoder, str(tmp / "single"), False, ODD_LABELS),
            "pair": save_export(tiny_encoder, str(tmp / "pair"), True, ["no", "yes"])}


def run_classify_text(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_tf.classify_text", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def output_lines(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(label, text) of each output line, as printed (escaped)."""
    assert result.returncode == 0, result.stderr[-3000:]
    matches = [OUTPUT_LINE.fullmatch(line) for line in result.stdout.splitlines()]
    assert all(matches), result.stdout
    return [(match[1], match[3]) for match in matches]


def test_arguments_file_and_stdin_give_one_escaped_line_per_input(exports, tmp_path):
    texts = ["the film was good", "two\nlines", "a\ttab and a \\ backslash"]
    escaped = ["the film was good", "two\\nlines", "a\\ttab and a \\\\ backslash"]
    model = f"--model={exports['single']}"
    from_arguments = output_lines(run_classify_text(model, *texts))
    assert [text for _, text in from_arguments] == escaped
    assert {label for label, _ in from_arguments} <= {"a\\tb", "c\\nd", "e\\\\f"}

    lines = "\ufeffthe film was good\r\na\ttab and a \\ backslash\n"  # a BOM and a Windows line end are fine
    (tmp_path / "texts.txt").write_text(lines, encoding="utf-8")
    from_file = output_lines(run_classify_text(model, f"--input_file={tmp_path / 'texts.txt'}"))
    from_stdin = output_lines(run_classify_text(model, "--input_file=-", stdin=lines[1:]))
    assert from_file == from_stdin == [from_arguments[0], from_arguments[2]]


def test_pair_export_takes_tab_separated_pairs(exports):
    result = output_lines(run_classify_text(f"--model={exports['pair']}", "the film\twas good", "a plot\tis bad"))
    assert [text for _, text in result] == ["the film\\twas good", "a plot\\tis bad"]
    assert {label for label, _ in result} <= {"no", "yes"}


def make_run_directory(tmp_path) -> str:
    """What run_classifier leaves in --output_dir, as far as classify_text looks: run_config.json and best/."""
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "run_config.json").write_text("{}")
    (run / "best" / "model.ckpt.index").write_bytes(b"")
    return str(run)


def damaged_export(tmp_path) -> str:
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "saved_model.pb").write_bytes(b"\x00 not a protobuf")
    return str(tmp_path / "damaged")


# Through the command line: the error line and exit code of main, one case of each kind of check.
BAD_COMMANDS = {
    # name: (--model: an export's key or a function of (tmp_path, tiny_encoder); arguments; substrings of the error)
    "empty argument": ("single", ["good", "  "], ["argument 2", "empty text"]),
    "pair without a tab": ("pair", ["good\tfilm", "no tab here"], ["argument 2", "0 tabs", "TEXT<TAB>TEXT_B"]),
    "run directory": (lambda tmp, encoder: make_run_directory(tmp), ["good"],
                      ["--model", "is a run directory", "pass {tmp}/run/export", "--do_export"]),
    "encoder SavedModel": (lambda tmp, encoder: os.path.join(encoder, "encoder"), ["good"],
                           ["--model", "BERT encoder", "fine-tune it"]),
    "damaged SavedModel": (lambda tmp, encoder: damaged_export(tmp), ["good"],
                           ["--model", "damaged", "cannot load it"]),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_input_is_one_error_line(exports, tiny_encoder, tmp_path, case):
    model, arguments, expected = BAD_COMMANDS[case]
    model_dir = exports[model] if isinstance(model, str) else model(tmp_path, tiny_encoder)
    result = run_classify_text(f"--model={model_dir}", *arguments)
    assert_one_error_line(result, *(part.format(tmp=tmp_path) for part in expected))
    assert result.stdout == ""


# The other checks, called directly (a command line each would cost a TensorFlow start).
BAD_FILES = {
    # name: (the input file's bytes, paired, substrings of the error)
    "empty line": (b"good\n\t \nbad\n", False, ["in.txt", "row 2", "empty text"]),
    "not UTF-8": ("good\ncaf\u00e9\n".encode("latin-1"), False, ["in.txt", "row 2", "0xe9", "not UTF-8"]),
    "empty file": (b"", False, ["--input_file", "in.txt", "is empty"]),
    "pair with an empty text_b": (b"good\tfilm\nbad\t \n", True, ["in.txt", "row 2", "empty text_b"]),
    "pair with two tabs": (b"good\tfilm\tagain\n", True, ["in.txt", "row 1", "2 tabs"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_input_file_names_its_line(tmp_path, case):
    data, paired, expected = BAD_FILES[case]
    (tmp_path / "in.txt").write_bytes(data)
    with pytest.raises(InputError) as raised:
        classify_text.split_inputs(classify_text.read_inputs([], str(tmp_path / "in.txt")), paired)
    assert all(part in str(raised.value) for part in expected), str(raised.value)


def test_inputs_come_from_arguments_or_a_file_not_both(tmp_path):
    with pytest.raises(InputError, match="not both"):
        classify_text.read_inputs(["good"], str(tmp_path / "in.txt"))
    with pytest.raises(InputError, match="--input_file, .*nope.txt: cannot read it"):
        classify_text.read_inputs([], str(tmp_path / "nope.txt"))
    with pytest.raises(InputError, match="give the texts to classify"):
        classify_text.read_inputs([], None)


@pytest.mark.parametrize("kind", ["missing", "best weights", "encoder directory", "not a SavedModel"])
def test_model_that_is_not_an_export_says_what_it_is(tiny_encoder, tmp_path, kind):
    model_dir, expected = {
        "missing": (str(tmp_path / "nope"), "no exported model there"),
        "best weights": (os.path.join(make_run_directory(tmp_path), "best"),
                         f"holds a run's best weights (a checkpoint), not an export; pass {tmp_path}/run/export"),
        "encoder directory": (tiny_encoder, "is a BERT encoder (encoder/ + preprocess/), not a classifier's export"),
        "not a SavedModel": (str(tmp_path), "is not a SavedModel (it has no saved_model.pb)"),
    }[kind]
    with pytest.raises(InputError) as raised:
        classify_text.refuse_what_is_not_an_export(model_dir)
    assert str(raised.value).startswith("--model: ") and expected in str(raised.value), str(raised.value)
