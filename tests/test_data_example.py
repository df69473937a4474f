"""data/example and README's "Your own data" commands: the example task is what the README shows, and the
README's create_tfrecords command runs on it as written."""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "data", "example")
LABELS = ["business", "politics", "sport", "tech"]
ROWS = {"train": 80, "dev": 20, "test": 20}
# metadata.json's record count of each split (create_tfrecords / records.SPLIT_SIZE_KEYS).
SIZE_KEYS = {"train": "train_data_size", "dev": "eval_data_size", "test": "test_data_size"}
FLAG_OF_SPLIT = {"train": "--train_file", "dev": "--dev_file", "test": "--test_file"}


def own_data_section() -> str:
    """README.md's "## Your own data" section, up to the next level-2 heading."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    match = re.search(r"^## Your own data\n(.*?)(?=^## )", readme, re.DOTALL | re.MULTILINE)
    assert match, 'README.md has no "## Your own data" section'
    return match.group(1)


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def shell_lines(block: str) -> list[str]:
    """A sh block's commands: backslash-continued lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_commands() -> list[str]:
    """The commands of the section's first sh block that runs create_tfrecords."""
    for block in fenced_blocks(own_data_section(), "sh"):
        lines = shell_lines(block)
        if any(line.startswith("python -m bert_tf.create_tfrecords") for line in lines):
            return lines
    pytest.fail('no sh block running "python -m bert_tf.create_tfrecords" in README\'s "Your own data"')


def flag_values(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def read_table(split: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(os.path.join(EXAMPLE, f"{split}.csv"), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_example_tables_have_the_readme_columns_labels_and_sizes():
    create = next(line for line in readme_commands() if line.startswith("python -m bert_tf.create_tfrecords"))
    flags = flag_values(shlex.split(create))
    columns = [flags["--text_column"], flags["--label_column"]]
    texts = []
    for split, rows_expected in ROWS.items():
        assert os.path.normpath(flags[FLAG_OF_SPLIT[split]]) == os.path.join("data", "example", f"{split}.csv")
        header, rows = read_table(split)
        assert header == columns, f"{split}.csv"
        assert len(rows) == rows_expected, f"{split}.csv"
        per_label = collections.Counter(row["label"] for row in rows)
        assert per_label == {label: rows_expected // len(LABELS) for label in LABELS}, f"{split}.csv"
        assert all(row["text"].strip() for row in rows), f"{split}.csv has an empty text"
        texts += [row["text"] for row in rows]
    assert len(set(texts)) == len(texts), "a sentence appears twice in data/example"
    # The README says quoted fields work: the example has some to show it.
    assert any("," in text for text in texts) and any('"' in text for text in texts)

    # README's inline csv is the start of train.csv, byte for byte.
    (inline,) = fenced_blocks(own_data_section(), "csv")
    with open(os.path.join(EXAMPLE, "train.csv"), encoding="utf-8") as f:
        first_lines = [next(f) for _ in inline.splitlines()]
    assert "".join(first_lines) == inline


def test_make_tfrecords_line_runs_the_same_command():
    commands = readme_commands()
    create = next(line for line in commands if line.startswith("python -m bert_tf.create_tfrecords"))
    make = next(line for line in commands if line.startswith("make tfrecords"))
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(shlex.split(make) + ["-n"], cwd=REPO, capture_output=True, text=True, check=False,
                             env={**os.environ, "MAKEFLAGS": ""})
    assert dry_run.returncode == 0, dry_run.stderr
    (expanded,) = [line for line in shell_lines(dry_run.stdout) if "bert_tf.create_tfrecords" in line]
    expected = flag_values(shlex.split(create))
    if expected.get("--encoder") == "default":  # make passes no --encoder: the default is the same
        del expected["--encoder"]
    assert flag_values(shlex.split(expanded)) == expected


def test_readme_create_tfrecords_command_runs_on_the_example(tiny_encoder, tmp_path):
    create = next(line for line in readme_commands() if line.startswith("python -m bert_tf.create_tfrecords"))
    args = shlex.split(create)
    assert args[:3] == ["python", "-m", "bert_tf.create_tfrecords"]
    out = str(tmp_path / "my_task")
    replaced = collections.Counter()
    command = [sys.executable, "-m", "bert_tf.create_tfrecords"]
    for arg in args[3:]:
        if arg.startswith("--output_dir="):
            arg, replaced["output_dir"] = f"--output_dir={out}", 1
        elif arg == "--encoder=default":
            arg, replaced["encoder"] = f"--encoder={tiny_encoder}", 1
        elif arg.startswith("--max_seq_length="):
            # The tiny encoder has 64 positions; the README's 128 is for the default encoder's 512.
            arg, replaced["max_seq_length"] = f"--max_seq_length={min(int(arg.split('=', 1)[1]), 64)}", 1
        command.append(arg)
    assert set(replaced) == {"output_dir", "encoder", "max_seq_length"}, f"README's command changed: {create}"

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata["task_type"] == "multiclass"
    assert metadata["num_labels"] == len(LABELS)
    assert metadata["label_names"] == LABELS
    assert {split: metadata[key] for split, key in SIZE_KEYS.items()} == ROWS
    assert metadata["documents"] == ROWS
    assert metadata["test_has_labels"] is True
    assert metadata["files"] == {"train": ["train.tf_record"], "dev": ["eval.tf_record"], "test": ["predict.tf_record"]}
    for names in metadata["files"].values():
        assert all(os.path.getsize(os.path.join(out, name)) > 0 for name in names)
