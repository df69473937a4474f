"""The package's seams, checked on its source: where task types, flags and test helpers may live, function size."""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "bert_tf")
TASK_TYPES = ("multiclass", "multilabel", "regression")


def package_modules() -> dict[str, ast.Module]:
    paths = sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True))
    return {os.path.relpath(path, ROOT): ast.parse(open(path, encoding="utf-8").read()) for path in paths}


def is_command(tree: ast.Module) -> bool:
    """A module run as `python -m bert_tf.NAME`: it ends in `if __name__ == "__main__":`."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


def test_task_type_names_live_in_the_heads_and_the_table_reader_only():
    holders = {
        path for path, tree in package_modules().items()
        for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in TASK_TYPES
    }
    assert holders == {"bert_tf/heads.py", "bert_tf/labels.py"}


def test_only_the_commands_entry_points_read_flags():
    # Library code takes arguments: what a command's main() (or run_classifier's config_from_flags) reads from
    # the flags, it passes on, so a Python caller can call the same functions.
    entry_points = ("main", "config_from_flags")
    readers = set()
    for path, tree in package_modules().items():
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(node, ast.Name) and node.id == "FLAGS" for node in ast.walk(function)):
                readers.add((path, function.name))
    commands = {path for path, tree in package_modules().items() if is_command(tree)}
    # The one other reader: the parser every command hands to app.run, which fills FLAGS from argv.
    parser = ("bert_tf/flags.py", "parse_or_exit")
    assert {(path, name) for path, name in readers
            if (path not in commands or name not in entry_points) and (path, name) != parser} == set()


def test_no_function_is_longer_than_60_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in package_modules().items() for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60
    ]
    assert long == []


def test_no_test_module_imports_another():
    test_modules = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
    imports = []
    for name in sorted(test_modules):
        tree = ast.parse(open(os.path.join(ROOT, "tests", name + ".py"), encoding="utf-8").read())
        for node in ast.walk(tree):
            imported = [node.module] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            imports += [f"{name} imports {module}" for module in imported if module in test_modules]
    assert imports == []


# Defines run_classifier's flags alone in a fresh process (tests define every tool's flags in this one).
CLASSIFIER_FLAG_DEFAULTS = """
import json
from bert_tf import flags
flags.define_classifier_flags()
print(json.dumps({flag.name: flag.default for flag in flags.FLAGS.get_key_flags_for_module("bert_tf.flags")}))
"""


def test_run_config_is_run_classifiers_flags_with_their_defaults():
    from bert_tf.run_config import RunConfig

    result = subprocess.run([sys.executable, "-c", CLASSIFIER_FLAG_DEFAULTS], capture_output=True, text=True, check=True)
    flag_defaults = json.loads(result.stdout.splitlines()[-1])
    config_defaults = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    assert sorted(config_defaults) == sorted(flag_defaults)
    assert {name: value for name, value in config_defaults.items() if flag_defaults[name] != value} == {}


def test_the_apis_record_settings_are_create_tfrecords_flags_with_their_defaults():
    from bert_tf.text_classifier import RECORD_SETTINGS

    script = CLASSIFIER_FLAG_DEFAULTS.replace("define_classifier_flags", "define_tfrecord_flags")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    flag_defaults = json.loads(result.stdout.splitlines()[-1])
    assert {name: flag_defaults.get(name, "no such flag") for name in RECORD_SETTINGS} == RECORD_SETTINGS
