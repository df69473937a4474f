"""Evaluation and prediction: distributed inference over a split, its metrics, and multi-label thresholds.

The files written from them are reports.py's.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from bert_tf.calibration import expected_calibration_error, fit_temperature
from bert_tf.errors import InputError
from bert_tf.heads import TaskHead
from bert_tf.input_pipeline import model_inputs, padded_eval_dataset
from bert_tf.long_documents import aggregate
from bert_tf.records import RecordsMetadata


@dataclasses.dataclass
class Predictions:
    """Real (non-padding) examples of a split, in file order: one per document when records are windows."""

    example_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray
    windows: np.ndarray | None = None  # windows per document (sliding-window records)
    logits: np.ndarray | None = None  # the model's logits, divided by the temperature if one was given


class Predictor:
    """Runs the model over every example of a split on all replicas and gathers the results on each worker.

    One Predictor per model: its step function is traced once and reused for every split and epoch. Records
    written with --long_document=sliding_window are windows; their predictions are aggregated per document
    (long_documents.aggregate, by `aggregation`), so every metric and result file counts documents.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, metadata: RecordsMetadata,
                 global_batch_size: int, pad_multiple: int | None = 1, aggregation: str = "mean",
                 batches_per_bucket_window: int = 0):
        self.strategy, self.metadata, self.global_batch_size = strategy, metadata, global_batch_size
        self.batches_per_bucket_window = batches_per_bucket_window
        self.aggregation = aggregation
        head = metadata.head

        def replica_fn(features):
            logits = tf.cast(model(model_inputs(features, pad_multiple), training=False), tf.float32)
            return {
                "logits": logits,
                "losses": head.per_example_loss(features["label_ids"], logits),
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

    def predict(self, data_dir: str, split: str, metadata: RecordsMetadata | None = None,
                temperature: float | None = None) -> Predictions:
        """The split's predictions; `metadata` is data_dir's when it holds other records of the same task;
        a temperature (bert_tf.calibration) divides the logits before the probabilities are taken."""
        metadata, batch_size = metadata or self.metadata, self.global_batch_size
        dataset = padded_eval_dataset(data_dir, split, metadata, batch_size, self.batches_per_bucket_window)
        size = metadata.size(split)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        try:
            batches = [tf.nest.map_structure(lambda t: t.numpy(), self._step(iterator))
                       for _ in range(-(-size // batch_size))]
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError, StopIteration) as error:
            reason = getattr(error, "message", "fewer records than metadata.json counts").splitlines()[0][:200]
            raise InputError(f"the {split} records are damaged or truncated ({reason})", file=data_dir,
                             hint="rewrite the records with create_tfrecords") from None
        merged = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
        real = merged["is_real"] == 1
        # Multi-worker sharding interleaves examples; (example id, window) restores file order.
        order = np.lexsort((merged["window_index"][real], merged["example_id"][real]))
        merged = {key: value[real][order] for key, value in merged.items()}
        if temperature is not None:
            merged["logits"] = merged["logits"] / temperature
        if metadata.windowed:
            return per_document(merged, metadata.head, self.aggregation)
        return Predictions(example_ids=merged["example_id"], labels=merged["labels"],
                           probabilities=metadata.head.probabilities(merged["logits"]).numpy(),
                           losses=merged["losses"], logits=merged["logits"])


def per_document(windows: dict[str, np.ndarray], head: TaskHead, aggregation: str) -> Predictions:
    """Windows' outputs (sorted by example id) → one prediction per document; its loss is its windows' mean."""
    example_ids, first, document = np.unique(windows["example_id"], return_index=True, return_inverse=True)
    counts = np.bincount(document)
    probs = aggregate(windows["logits"], document, len(example_ids), head, aggregation).numpy()
    return Predictions(example_ids=example_ids, labels=windows["labels"][first], probabilities=probs,
                       losses=np.bincount(document, weights=windows["losses"]) / counts, windows=counts)


def compute_metrics(predictions: Predictions, metadata: RecordsMetadata,
                    thresholds: np.ndarray | None = None) -> dict[str, float]:
    """The task's metrics, with google-research/bert's `eval_` prefix (multi-label: at `thresholds`, default 0.5)."""
    result = {"eval_loss": float(np.mean(predictions.losses)), "eval_examples": int(len(predictions.labels))}
    if predictions.windows is not None:
        result["eval_windows"] = int(predictions.windows.sum())
    result.update(metadata.head.metrics(predictions.labels, predictions.probabilities, thresholds))
    if metadata.head.has_classes:
        confidence, correct = metadata.head.confidence_and_correct(predictions.labels, predictions.probabilities)
        result["eval_ece"] = expected_calibration_error(confidence, correct)
    return result


def calibrate(predictions: Predictions, head: TaskHead) -> tuple[float, dict[str, float]]:
    """Fits a temperature on these predictions (dev); returns it and the calibrated ECE and loss."""
    labels = tf.constant(predictions.labels)
    temperature = fit_temperature(predictions.logits, lambda logits: head.per_example_loss(labels, logits))
    scaled = predictions.logits / temperature
    confidence, correct = head.confidence_and_correct(predictions.labels, head.probabilities(scaled).numpy())
    return temperature, {"eval_temperature": round(temperature, 6),
                         "eval_ece_calibrated": expected_calibration_error(confidence, correct),
                         "eval_loss_calibrated": float(tf.reduce_mean(head.per_example_loss(labels, scaled)))}


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
