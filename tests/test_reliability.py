"""Faults during training: a diverging loss, a damaged checkpoint."""

from __future__ import annotations

import glob
import re

import tensorflow as tf

from test_run_classifier import run_classifier


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=1", "--save_checkpoints_steps=3")
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=5",
                            "--save_checkpoints_steps=3", "--learning_rate=1e12", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss became" in errors[0] and "learning rate" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    diverged_after = int(re.search(r"between steps (\d+) and", errors[0]).group(1))
    kept = tf.train.latest_checkpoint(out)
    assert kept is not None and int(kept.rsplit("-", 1)[1]) <= diverged_after


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=1", "--save_checkpoints_steps=3")
    latest = tf.train.latest_checkpoint(out)
    assert latest.endswith("model.ckpt-8")
    for data in glob.glob(latest + ".data-*"):
        with open(data, "r+b") as f:
            f.truncate(100)
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=2",
                            "--save_checkpoints_steps=3")
    assert "model.ckpt-8 is unreadable" in result.stderr
    assert "Resuming from" in result.stderr and "model.ckpt-6 at step 6" in result.stderr
    assert tf.train.latest_checkpoint(out).endswith("model.ckpt-16")
