"""Calibration: the expected calibration error against a plain loop, temperature scaling on an over-confident
model, and --calibrate through eval, predictions and the export."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_one_error_line, run_classifier, serve_in_fresh_process

from bert_tf.calibration import CALIBRATION_FILE, expected_calibration_error, fit_temperature
from bert_tf.heads import MultiClassHead, MultiLabelHead
from bert_tf.reports import read_results


def reference_ece(confidences, correct, bins=15) -> float:
    """Guo et al.'s definition, bin by bin: bin m holds the confidences in ((m-1)/M, m/M]."""
    total = 0.0
    for m in range(1, bins + 1):
        members = [i for i, c in enumerate(confidences) if (m - 1) / bins < c <= m / bins or (m == 1 and c == 0)]
        if members:
            accuracy = np.mean([correct[i] for i in members])
            confidence = np.mean([confidences[i] for i in members])
            total += len(members) / len(confidences) * abs(accuracy - confidence)
    return total


def test_ece_matches_the_definition():
    rng = np.random.default_rng(0)
    confidences = np.concatenate([rng.uniform(0, 1, 997), [0.0, 1 / 15, 1.0]])  # with bin edges
    correct = rng.uniform(0, 1, 1000) < confidences ** 2
    assert expected_calibration_error(confidences, correct) == pytest.approx(reference_ece(confidences, correct),
                                                                             abs=1e-12)


def over_confident(seed: int = 0, scale: float = 4.0, count: int = 4000):
    """Labels drawn from softmax(z); the model's logits are scale × z: right as often, far too sure."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, (count, 3))
    probabilities = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probabilities])
    return scale * true_logits, labels


def test_temperature_scaling_recovers_the_scale_and_lowers_ece():
    head = MultiClassHead()
    logits, labels = over_confident()
    temperature = fit_temperature(logits, lambda scaled: head.per_example_loss(tf.constant(labels), scaled))
    assert temperature == pytest.approx(4.0, rel=0.1)

    def ece(scaled):
        return expected_calibration_error(*head.confidence_and_correct(labels, head.probabilities(scaled).numpy()))

    before, after = ece(logits), ece(logits / temperature)
    assert before > 0.15 and after < 0.03, (before, after)
    assert np.array_equal((logits / temperature).argmax(axis=1), logits.argmax(axis=1))


def test_multilabel_calibration_scores_every_yes_no_decision():
    head = MultiLabelHead()
    labels = np.array([[1, 0], [1, 1]])
    probabilities = np.array([[0.9, 0.2], [0.4, 0.7]])
    confidence, correct = head.confidence_and_correct(labels, probabilities)
    assert np.allclose(confidence, [[0.9, 0.8], [0.6, 0.7]]) and correct.tolist() == [[True, True], [False, True]]


@pytest.mark.slow
def test_calibrate_feeds_eval_predictions_and_the_export(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--do_eval", "--do_predict", "--do_export",
                   "--calibrate", "--num_train_epochs=3")
    results = read_results(os.path.join(out, "eval_results.txt"))
    temperature = json.load(open(os.path.join(out, CALIBRATION_FILE)))["temperature"]
    assert results["eval_temperature"] == pytest.approx(temperature)
    assert 0 <= results["eval_ece_calibrated"] <= 1 and 0 <= results["eval_ece"] <= 1
    # What the temperature minimises (on 20 dev examples ECE itself is too noisy to order; see the test above).
    assert results["eval_loss_calibrated"] <= results["eval_loss"] + 1e-6
    assert abs(temperature - 1) > 1e-3  # a fitted value, not the identity

    texts = [row["text"] for row in csv.DictReader(open(os.path.join(os.path.dirname(tiny_records), "test.csv")))]
    calibrated = np.array(serve_in_fresh_process(os.path.join(out, "export"), texts)["probabilities"])
    predicted = np.loadtxt(os.path.join(out, "test_results.tsv"), delimiter="\t")
    assert np.allclose(calibrated, predicted, atol=1e-6)

    # The same weights exported without the temperature: softmax(log p / T) must give the calibrated output.
    shutil.move(os.path.join(out, "export"), str(tmp_path / "calibrated_export"))
    os.remove(os.path.join(out, CALIBRATION_FILE))
    run_classifier(tiny_records, tiny_encoder, out, "--do_export")
    raw = np.array(serve_in_fresh_process(os.path.join(out, "export"), texts)["probabilities"])
    rescaled = np.exp(np.log(raw) / temperature)
    assert np.allclose(calibrated, rescaled / rescaled.sum(axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(calibrated, raw, atol=1e-3)


def test_calibrate_needs_do_eval(tiny_records, tiny_encoder, tmp_path):
    result = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), "--do_train", "--calibrate",
                            check=False)
    assert_one_error_line(result, "--calibrate", "--do_eval")
