"""Evaluation and prediction: distributed inference over a split, metrics, and the result files.

Files (google-research/bert's names and formats where it had them):
  eval_results.txt    `key = value` lines, sorted
  eval_metrics.json   the same as JSON, plus the per-class report
  classification_report.txt, confusion_matrix.png (single-label tasks)
  test_results.tsv    one line per test example, tab-separated class probabilities in label order, no header
  predictions.tsv     example id, predicted label, its probability, text (with a header)
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

import keras
import numpy as np
import tensorflow as tf
from scipy import stats
from sklearn import metrics as skm

from bert_tf import tfrecords
from bert_tf.files import atomic_write
from bert_tf.model import per_example_loss, probabilities


@dataclasses.dataclass
class Predictions:
    """Real (non-padding) examples of a split, in file order."""

    example_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray


class Predictor:
    """Runs the model over every example of a split on all replicas and gathers the results on each worker.

    One Predictor per model: its step function is traced once and reused for every split and epoch.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, metadata: dict, global_batch_size: int,
                 trim_padding: bool = True):
        self.strategy, self.metadata, self.global_batch_size = strategy, metadata, global_batch_size
        task_type = metadata["task_type"]

        def replica_fn(features):
            logits = model(tfrecords.model_inputs(features, trim_padding), training=False)
            return {
                "probabilities": probabilities(tf.cast(logits, tf.float32), task_type),
                "losses": per_example_loss(features["label_ids"], logits, task_type),
                "labels": features["label_ids"],
                "example_id": features["example_id"],
                "is_real": features["is_real_example"],
            }

        @tf.function
        def step(iterator):
            outputs = strategy.run(replica_fn, args=(next(iterator),))
            return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

        self._step = step

    def predict(self, data_dir: str, split: str) -> Predictions:
        metadata, batch_size = self.metadata, self.global_batch_size
        dataset = tfrecords.padded_eval_dataset(data_dir, split, metadata, batch_size)
        size = metadata[{"dev": "eval_data_size", "test": "test_data_size", "train": "train_data_size"}[split]]
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        batches = [tf.nest.map_structure(lambda t: t.numpy(), self._step(iterator)) for _ in range(-(-size // batch_size))]
        merged = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
        real = merged["is_real"] == 1
        # Multi-worker sharding interleaves examples; the example id restores file order.
        order = np.argsort(merged["example_id"][real], kind="stable")
        return Predictions(
            example_ids=merged["example_id"][real][order],
            labels=merged["labels"][real][order],
            probabilities=merged["probabilities"][real][order],
            losses=merged["losses"][real][order],
        )


def primary_metric(task_type: str) -> str:
    """The metric that picks the best checkpoint."""
    return {"multiclass": "eval_accuracy", "multilabel": "eval_micro_f1", "regression": "eval_pearson"}[task_type]


def compute_metrics(predictions: Predictions, metadata: dict) -> dict[str, float]:
    """The task's metrics, with google-research/bert's `eval_` prefix."""
    task_type = metadata["task_type"]
    labels, probs = predictions.labels, predictions.probabilities
    result = {"eval_loss": float(np.mean(predictions.losses)), "eval_examples": int(len(labels))}
    if task_type == "regression":
        scores = probs[:, 0]
        result["eval_mse"] = float(np.mean((scores - labels) ** 2))
        result["eval_pearson"] = float(stats.pearsonr(scores, labels)[0])
        result["eval_spearman"] = float(stats.spearmanr(scores, labels)[0])
        return result
    if task_type == "multilabel":
        predicted = (probs >= 0.5).astype(int)
        result["eval_micro_f1"] = float(skm.f1_score(labels, predicted, average="micro", zero_division=0))
        result["eval_macro_f1"] = float(skm.f1_score(labels, predicted, average="macro", zero_division=0))
        result["eval_exact_match"] = float(np.mean(np.all(predicted == labels, axis=1)))
        present = labels.sum(axis=0) > 0
        if present.any() and (~labels.astype(bool)).any(axis=0)[present].all():
            result["eval_macro_auc"] = float(skm.roc_auc_score(labels[:, present], probs[:, present], average="macro"))
        return result
    predicted = probs.argmax(axis=1)
    num_labels = probs.shape[1]
    result["eval_accuracy"] = float(skm.accuracy_score(labels, predicted))
    result["eval_mcc"] = float(skm.matthews_corrcoef(labels, predicted))
    result["eval_macro_f1"] = float(skm.f1_score(labels, predicted, average="macro", labels=range(num_labels), zero_division=0))
    if num_labels == 2:
        result["eval_f1"] = float(skm.f1_score(labels, predicted, zero_division=0))
        if len(np.unique(labels)) == 2:
            result["eval_auc"] = float(skm.roc_auc_score(labels, probs[:, 1]))
    elif len(np.unique(labels)) == num_labels:
        result["eval_auc"] = float(skm.roc_auc_score(labels, probs, multi_class="ovr"))
    return result


def results_text(result: dict) -> str:
    """google-research/bert's eval_results.txt: one `key = value` line per metric, sorted."""
    return "".join(f"{key} = {result[key]}\n" for key in sorted(result))


def write_eval_results(output_dir: str, result: dict, predictions: Predictions, metadata: dict) -> str | None:
    """eval_results.txt, eval_metrics.json, and for single-label tasks the report and confusion matrix.

    Returns the classification report text (None for multi-label and regression).
    """
    atomic_write(os.path.join(output_dir, "eval_results.txt"), results_text(result))
    report = None
    details = dict(result)
    if metadata["task_type"] == "multiclass":
        names = metadata["label_names"]
        predicted = predictions.probabilities.argmax(axis=1)
        report = skm.classification_report(predictions.labels, predicted, labels=range(len(names)),
                                           target_names=names, digits=4, zero_division=0)
        details["classification_report"] = skm.classification_report(
            predictions.labels, predicted, labels=range(len(names)), target_names=names, output_dict=True, zero_division=0)
        matrix = skm.confusion_matrix(predictions.labels, predicted, labels=range(len(names)))
        details["confusion_matrix"] = matrix.tolist()
        atomic_write(os.path.join(output_dir, "classification_report.txt"), report)
        atomic_write(os.path.join(output_dir, "confusion_matrix.png"), confusion_matrix_png(matrix, names))
    atomic_write(os.path.join(output_dir, "eval_metrics.json"), json.dumps(details, indent=2, sort_keys=True) + "\n")
    return report


def confusion_matrix_png(matrix: np.ndarray, names: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2.5 + 0.5 * len(names)
    figure, axes = plt.subplots(figsize=(size, size), dpi=100)
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


def write_predictions(output_dir: str, predictions: Predictions, metadata: dict, texts: list[str] | None) -> None:
    """test_results.tsv (google-research/bert's format) and predictions.tsv (readable, with the text)."""
    probs = predictions.probabilities
    atomic_write(os.path.join(output_dir, "test_results.tsv"),
                 "".join("\t".join(f"{p:.8f}" for p in row) + "\n" for row in probs))
    names = metadata["label_names"]
    lines = ["example_id\tlabel\tprobability\ttext\n"]
    for index, (example_id, row) in enumerate(zip(predictions.example_ids, probs)):
        if metadata["task_type"] == "multiclass":
            label, probability = names[int(row.argmax())], float(row.max())
        elif metadata["task_type"] == "multilabel":
            chosen = [names[j] for j in np.flatnonzero(row >= 0.5)]
            label, probability = ",".join(chosen), float(row[row >= 0.5].min()) if chosen else float(row.max())
        else:
            label, probability = f"{row[0]:.6f}", float("nan")
        text = texts[index] if texts is not None else ""
        lines.append(f"{int(example_id)}\t{label}\t{probability:.6f}\t{' '.join(text.split())}\n")
    atomic_write(os.path.join(output_dir, "predictions.tsv"), "".join(lines))
