"""--class_weight: the loss weighed as defined (by hand on a tiny batch), balanced as scikit-learn, in a run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_one_error_line, read_split, run_classifier
from sklearn.utils.class_weight import compute_class_weight

from bert_tf.heads import head_for

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]], np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_multiclass_weights_scale_each_examples_loss_by_its_class():
    labels, weights = np.array([0, 2, 1]), np.array([0.5, 2.0, 3.0], np.float32)
    got = head_for("multiclass").per_example_loss(tf.constant(labels), tf.constant(LOGITS), tf.constant(weights))
    by_hand = -log_softmax(LOGITS.astype(np.float64))[np.arange(3), labels] * weights[labels]
    np.testing.assert_allclose(got.numpy(), by_hand, rtol=1e-6)


def test_multilabel_weights_scale_each_labels_positive_term():
    labels, weights = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]]), np.array([4.0, 1.0, 0.25], np.float32)
    got = head_for("multilabel").per_example_loss(tf.constant(labels), tf.constant(LOGITS), tf.constant(weights))
    z = LOGITS.astype(np.float64)
    sigmoid = 1 / (1 + np.exp(-z))
    by_hand = -(weights * labels * np.log(sigmoid) + (1 - labels) * np.log(1 - sigmoid)).mean(axis=1)
    np.testing.assert_allclose(got.numpy(), by_hand, rtol=1e-5)


def test_balanced_weights_are_scikit_learns():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(head_for("multiclass").balanced_class_weights(labels, 3), expected)
    indicators = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])  # label 0: 2 of 4; label 1: 1 of 4
    np.testing.assert_allclose(head_for("multilabel").balanced_class_weights(indicators, 2), [1.0, 3.0])


@pytest.mark.slow
def test_a_run_records_and_uses_its_class_weights(tiny_records, tiny_encoder, tmp_path):
    flags = ("--do_train", "--num_train_epochs=1")
    run_classifier(tiny_records, tiny_encoder, str(tmp_path / "balanced"), *flags, "--class_weight=balanced")
    labels = read_split(tiny_records, "train")["label_ids"]
    recorded = json.load(open(os.path.join(tmp_path, "balanced", "run_config.json")))["class_weight"]
    np.testing.assert_allclose(recorded, compute_class_weight("balanced", classes=np.arange(2), y=labels), rtol=1e-5)

    losses = {}
    for name, weight in (("none", "none"), ("even", "1,1"), ("heavy", "1,5")):
        out = str(tmp_path / name)
        run_classifier(tiny_records, tiny_encoder, out, *flags, f"--class_weight={weight}")
        losses[name] = _final_loss(out)
    assert losses["even"] == pytest.approx(losses["none"], rel=1e-6)  # weights of 1 change nothing
    assert losses["heavy"] != pytest.approx(losses["none"], rel=1e-3)


def _final_loss(run_dir: str) -> float:
    """The last training loss logged in train/ (TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(os.path.join(run_dir, "train"), size_guidance={"tensors": 0})
    events.Reload()
    return float(tensor_util.make_ndarray(events.Tensors("loss")[-1].tensor_proto))


@pytest.mark.parametrize("weight, message", [
    ("1,2,3", "--class_weight: '1,2,3' is not none, balanced or 2 positive weights; one per label, in the order neg, pos"),
    ("1,-2", "is not none, balanced or 2 positive weights"),
    ("heavy", "is not none, balanced or 2 positive weights"),
])
def test_bad_class_weights_are_one_line(tiny_records, tiny_encoder, tmp_path, weight, message):
    result = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), "--do_train", f"--class_weight={weight}",
                            check=False)
    assert_one_error_line(result, message)
