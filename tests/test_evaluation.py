"""Metrics against independent computations, multi-label thresholds tuned on dev, and the per-label report."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import run_classifier, run_create_tfrecords, serve_in_fresh_process, write_csv
from sklearn import metrics as skm

from bert_tf import evaluation, reports
from bert_tf.errors import InputError
from bert_tf.evaluation import Predictions
from bert_tf.records import RecordsMetadata
from bert_tf.reports import read_results


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic: the share of (positive, negative) pairs ranked right, ties ½."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    true_positives = np.sum(labels & predicted)
    return 2 * true_positives / max(labels.sum() + predicted.sum(), 1)


def multilabel_predictions(seed: int = 0, examples: int = 200, labels: int = 5) -> Predictions:
    rng = np.random.default_rng(seed)
    truth = (rng.random((examples, labels)) < [0.5, 0.2, 0.05, 0.3, 0.1]).astype(np.int32)
    truth[:, 4] = 0  # a label dev never shows
    # Informative but shifted probabilities: positives sit around 0.35, so 0.5 misses many of them.
    probs = np.clip(0.12 + 0.25 * truth + rng.normal(0, 0.12, truth.shape), 0, 1).astype(np.float32)
    return Predictions(np.arange(examples), truth, probs, rng.random(examples))


METADATA = RecordsMetadata(task_type="multilabel", num_labels=5, label_names=["a", "b", "c", "d", "e"],
                           max_seq_length=16)


def test_multilabel_metrics_match_hand_computation():
    predictions = multilabel_predictions()
    result = evaluation.compute_metrics(predictions, METADATA)
    truth, predicted = predictions.labels.astype(bool), predictions.probabilities >= 0.5
    assert result["eval_micro_f1"] == pytest.approx(f1(truth, predicted))
    per_label = [f1(truth[:, j], predicted[:, j]) for j in range(5)]
    assert result["eval_macro_f1"] == pytest.approx(np.mean(per_label))
    assert result["eval_exact_match"] == pytest.approx(np.mean(np.all(truth == predicted, axis=1)))
    # Macro AUC over the labels that occur (label e never does: its AUC is undefined).
    aucs = [rank_auc(truth[:, j], predictions.probabilities[:, j]) for j in range(4)]
    assert result["eval_macro_auc"] == pytest.approx(np.mean(aucs))


def test_multiclass_and_regression_metrics_match_hand_computation():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.3 * labels + rng.random(300) * 0.7, 0, 1)
    predictions = Predictions(np.arange(300), labels, np.stack([1 - probs, probs], 1), np.zeros(300))
    result = evaluation.compute_metrics(predictions, RecordsMetadata("multiclass", 2, ["0", "1"], 16))
    predicted = probs > 0.5
    tp, tn = np.sum(predicted & (labels == 1)), np.sum(~predicted & (labels == 0))
    fp, fn = np.sum(predicted & (labels == 0)), np.sum(~predicted & (labels == 1))
    assert result["eval_accuracy"] == pytest.approx((tp + tn) / 300)
    assert result["eval_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["eval_mcc"] == pytest.approx((tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))))
    assert result["eval_auc"] == pytest.approx(rank_auc(labels, probs))

    scores = rng.normal(size=100)
    targets = scores + rng.normal(size=100)
    result = evaluation.compute_metrics(Predictions(np.arange(100), targets, scores[:, None], np.zeros(100)),
                                        RecordsMetadata("regression", 1, ["score"], 16))
    assert result["eval_pearson"] == pytest.approx(np.corrcoef(scores, targets)[0, 1])
    assert result["eval_mse"] == pytest.approx(np.mean((scores - targets) ** 2))


def test_tuned_thresholds_maximise_each_labels_f1():
    predictions = multilabel_predictions()
    thresholds = evaluation.tune_thresholds(predictions)
    grid = np.round(np.arange(1, 100) / 100, 2)
    truth = predictions.labels
    for j in range(4):
        scores = [skm.f1_score(truth[:, j], predictions.probabilities[:, j] >= t, zero_division=0) for t in grid]
        best = max(scores)
        assert skm.f1_score(truth[:, j], predictions.probabilities[:, j] >= thresholds[j]) == pytest.approx(best)
        closest_best = min((abs(t - 0.5), t) for t, s in zip(grid, scores) if s == pytest.approx(best))[1]
        assert thresholds[j] == pytest.approx(closest_best)
    assert thresholds[4] == 0.5  # never seen on dev: left at the default
    assert thresholds[1] < 0.5  # the shifted positives need a lower threshold
    tuned = evaluation.compute_metrics(predictions, METADATA, thresholds)
    assert tuned["eval_macro_f1"] > evaluation.compute_metrics(predictions, METADATA)["eval_macro_f1"]


def test_label_report_has_each_labels_auc_and_threshold():
    predictions = multilabel_predictions()
    thresholds = np.array([0.3, 0.4, 0.5, 0.6, 0.5])
    text, details = METADATA.head.report(predictions.labels, predictions.probabilities, METADATA.label_names, thresholds)
    rows = details["per_label"]
    for j, name in enumerate(METADATA.label_names):
        row = rows[name]
        assert row["threshold"] == thresholds[j]
        assert row["support"] == predictions.labels[:, j].sum()
        predicted = predictions.probabilities[:, j] >= thresholds[j]
        assert row["f1"] == pytest.approx(f1(predictions.labels[:, j].astype(bool), predicted))
        if j < 4:
            assert row["auc"] == pytest.approx(rank_auc(predictions.labels[:, j], predictions.probabilities[:, j]))
        else:
            assert np.isnan(row["auc"])
        assert text.splitlines()[j + 1].split()[0] == name


def test_thresholds_round_trip_and_refuse_other_labels(tmp_path):
    thresholds = np.array([0.31, 0.42, 0.5, 0.07, 0.5])
    reports.save_thresholds(str(tmp_path), thresholds, METADATA)
    np.testing.assert_allclose(reports.load_thresholds(str(tmp_path), METADATA), thresholds)
    assert reports.load_thresholds(str(tmp_path), dataclasses.replace(METADATA, task_type="multiclass")) is None
    with pytest.raises(InputError, match="thresholds.json: was tuned for other labels"):
        reports.load_thresholds(str(tmp_path), dataclasses.replace(METADATA, label_names=["a", "b", "c", "d", "f"]))


def test_confusion_matrix_of_300_classes_draws_the_50_most_frequent(tmp_path):
    rng = np.random.default_rng(0)
    frequent = rng.choice(300, reports.MAX_CLASSES_DRAWN, replace=False)  # 100, 99, … examples; the others 1
    counts = np.ones(300, np.int64)
    counts[frequent] = np.arange(100, 100 - reports.MAX_CLASSES_DRAWN, -1)
    labels = rng.permutation(np.repeat(np.arange(300), counts))
    probabilities = rng.random((len(labels), 300)).astype(np.float32)
    predictions = Predictions(np.arange(len(labels)), labels, probabilities, rng.random(len(labels)))
    metadata = RecordsMetadata(task_type="multiclass", num_labels=300, label_names=[f"class_{i}" for i in range(300)],
                               max_seq_length=16)

    reports.write_eval_results(str(tmp_path), {"eval_accuracy": 0.0}, predictions, metadata)
    with open(tmp_path / "eval_metrics.json") as f:
        matrix = np.array(json.load(f)["confusion_matrix"])
    assert matrix.shape == (300, 300)  # the whole matrix is still in the metrics
    assert reports.drawn_classes(matrix).tolist() == sorted(frequent.tolist())
    png = (tmp_path / "confusion_matrix.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the PNG's IHDR
    assert width == height == 100 * (2.5 + 0.5 * reports.MAX_CLASSES_DRAWN)  # a figure of 50 classes, not 300
    assert len(png) < 2_000_000


# --- Multi-label end to end ---------------------------------------------------------------------------------
def emotion_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """Toy multi-label: 'happy' if a positive word, 'angry' if a negative one, 'cinema' if film/movie."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        words = list(rng.choice(["good", "love", "bad", "hate", "film", "movie", "plot", "the", "was"], size=5))
        labels = [name for name, cue in (("happy", {"good", "love"}), ("angry", {"bad", "hate"}),
                                          ("cinema", {"film", "movie"})) if cue & set(words)]
        rows.append((" ".join(words), ",".join(labels)))
    return rows


