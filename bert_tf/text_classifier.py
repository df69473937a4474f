"""TextClassifier: bert_tf from Python, with scikit-learn's manners, over the same steps as the commands.

    from bert_tf import TextClassifier

    clf = TextClassifier(encoder="default", max_seq_length=128, output_dir="runs/my_task")
    clf.fit("data/example/train.csv", dev="data/example/dev.csv", num_train_epochs=3)
    clf.evaluate("data/example/test.csv")        # {"eval_accuracy": …, …}, as eval_results.txt
    clf.predict(["Shares fell after the profit warning."])          # ["business"]
    clf.predict_proba(["Shares fell after the profit warning."])    # columns: clf.label_names
    clf.export()                                 # runs/my_task/export, the SavedModel run_classifier exports
    clf = TextClassifier.load("runs/my_task")    # or an export directory

fit writes the tables' records to OUTPUT_DIR/records and trains in OUTPUT_DIR exactly as create_tfrecords and
run_classifier would (it calls their functions), so either side can continue a run the other started:

    python -m bert_tf.run_classifier --data_dir=runs/my_task/records --output_dir=runs/my_task --do_train \
      --num_train_epochs=4
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Mapping, Sequence, Union

import numpy as np
import pandas as pd
import tensorflow as tf

from bert_tf import tables
from bert_tf.create_tfrecords import create_tfrecords
from bert_tf.errors import InputError
from bert_tf.evaluation import compute_metrics
from bert_tf.labels import LabelSpace
from bert_tf.records import read_metadata
from bert_tf.reports import load_thresholds
from bert_tf.run import ClassifierRun
from bert_tf.run_config import RunConfig
from bert_tf.run_directory import RUN_FILE

# A table: a DataFrame, a file create_tfrecords reads, {column: values}, or (texts, labels) / (texts, texts_b, labels).
Table = Union[pd.DataFrame, str, Mapping[str, Sequence], tuple]
# create_tfrecords' own settings (with their defaults); every other setting is run_classifier's (RunConfig).
RECORD_SETTINGS = {"task_type": "auto", "long_document": "truncate", "doc_stride": None, "head_tokens": None,
                   "max_examples_per_file": 200_000}
# What fit, evaluate and load decide themselves.
_MANAGED = {"data_dir", "output_dir", "do_train", "do_eval", "do_predict", "do_export"}


class TextClassifier:
    """Fine-tunes a BERT encoder for text classification; see the module docstring for an example.

    The constructor takes the settings, as scikit-learn's estimators do: `encoder`, `max_seq_length`,
    `output_dir` (default: a new temporary directory), and any other create_tfrecords or run_classifier flag by
    name (`learning_rate=1e-4`, `num_train_epochs=2`, `task_type="multilabel"`, `long_document="sliding_window"`,
    …). fit takes more for its own run. Multi-label and regression tasks, and pairs (`text_b_column`), work as
    on the command line.
    """

    def __init__(self, encoder: str = "default", max_seq_length: int = 128, output_dir: str | None = None,
                 **settings):
        _check_settings(settings)
        self.encoder = encoder
        self.max_seq_length = max_seq_length
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="bert_tf-")
        self.settings = settings
        self._run: ClassifierRun | None = None
        self._export = None  # a loaded export, when the classifier was loaded from one
        self._serve = None  # the serving signature behind predict and predict_proba
        self._columns: dict = {}

    # --- training --------------------------------------------------------------------------------------------
    def fit(self, train: Table, dev: Table | None = None, text_column: str = "text",
            label_column: str | list[str] = "label", text_b_column: str | None = None, **settings) -> "TextClassifier":
        """Writes the records of train (and dev), then trains; with dev, evaluates after every epoch and at the end."""
        _check_settings(settings)
        settings = {**self.settings, **settings}
        label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
        self._columns = {"text_column": text_column, "label_columns": label_columns, "text_b_column": text_b_column}
        splits = {"train": self._table(train, "train")}
        if dev is not None:
            splits["dev"] = self._table(dev, "dev")
        data_dir = os.path.join(self.output_dir, "records")
        self._write_records(splits, data_dir, {**RECORD_SETTINGS, **settings})
        run_settings = {key: value for key, value in settings.items() if key not in RECORD_SETTINGS}
        self._start(RunConfig(data_dir=data_dir, output_dir=self.output_dir, encoder=self.encoder, do_train=True,
                              do_eval=dev is not None, **run_settings))
        try:
            self._run.train()
            if dev is not None:
                self.dev_results_, _ = self._run.evaluate()
        finally:
            self._run.close()  # run.lock is held per call: the CLI may use the directory between calls
        return self

    def _start(self, config: RunConfig) -> None:
        self._run = ClassifierRun(config)
        self._serve = None

    def _table(self, data: Table, split: str, labels_required: bool = True) -> tables.TextTable:
        columns = self._columns
        if isinstance(data, str):
            return tables.read_text_table(data, columns["text_column"], columns["label_columns"],
                                          columns["text_b_column"], labels_required=labels_required)
        frame = _frame(data, columns)
        frame.index = pd.RangeIndex(1, len(frame) + 1)  # errors name the 1-based row, as for a Parquet file
        return tables.text_table(frame, f"the {split} data", columns["text_column"], columns["label_columns"],
                                 columns["text_b_column"], labels_required=labels_required)

    def _write_records(self, splits: dict, data_dir: str, settings: dict,
                       label_space: LabelSpace | None = None) -> None:
        """create_tfrecords with `settings` (RECORD_SETTINGS' keys, and vocab_file / do_lower_case if given)."""
        create_tfrecords(
            splits, settings["task_type"], data_dir, self.max_seq_length, settings["max_examples_per_file"],
            settings["long_document"], settings["doc_stride"], encoder=self.encoder,
            vocab_file=settings.get("vocab_file"), do_lower_case=settings.get("do_lower_case"),
            text_column=self._columns["text_column"], text_b_column=self._columns["text_b_column"],
            label_space=label_space, head_tokens=settings["head_tokens"],
        )

    # --- using the model ---------------------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """The columns of predict_proba."""
        if self._run is not None:
            return list(self._run.metadata.label_names)
        return [name.decode("utf-8") for name in self._export.label_names().numpy()]

    def evaluate(self, data: Table) -> dict:
        """The eval_results.txt figures on labelled data (a run's model, not an export's); writes no result file."""
        run = self._require_run("evaluate")
        metadata = run.metadata
        # Records as the run's were written (windows, tokenizer), with the run's labels.
        settings = {"task_type": metadata.task_type, "long_document": metadata.long_document,
                    "doc_stride": metadata.doc_stride, "head_tokens": metadata.head_tokens,
                    "max_examples_per_file": RECORD_SETTINGS["max_examples_per_file"],
                    "vocab_file": self.settings.get("vocab_file"), "do_lower_case": metadata.do_lower_case}
        with tempfile.TemporaryDirectory(prefix=".evaluate-", dir=self.output_dir) as data_dir:
            self._write_records({"dev": self._table(data, "evaluation")}, data_dir, settings,
                                LabelSpace(metadata.task_type, tuple(metadata.label_names)))
            predictions = run.predictor.predict(data_dir, "dev", read_metadata(data_dir))
        result = compute_metrics(predictions, metadata, load_thresholds(self.output_dir, metadata))
        return {**result, "global_step": run.global_step}

    def predict_proba(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        """[len(texts), len(label_names)] probabilities (regression: the predicted values), as the export gives."""
        return self._outputs(texts, texts_b)["probabilities"].numpy()

    def predict(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> list[str]:
        """Each text's label (multi-label: the labels over their thresholds, comma-joined; regression: the value)."""
        return [label.decode("utf-8") for label in self._outputs(texts, texts_b)["label"].numpy()]

    def _outputs(self, texts: Sequence[str], texts_b: Sequence[str] | None) -> dict[str, tf.Tensor]:
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string: use [text]")
        inputs = {"text": tf.constant(list(texts), tf.string)}
        if texts_b is not None:
            inputs["text_b"] = tf.constant(list(texts_b), tf.string)
        if self._serve is None:
            serving = self._export if self._run is None else self._run.serving_model()
            self._serve = serving.signature() if self._run is not None else serving.signatures["serving_default"]
        return self._serve(**inputs)

    def export(self, export_dir: str | None = None) -> str:
        """The serving SavedModel (default OUTPUT_DIR/export), as run_classifier --do_export writes it."""
        run = self._require_run("export")
        with run.holding_lock():
            return run.export(export_dir)

    def _require_run(self, action: str) -> ClassifierRun:
        if self._run is None:
            raise RuntimeError(f"{action} needs a trained run: fit first, or load a run directory (not an export)")
        return self._run

    # --- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, **settings) -> "TextClassifier":
        """A run directory (its latest checkpoint) or an export directory, ready to predict.

        A run directory loads with the encoder, pooling and records it was trained with (run_config.json);
        settings override the rest (e.g. `eval_batch_size`).
        """
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            classifier = cls(output_dir=path, **settings)
            classifier._export = tf.saved_model.load(path)
            return classifier
        run_file = os.path.join(path, RUN_FILE)
        if not tf.io.gfile.exists(run_file):
            raise InputError(f"neither a run directory ({RUN_FILE}) nor an export (saved_model.pb)", file=path)
        with tf.io.gfile.GFile(run_file) as f:
            recorded = json.load(f)
        if not recorded.get("data_dir"):
            raise InputError(f"{RUN_FILE} does not say where the run's records are", file=path,
                             hint="rerun run_classifier on it once with this version of bert_tf")
        metadata = read_metadata(recorded["data_dir"])
        classifier = cls(encoder=recorded["encoder"], max_seq_length=metadata.max_seq_length, output_dir=path,
                         **settings)
        classifier._columns = {"text_column": metadata.text_column or "text",
                               "label_columns": metadata.label_columns or ["label"],
                               "text_b_column": metadata.text_b_column}
        run_settings = {key: value for key, value in settings.items() if key not in RECORD_SETTINGS}
        classifier._start(RunConfig(data_dir=recorded["data_dir"], output_dir=path, encoder=recorded["encoder"],
                                    pooling=recorded["pooling"], **run_settings))
        try:
            classifier._run.restore()
        finally:
            classifier._run.close()
        return classifier


def _check_settings(settings: dict) -> None:
    known = set(RECORD_SETTINGS) | {field.name for field in dataclasses.fields(RunConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}: use a create_tfrecords or run_classifier flag's name")
    managed = sorted(set(settings) & (_MANAGED | {"encoder", "max_seq_length"}))
    if managed:
        raise TypeError(f"{managed[0]!r} is not a setting here: TextClassifier's arguments and methods decide it")


def _frame(data: Table, columns: dict) -> pd.DataFrame:
    """Any accepted table form as a DataFrame with the named columns."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True)
    if isinstance(data, Mapping):
        return pd.DataFrame(dict(data))
    if isinstance(data, tuple):
        names = [columns["text_column"]] + ([columns["text_b_column"]] if columns["text_b_column"] else [])
        names += columns["label_columns"] if len(data) > len(names) else []
        if len(data) != len(names):
            raise TypeError(f"a tuple of {len(data)} sequences; expected ({', '.join(names)})")
        return pd.DataFrame(dict(zip(names, data)))
    raise TypeError(f"a table is a DataFrame, a file path, a dict of columns or a tuple, not {type(data).__name__}")
