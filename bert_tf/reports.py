"""Result files and reports of a run, written from evaluation's predictions and metrics, and read back.

Files (google-research/bert's names and formats where it had them):
  eval_results.txt    `key = value` lines, sorted (read back by read_results)
  eval_metrics.json   the same as JSON, plus the per-class report
  classification_report.txt, confusion_matrix.png (single-label tasks; at most MAX_CLASSES_DRAWN classes drawn)
  label_report.txt    per-label support, threshold, precision, recall, F1 and ROC AUC (multi-label tasks)
  thresholds.json     multi-label thresholds tuned on dev
  test_results.tsv    one line per test example, tab-separated class probabilities in label order, no header
  predictions.tsv     example id, predicted label, its probability, text (with a header)
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf

from bert_tf.errors import InputError
from bert_tf.evaluation import Predictions
from bert_tf.files import atomic_write
from bert_tf.records import RecordsMetadata

THRESHOLDS_FILE = "thresholds.json"
# Classes the confusion-matrix figure draws at most: with 300, drawing them all took minutes and 7.5 MB, and no
# label could be read. Beyond, it draws the most frequent ones (drawn_classes).
MAX_CLASSES_DRAWN = 50


def results_text(result: dict) -> str:
    """google-research/bert's eval_results.txt: one `key = value` line per metric, sorted."""
    return "".join(f"{key} = {result[key]}\n" for key in sorted(result))


def _parse_value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_results(path: str) -> dict[str, int | float | str]:
    """An eval_results.txt (any `key = value` file results_text wrote) back as a dict: ints, floats, else text."""
    with tf.io.gfile.GFile(path) as f:
        lines = f.read().splitlines()
    return {key: _parse_value(value) for key, value in (line.split(" = ", 1) for line in lines if " = " in line)}


def write_eval_results(output_dir: str, result: dict, predictions: Predictions, metadata: RecordsMetadata,
                       thresholds: np.ndarray | None = None) -> str | None:
    """eval_results.txt, eval_metrics.json, and the per-class (per-label) report; returns the report's path."""
    atomic_write(os.path.join(output_dir, "eval_results.txt"), results_text(result))
    head = metadata.head
    report, details = head.report(predictions.labels, predictions.probabilities, metadata.label_names, thresholds)
    report_path = None if report is None else os.path.join(output_dir, head.report_file)
    if report_path:
        atomic_write(report_path, report)
    if "confusion_matrix" in details:
        png = confusion_matrix_png(np.asarray(details["confusion_matrix"]), metadata.label_names)
        atomic_write(os.path.join(output_dir, "confusion_matrix.png"), png)
    atomic_write(os.path.join(output_dir, "eval_metrics.json"),
                 json.dumps({**result, **details}, indent=2, sort_keys=True) + "\n")
    return report_path


def drawn_classes(matrix: np.ndarray) -> np.ndarray:
    """The classes the confusion-matrix figure shows, in label order: all of them, or beyond MAX_CLASSES_DRAWN the
    MAX_CLASSES_DRAWN most frequent true classes (ties: the first in label order).

    >>> drawn_classes(np.diag(np.arange(60))).tolist() == list(range(10, 60))
    True
    """
    if len(matrix) <= MAX_CLASSES_DRAWN:
        return np.arange(len(matrix))
    return np.sort(np.argsort(-matrix.sum(axis=1), kind="stable")[:MAX_CLASSES_DRAWN])


def confusion_matrix_png(matrix: np.ndarray, names: list[str]) -> bytes:
    """The confusion matrix (true classes in rows, predicted in columns) as a PNG, of drawn_classes only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = drawn_classes(matrix)
    title = None
    if len(drawn) < len(names):
        title = (f"the {len(drawn)} most frequent of {len(names)} classes (by true count); "
                 "eval_metrics.json holds the whole matrix")
    matrix, names = matrix[np.ix_(drawn, drawn)], [names[i] for i in drawn]
    size = 2.5 + 0.5 * len(names)
    figure, axes = plt.subplots(figsize=(size, size), dpi=100)
    if title:
        axes.set_title(title)
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_eval_summaries(output_dir: str, result: dict, step: int, image: bool = True) -> None:
    """The metrics as TensorBoard scalars under eval/ (and the confusion matrix as an image, when asked)."""
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "eval"))
    with writer.as_default():
        for key, value in result.items():
            if isinstance(value, float):
                tf.summary.scalar(key.removeprefix("eval_"), value, step=step)
        png = os.path.join(output_dir, "confusion_matrix.png")
        if image and tf.io.gfile.exists(png):
            with tf.io.gfile.GFile(png, "rb") as f:
                image = tf.io.decode_png(f.read(), channels=4)
            tf.summary.image("confusion_matrix", image[None], step=step)
    writer.flush()


def write_predictions(output_dir: str, predictions: Predictions, metadata: RecordsMetadata, texts: list[str] | None,
                      thresholds: np.ndarray | None = None) -> None:
    """test_results.tsv (google-research/bert's format) and predictions.tsv (readable, with the text)."""
    probs = predictions.probabilities
    atomic_write(os.path.join(output_dir, "test_results.tsv"),
                 "".join("\t".join(f"{p:.8f}" for p in row) + "\n" for row in probs))
    labels = metadata.head.label_strings(probs, metadata.label_names, thresholds)
    lines = ["example_id\tlabel\tprobability\ttext\n"]
    for index, (example_id, (label, probability)) in enumerate(zip(predictions.example_ids, labels)):
        text = texts[index] if texts is not None else ""
        lines.append(f"{int(example_id)}\t{label}\t{probability:.6f}\t{' '.join(text.split())}\n")
    atomic_write(os.path.join(output_dir, "predictions.tsv"), "".join(lines))


def save_thresholds(output_dir: str, thresholds: np.ndarray, metadata: RecordsMetadata) -> None:
    content = {"label_names": list(metadata.label_names), "thresholds": [round(float(t), 4) for t in thresholds]}
    atomic_write(os.path.join(output_dir, THRESHOLDS_FILE), json.dumps(content, indent=2) + "\n")


def load_thresholds(output_dir: str, metadata: RecordsMetadata) -> np.ndarray | None:
    """The thresholds saved with a run's model (None when it has none)."""
    path = os.path.join(output_dir, THRESHOLDS_FILE)
    if not metadata.head.tunes_thresholds or not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        content = json.load(f)
    if content.get("label_names") != list(metadata.label_names):
        raise InputError("was tuned for other labels than the records'", file=path,
                         hint="rerun with --do_eval --tune_thresholds, or delete it to use 0.5")
    return np.asarray(content["thresholds"], np.float64)