@pytest.mark.slow
def test_multilabel_thresholds_tuned_on_dev_serve_with_the_model(tmp_path, tiny_encoder):
    paths = {split: write_csv(str(tmp_path / f"{split}.csv"), emotion_rows(n, seed))
             for split, n, seed in (("train", 64, 1), ("dev", 32, 2), ("test", 12, 3))}
    records = str(tmp_path / "records")
    run_create_tfrecords(f"--train_file={paths['train']}", f"--dev_file={paths['dev']}",
                         f"--test_file={paths['test']}", "--text_column=text", "--label_column=label",
                         "--task_type=multilabel", f"--encoder={tiny_encoder}", "--max_seq_length=12",
                         f"--output_dir={records}")
    out = str(tmp_path / "run")
    run_classifier(records, tiny_encoder, out, "--num_train_epochs=2", "--do_train", "--do_eval", "--do_predict",
                   "--do_export", "--tune_thresholds")

    saved = json.load(open(os.path.join(out, "thresholds.json")))
    names, thresholds = saved["label_names"], np.array(saved["thresholds"])
    assert names == ["angry", "cinema", "happy"]
    results = read_results(os.path.join(out, "eval_results.txt"))
    assert float(results["eval_macro_f1_tuned"]) >= float(results["eval_macro_f1"])
    report = open(os.path.join(out, "label_report.txt")).read().splitlines()
    assert [line.split()[0] for line in report[1:]] == names
    assert [float(line.split()[2]) for line in report[1:]] == pytest.approx(thresholds, abs=0.005)

    probs = np.loadtxt(os.path.join(out, "test_results.tsv"), delimiter="\t")
    expected = [",".join(n for n, on in zip(names, row >= thresholds) if on) for row in probs]
    written = [line.split("\t")[1] for line in open(os.path.join(out, "predictions.tsv")).read().splitlines()[1:]]
    assert written == expected
    served = serve_in_fresh_process(os.path.join(out, "export"), [text for text, _ in emotion_rows(12, 3)])
    assert served["label"] == expected

    # Retraining replaces the weights the thresholds were tuned for: they go with them.
    run_classifier(records, tiny_encoder, out, "--num_train_epochs=3", "--do_train", "--overwrite_output_dir")
    assert not os.path.exists(os.path.join(out, "thresholds.json"))
