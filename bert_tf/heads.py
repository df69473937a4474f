"""What a task type means, in one place: multi-class, multi-label or regression.

A task head owns everything that differs between task types once the labels are ids: the records' label
feature, the loss, how logits become probabilities, the default thresholds, the metric that picks the best
checkpoint, the metrics, the per-label report, and how a row of probabilities becomes a label string (in the
result files and in the export). Every other module asks the head of its records (`head_for(task_type)`), so
adding a task type means adding one class here (and teaching labels.py to read its labels from a table).

>>> head = head_for("multilabel")
>>> [round(float(p), 3) for p in head.probabilities(tf.constant([[0.0, 2.0]]))[0]]
[0.5, 0.881]
>>> head.label_strings(np.array([[0.5, 0.881], [0.2, 0.1]]), ["joy", "fear"])
[('joy,fear', 0.5), ('', 0.2)]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import stats
from sklearn import metrics as skm


class TaskHead:
    """The behaviour every task type defines; see the subclasses."""

    name: str
    primary_metric: str  # picks the best checkpoint; higher is better for every head so far
    # What --best_metric may pick instead: the metrics where higher is better (a loss or an error is not).
    selectable_metrics: tuple[str, ...] = ()
    tunes_thresholds = False  # whether per-label decision thresholds exist (--tune_thresholds)
    independent_labels = False  # whether an example may have several labels (else exactly one)
    votes = True  # whether windows of a long document can vote (--aggregation=vote)
    has_classes = True  # whether losses can be weighed by class (--class_weight)
    report_file: str | None = None  # where reports.py writes the text of report()

    def label_feature(self, num_labels: int) -> tf.io.FixedLenFeature:
        raise NotImplementedError

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor, class_weights: tf.Tensor | None = None
                         ) -> tf.Tensor:
        """[batch] losses; class_weights (--class_weight) weigh them by class (multi-label: each label's positives)."""
        raise NotImplementedError

    def balanced_class_weights(self, labels: np.ndarray, num_labels: int) -> np.ndarray:
        """--class_weight=balanced, from the training labels (heads with classes only)."""
        raise NotImplementedError

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def default_thresholds(self, num_labels: int) -> np.ndarray | None:
        return None

    def window_votes(self, window_probabilities: tf.Tensor) -> tf.Tensor:
        """Each window's votes [windows, k] for --aggregation=vote."""
        raise ValueError(f"vote needs classes: aggregate {self.name} windows with mean or max")

    def metrics(self, labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray | None) -> dict[str, float]:
        """The task's metrics, google-research/bert's `eval_` prefix (the loss and counts are evaluation's)."""
        raise NotImplementedError

    def report(self, labels: np.ndarray, probabilities: np.ndarray, names: list[str],
               thresholds: np.ndarray | None) -> tuple[str | None, dict]:
        """(A per-class or per-label report as text, or None; what eval_metrics.json adds to the metrics)."""
        return None, {}

    def confidence_and_correct(self, labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each decision's confidence and whether it was right, for the calibration error (heads with classes)."""
        raise NotImplementedError

    def label_strings(self, probabilities: np.ndarray, names: list[str],
                      thresholds: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Each row's predicted label (several: comma-joined) and the probability it was chosen with."""
        raise NotImplementedError

    def serving_labels(self, probabilities: tf.Tensor, names: list[str], thresholds: tf.Tensor) -> tf.Tensor:
        """label_strings in-graph, for the export: [batch] strings."""
        raise NotImplementedError


class MultiClassHead(TaskHead):
    """One label per example out of num_labels classes: softmax, cross-entropy, accuracy."""

    name = "multiclass"
    primary_metric = "eval_accuracy"
    selectable_metrics = ("eval_accuracy", "eval_mcc", "eval_macro_f1", "eval_f1", "eval_auc")
    report_file = "classification_report.txt"

    def label_feature(self, num_labels: int) -> tf.io.FixedLenFeature:
        return tf.io.FixedLenFeature([], tf.int64)

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor, class_weights: tf.Tensor | None = None
                         ) -> tf.Tensor:
        logits, labels = tf.cast(logits, tf.float32), tf.cast(labels, tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return losses if class_weights is None else losses * tf.gather(class_weights, labels)

    def balanced_class_weights(self, labels: np.ndarray, num_labels: int) -> np.ndarray:
        """scikit-learn's "balanced": n_samples / (n_classes × count of the class); 1 for a class train lacks."""
        counts = np.bincount(labels, minlength=num_labels)
        return np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 1.0)

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(logits, axis=-1)

    def window_votes(self, window_probabilities: tf.Tensor) -> tf.Tensor:
        return tf.one_hot(tf.argmax(window_probabilities, axis=-1), tf.shape(window_probabilities)[-1])

    def confidence_and_correct(self, labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted class's probability; whether it is the label (Guo et al.'s top-label calibration)."""
        return probabilities.max(axis=1), probabilities.argmax(axis=1) == labels

    def metrics(self, labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray | None) -> dict[str, float]:
        predicted = probabilities.argmax(axis=1)
        num_labels = probabilities.shape[1]
        result = {
            "eval_accuracy": float(skm.accuracy_score(labels, predicted)),
            "eval_mcc": float(skm.matthews_corrcoef(labels, predicted)),
            "eval_macro_f1": float(skm.f1_score(labels, predicted, average="macro", labels=range(num_labels),
                                                zero_division=0)),
        }
        if num_labels == 2:
            result["eval_f1"] = float(skm.f1_score(labels, predicted, zero_division=0))
            if len(np.unique(labels)) == 2:
                result["eval_auc"] = float(skm.roc_auc_score(labels, probabilities[:, 1]))
        elif len(np.unique(labels)) == num_labels:
            result["eval_auc"] = float(skm.roc_auc_score(labels, probabilities, multi_class="ovr"))
        return result

    def report(self, labels: np.ndarray, probabilities: np.ndarray, names: list[str],
               thresholds: np.ndarray | None) -> tuple[str | None, dict]:
        predicted = probabilities.argmax(axis=1)
        classes = range(len(names))
        text = skm.classification_report(labels, predicted, labels=classes, target_names=names, digits=4,
                                         zero_division=0)
        details = {
            "classification_report": skm.classification_report(labels, predicted, labels=classes, target_names=names,
                                                               output_dict=True, zero_division=0),
            "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
        }
        return text, details

    def label_strings(self, probabilities: np.ndarray, names: list[str],
                      thresholds: np.ndarray | None = None) -> list[tuple[str, float]]:
        return [(names[int(row.argmax())], float(row.max())) for row in probabilities]

    def serving_labels(self, probabilities: tf.Tensor, names: list[str], thresholds: tf.Tensor) -> tf.Tensor:
        return tf.gather(tf.constant(names), tf.argmax(probabilities, axis=-1))


class MultiLabelHead(TaskHead):
    """Any number of num_labels labels per example: a sigmoid and a threshold per label, micro-F1."""

    name = "multilabel"
    primary_metric = "eval_micro_f1"
    selectable_metrics = ("eval_micro_f1", "eval_macro_f1", "eval_exact_match", "eval_macro_auc")
    tunes_thresholds = True
    independent_labels = True
    report_file = "label_report.txt"

    def label_feature(self, num_labels: int) -> tf.io.FixedLenFeature:
        return tf.io.FixedLenFeature([num_labels], tf.int64)

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor, class_weights: tf.Tensor | None = None
                         ) -> tf.Tensor:
        """Sigmoid cross-entropy, averaged over the labels; class_weights weigh each label's positive term."""
        logits, labels = tf.cast(logits, tf.float32), tf.cast(labels, tf.float32)
        if class_weights is None:
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            losses = tf.nn.weighted_cross_entropy_with_logits(labels=labels, logits=logits, pos_weight=class_weights)
        return tf.reduce_mean(losses, axis=-1)

    def balanced_class_weights(self, labels: np.ndarray, num_labels: int) -> np.ndarray:
        """Each label's negatives / positives (PyTorch's pos_weight recipe); 1 for a label train never has."""
        positives = labels.sum(axis=0)
        return np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), 1.0)

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid(logits)

    def default_thresholds(self, num_labels: int) -> np.ndarray:
        return np.full(num_labels, 0.5)

    def window_votes(self, window_probabilities: tf.Tensor) -> tf.Tensor:
        return tf.cast(window_probabilities >= 0.5, tf.float32)

    def confidence_and_correct(self, labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (example, label) yes/no decision at 0.5: its probability max(p, 1 − p); whether it is right."""
        return np.maximum(probabilities, 1 - probabilities), (probabilities >= 0.5) == labels.astype(bool)

    def _thresholds(self, thresholds: np.ndarray | None, num_labels: int) -> np.ndarray:
        return self.default_thresholds(num_labels) if thresholds is None else thresholds

    def metrics(self, labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray | None) -> dict[str, float]:
        predicted = (probabilities >= self._thresholds(thresholds, probabilities.shape[1])).astype(int)
        result = {
            "eval_micro_f1": float(skm.f1_score(labels, predicted, average="micro", zero_division=0)),
            "eval_macro_f1": float(skm.f1_score(labels, predicted, average="macro", zero_division=0)),
            "eval_exact_match": float(np.mean(np.all(predicted == labels, axis=1))),
        }
        scorable = has_both_classes(labels)
        if scorable.any():
            result["eval_macro_auc"] = float(skm.roc_auc_score(labels[:, scorable], probabilities[:, scorable],
                                                               average="macro"))
        return result

    def report(self, labels: np.ndarray, probabilities: np.ndarray, names: list[str],
               thresholds: np.ndarray | None) -> tuple[str | None, dict]:
        """Per label: its support, threshold, precision, recall, F1 and ROC AUC."""
        thresholds = self._thresholds(thresholds, len(names))
        predicted = (probabilities >= thresholds).astype(int)
        precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predicted, average=None,
                                                                             zero_division=0)
        scorable = has_both_classes(labels)
        rows = {}
        width = max(len(name) for name in names)
        lines = [f"{'label':>{width}}  support  threshold  precision  recall      f1     auc\n"]
        for j, name in enumerate(names):
            auc = float(skm.roc_auc_score(labels[:, j], probabilities[:, j])) if scorable[j] else float("nan")
            rows[name] = {"support": int(support[j]), "threshold": float(thresholds[j]),
                          "precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]), "auc": auc}
            lines.append(f"{name:>{width}}  {support[j]:7d}  {thresholds[j]:9.2f}  {precision[j]:9.4f}  "
                         f"{recall[j]:6.4f}  {f1[j]:6.4f}  {auc:6.4f}\n")
        return "".join(lines), {"per_label": rows}

    def label_strings(self, probabilities: np.ndarray, names: list[str],
                      thresholds: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The labels at or over their thresholds; the probability is the least of theirs (the highest if none)."""
        thresholds = self._thresholds(thresholds, len(names))
        strings = []
        for row in probabilities:
            on = row >= thresholds
            strings.append((",".join(names[j] for j in np.flatnonzero(on)),
                            float(row[on].min()) if on.any() else float(row.max())))
        return strings

    def serving_labels(self, probabilities: tf.Tensor, names: list[str], thresholds: tf.Tensor) -> tf.Tensor:
        chosen = tf.ragged.boolean_mask(tf.broadcast_to(tf.constant(names), tf.shape(probabilities)),
                                        probabilities >= thresholds)
        return tf.strings.reduce_join(chosen, axis=-1, separator=",")


class RegressionHead(TaskHead):
    """One number per example: the logit itself, squared error, Pearson correlation."""

    name = "regression"
    primary_metric = "eval_pearson"
    selectable_metrics = ("eval_pearson", "eval_spearman")
    votes = False
    has_classes = False

    def label_feature(self, num_labels: int) -> tf.io.FixedLenFeature:
        return tf.io.FixedLenFeature([], tf.float32)

    def per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor, class_weights: tf.Tensor | None = None
                         ) -> tf.Tensor:
        return tf.square(tf.cast(logits, tf.float32)[:, 0] - tf.cast(labels, tf.float32))

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return logits

    def metrics(self, labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray | None) -> dict[str, float]:
        scores = probabilities[:, 0]
        return {
            "eval_mse": float(np.mean((scores - labels) ** 2)),
            "eval_pearson": float(stats.pearsonr(scores, labels)[0]),
            "eval_spearman": float(stats.spearmanr(scores, labels)[0]),
        }

    def label_strings(self, probabilities: np.ndarray, names: list[str],
                      thresholds: np.ndarray | None = None) -> list[tuple[str, float]]:
        return [(f"{row[0]:.6f}", float("nan")) for row in probabilities]

    def serving_labels(self, probabilities: tf.Tensor, names: list[str], thresholds: tf.Tensor) -> tf.Tensor:
        return tf.strings.as_string(probabilities[:, 0])


HEADS: dict[str, TaskHead] = {head.name: head for head in (MultiClassHead(), MultiLabelHead(), RegressionHead())}


def head_for(task_type: str) -> TaskHead:
    if task_type not in HEADS:
        raise ValueError(f"unknown task type {task_type!r}; one of {', '.join(HEADS)}")
    return HEADS[task_type]


def has_both_classes(labels: np.ndarray) -> np.ndarray:
    """Labels that are on for some examples and off for others: the only ones a ROC AUC is defined for."""
    positives = labels.sum(axis=0)
    return (positives > 0) & (positives < len(labels))
