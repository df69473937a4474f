"""Evaluation and prediction: distributed inference over a split, metrics, and the result files.

Files (google-research/bert's names and formats where it had them):
  eval_results.txt    `key = value` lines, sorted
  eval_metrics.json   the same as JSON, plus the per-class report
  classification_report.txt, confusion_matrix.png (single-label tasks)
  label_report.txt    per-label support, threshold, precision, recall, F1 and ROC AUC (multi-label tasks)
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
from bert_tf.errors import InputError
from bert_tf.files import atomic_write
from bert_tf.long_documents import aggregate
from bert_tf.model import per_example_loss, probabilities

THRESHOLDS_FILE = "thresholds.json"


@dataclasses.dataclass
class Predictions:
    """Real (non-padding) examples of a split, in file order: one per document when records are windows."""

    example_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray
    windows: np.ndarray | None = None  # windows per document (sliding-window records)


class Predictor:
    """Runs the model over every example of a split on all replicas and gathers the results on each worker.

    One Predictor per model: its step function is traced once and reused for every split and epoch. Records
    written with --long_document=sliding_window are windows; their predictions are aggregated per document
    (long_documents.aggregate, by `aggregation`), so every metric and result file counts documents.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, metadata: dict, global_batch_size: int,
                 pad_multiple: int | None = 1, aggregation: str = "mean", batches_per_bucket_window: int = 0):
        self.strategy, self.metadata, self.global_batch_size = strategy, metadata, global_batch_size
        self.batches_per_bucket_window = batches_per_bucket_window
        self.aggregation = aggregation
        task_type = metadata["task_type"]

        def replica_fn(features):
            logits = tf.cast(model(tfrecords.model_inputs(features, pad_multiple), training=False), tf.float32)
            return {
                "logits": logits,
                "losses": per_example_loss(features["label_ids"], logits, task_type),
                "labels": features["label_ids"],
                "example_id": features["example_id"],
                "window_index": features["window_index"],
                "is_real": features["is_real_example"],
            }

        @tf.function(autograph=False)  # nothing branches on tensors; see training.Trainer
        def step(iterator):
            outputs = strategy.run(replica_fn, args=(next(iterator),))
            return tf.nest.map_structure(lambda value: strategy.gather(value, axis=0), outputs)

        self._step = step

    def predict(self, data_dir: str, split: str) -> Predictions:
        metadata, batch_size = self.metadata, self.global_batch_size
        dataset = tfrecords.padded_eval_dataset(data_dir, split, metadata, batch_size, self.batches_per_bucket_window)
        size = metadata[{"dev": "eval_data_size", "test": "test_data_size", "train": "train_data_size"}[split]]
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        batches = [tf.nest.map_structure(lambda t: t.numpy(), self._step(iterator)) for _ in range(-(-size // batch_size))]
        merged = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
        real = merged["is_real"] == 1
        # Multi-worker sharding interleaves examples; (example id, window) restores file order.
        order = np.lexsort((merged["window_index"][real], merged["example_id"][real]))
        merged = {key: value[real][order] for key, value in merged.items()}
        if metadata.get("long_document") == "sliding_window":
            return per_document(merged, metadata["task_type"], self.aggregation)
        return Predictions(example_ids=merged["example_id"], labels=merged["labels"],
                           probabilities=probabilities(merged["logits"], metadata["task_type"]).numpy(),
                           losses=merged["losses"])


def per_document(windows: dict[str, np.ndarray], task_type: str, aggregation: str) -> Predictions:
    """Windows' outputs (sorted by example id) → one prediction per document; its loss is its windows' mean."""
    example_ids, first, document = np.unique(windows["example_id"], return_index=True, return_inverse=True)
    counts = np.bincount(document)
    probs = aggregate(windows["logits"], document, len(example_ids), task_type, aggregation).numpy()
    return Predictions(example_ids=example_ids, labels=windows["labels"][first], probabilities=probs,
                       losses=np.bincount(document, weights=windows["losses"]) / counts, windows=counts)


def primary_metric(task_type: str) -> str:
    """The metric that picks the best checkpoint."""
    return {"multiclass": "eval_accuracy", "multilabel": "eval_micro_f1", "regression": "eval_pearson"}[task_type]


def default_thresholds(metadata: dict) -> np.ndarray:
    return np.full(metadata["num_labels"], 0.5)


def compute_metrics(predictions: Predictions, metadata: dict, thresholds: np.ndarray | None = None) -> dict[str, float]:
    """The task's metrics, with google-research/bert's `eval_` prefix (multi-label: at `thresholds`, default 0.5)."""
    task_type = metadata["task_type"]
    labels, probs = predictions.labels, predictions.probabilities
    result = {"eval_loss": float(np.mean(predictions.losses)), "eval_examples": int(len(labels))}
    if predictions.windows is not None:
        result["eval_windows"] = int(predictions.windows.sum())
    if task_type == "regression":
        scores = probs[:, 0]
        result["eval_mse"] = float(np.mean((scores - labels) ** 2))
        result["eval_pearson"] = float(stats.pearsonr(scores, labels)[0])
        result["eval_spearman"] = float(stats.spearmanr(scores, labels)[0])
        return result
    if task_type == "multilabel":
        predicted = (probs >= (default_thresholds(metadata) if thresholds is None else thresholds)).astype(int)
        result["eval_micro_f1"] = float(skm.f1_score(labels, predicted, average="micro", zero_division=0))
        result["eval_macro_f1"] = float(skm.f1_score(labels, predicted, average="macro", zero_division=0))
        result["eval_exact_match"] = float(np.mean(np.all(predicted == labels, axis=1)))
        scorable = _has_both_classes(labels)
        if scorable.any():
            result["eval_macro_auc"] = float(skm.roc_auc_score(labels[:, scorable], probs[:, scorable], average="macro"))
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


def _has_both_classes(labels: np.ndarray) -> np.ndarray:
    """Labels that are on for some examples and off for others: the only ones a ROC AUC is defined for."""
    positives = labels.sum(axis=0)
    return (positives > 0) & (positives < len(labels))


THRESHOLD_GRID = np.round(np.arange(1, 100) / 100, 2)  # 0.01 … 0.99, 0.5 exactly among them


def tune_thresholds(predictions: Predictions, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Each label's threshold on the grid that maximises its F1 on these predictions (0.5 if it never occurs).

    Rare labels of a multi-label task (GoEmotions' grief: 0.1% of examples) rarely reach 0.5 in a fine-tuned
    model's probabilities, so at 0.5 they are never predicted and their F1 is 0; a lower threshold chosen on
    dev recovers them. Ties go to the threshold closest to 0.5.
    """
    labels = predictions.labels.astype(bool)
    predicted = predictions.probabilities[:, :, None] >= grid[None, None, :]  # [examples, labels, thresholds]
    true_positives = np.sum(predicted & labels[:, :, None], axis=0)
    f1 = 2 * true_positives / np.maximum(predicted.sum(axis=0) + labels.sum(axis=0)[:, None], 1)
    closeness = -np.abs(grid - 0.5) * 1e-9
    best = grid[np.argmax(f1 + closeness, axis=1)]
    return np.where(labels.any(axis=0), best, 0.5)


def save_thresholds(output_dir: str, thresholds: np.ndarray, metadata: dict) -> None:
    content = {"label_names": list(metadata["label_names"]), "thresholds": [round(float(t), 4) for t in thresholds]}
    atomic_write(os.path.join(output_dir, THRESHOLDS_FILE), json.dumps(content, indent=2) + "\n")


def load_thresholds(output_dir: str, metadata: dict) -> np.ndarray | None:
    """The thresholds saved with a run's model (None when it has none)."""
    path = os.path.join(output_dir, THRESHOLDS_FILE)
    if metadata["task_type"] != "multilabel" or not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        content = json.load(f)
    if content.get("label_names") != list(metadata["label_names"]):
        raise InputError("was tuned for other labels than the records'", file=path,
                         hint="rerun with --do_eval --tune_thresholds, or delete it to use 0.5")
    return np.asarray(content["thresholds"], np.float64)


def label_report(predictions: Predictions, metadata: dict, thresholds: np.ndarray | None = None) -> tuple[str, dict]:
    """Multi-label: per label its support, threshold, precision, recall, F1 and ROC AUC; as text and as a dict."""
    names = metadata["label_names"]
    thresholds = default_thresholds(metadata) if thresholds is None else thresholds
    labels, probs = predictions.labels, predictions.probabilities
    predicted = (probs >= thresholds).astype(int)
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predicted, average=None, zero_division=0)
    scorable = _has_both_classes(labels)
    rows = {}
    width = max(len(name) for name in names)
    lines = [f"{'label':>{width}}  support  threshold  precision  recall      f1     auc\n"]
    for j, name in enumerate(names):
        auc = float(skm.roc_auc_score(labels[:, j], probs[:, j])) if scorable[j] else float("nan")
        rows[name] = {"support": int(support[j]), "threshold": float(thresholds[j]), "precision": float(precision[j]),
                      "recall": float(recall[j]), "f1": float(f1[j]), "auc": auc}
        lines.append(f"{name:>{width}}  {support[j]:7d}  {thresholds[j]:9.2f}  {precision[j]:9.4f}  {recall[j]:6.4f}"
                     f"  {f1[j]:6.4f}  {auc:6.4f}\n")
    return "".join(lines), rows


def results_text(result: dict) -> str:
    """google-research/bert's eval_results.txt: one `key = value` line per metric, sorted."""
    return "".join(f"{key} = {result[key]}\n" for key in sorted(result))


def write_eval_results(output_dir: str, result: dict, predictions: Predictions, metadata: dict,
                       thresholds: np.ndarray | None = None) -> str | None:
    """eval_results.txt, eval_metrics.json, and the per-class (per-label) report; returns the report text."""
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
    elif metadata["task_type"] == "multilabel":
        report, details["per_label"] = label_report(predictions, metadata, thresholds)
        atomic_write(os.path.join(output_dir, "label_report.txt"), report)
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


def write_predictions(output_dir: str, predictions: Predictions, metadata: dict, texts: list[str] | None,
                      thresholds: np.ndarray | None = None) -> None:
    """test_results.tsv (google-research/bert's format) and predictions.tsv (readable, with the text)."""
    probs = predictions.probabilities
    atomic_write(os.path.join(output_dir, "test_results.tsv"),
                 "".join("\t".join(f"{p:.8f}" for p in row) + "\n" for row in probs))
    names = metadata["label_names"]
    thresholds = default_thresholds(metadata) if thresholds is None else thresholds
    lines = ["example_id\tlabel\tprobability\ttext\n"]
    for index, (example_id, row) in enumerate(zip(predictions.example_ids, probs)):
        if metadata["task_type"] == "multiclass":
            label, probability = names[int(row.argmax())], float(row.max())
        elif metadata["task_type"] == "multilabel":
            on = row >= thresholds
            label = ",".join(names[j] for j in np.flatnonzero(on))
            probability = float(row[on].min()) if on.any() else float(row.max())
        else:
            label, probability = f"{row[0]:.6f}", float("nan")
        text = texts[index] if texts is not None else ""
        lines.append(f"{int(example_id)}\t{label}\t{probability:.6f}\t{' '.join(text.split())}\n")
    atomic_write(os.path.join(output_dir, "predictions.tsv"), "".join(lines))
