"""A run's --output_dir: what identifies its run (run_config.json), starting afresh, and the best weights in best/.

  run_config.json   the encoder, labels, task type, sequence length and pooling the checkpoints were trained
                    with; a later run into the same directory must match them (or pass --overwrite_output_dir)
  best/             model.ckpt and eval_results.txt of the epoch with the best dev metric so far
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from bert_tf.errors import InputError
from bert_tf.files import atomic_write
from bert_tf.reports import THRESHOLDS_FILE, read_results, results_text

RUN_FILE = "run_config.json"
BEST_DIR = "best"
# What must not change between runs into one directory: checkpoints of one cannot continue as the other.
IDENTITY_KEYS = ("encoder", "label_names", "task_type", "max_seq_length", "pooling")


def prepare(output_dir: str, identity: dict, overwrite: bool, chief: bool, training: bool) -> None:
    """Creates output_dir and records the run's identity in it, after checking it against an earlier run's.

    With overwrite, the chief first removes the earlier run's checkpoints and logs, so training starts afresh.
    Thresholds tuned for weights that training is about to replace are removed.
    """
    try:
        tf.io.gfile.makedirs(output_dir)
    except (tf.errors.OpError, OSError) as error:
        raise InputError(f"cannot create it ({error})", flag="output_dir") from None
    if overwrite:
        if chief:
            remove_earlier_run(output_dir)
    else:
        check_same_run(output_dir, identity)
    if chief:
        atomic_write(os.path.join(output_dir, RUN_FILE), json.dumps(identity, indent=2) + "\n")
        stale_thresholds = os.path.join(output_dir, THRESHOLDS_FILE)
        if training and tf.io.gfile.exists(stale_thresholds):
            tf.io.gfile.remove(stale_thresholds)


def remove_earlier_run(output_dir: str) -> None:
    for name in tf.io.gfile.listdir(output_dir):
        if name.startswith(("model.ckpt-", "checkpoint", RUN_FILE, THRESHOLDS_FILE)) or name.rstrip("/") in (BEST_DIR, "train", "eval"):
            target = os.path.join(output_dir, name.rstrip("/"))
            if tf.io.gfile.isdir(target):
                tf.io.gfile.rmtree(target)
            else:
                tf.io.gfile.remove(target)


def check_same_run(output_dir: str, identity: dict) -> None:
    """Refuses to mix a different task or encoder into checkpoints of an earlier run in the same directory."""
    path = os.path.join(output_dir, RUN_FILE)
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        previous = json.load(f)
    for key in IDENTITY_KEYS:
        if previous.get(key) != identity.get(key):
            raise InputError(
                f"holds a run with another {key} ({previous.get(key)!r}, now {identity.get(key)!r})",
                file=output_dir, flag="output_dir", hint="use a new --output_dir, or --overwrite_output_dir",
            )


class BestWeights:
    """best/: the weights of the evaluation with the highest `metric`, kept across resumed runs.

    Every worker keeps the score (they must agree on early stopping); only the chief, `writer`, writes files.
    """

    def __init__(self, output_dir: str, metric: str, writer: bool = True):
        self.directory = os.path.join(output_dir, BEST_DIR)
        self.checkpoint = os.path.join(self.directory, "model.ckpt")
        self.metric = metric
        self.writer = writer
        recorded = self.recorded()
        self.best = float(recorded.get(metric, float("-inf")))
        self.step = int(recorded.get("global_step", 0))

    def recorded(self) -> dict:
        """best/eval_results.txt ({} before the first evaluation)."""
        path = os.path.join(self.directory, "eval_results.txt")
        return read_results(path) if tf.io.gfile.exists(path) else {}

    def exists(self) -> bool:
        return tf.io.gfile.exists(self.checkpoint + ".index")

    def offer(self, model: keras.Model, result: dict) -> bool:
        """Keeps the model's weights and `result` if they beat the best so far; returns whether they did."""
        if not result[self.metric] > self.best:
            return False
        self.best, self.step = result[self.metric], int(result["global_step"])
        if self.writer:
            tf.io.gfile.makedirs(self.directory)
            tf.train.Checkpoint(model=model).write(self.checkpoint)
            atomic_write(os.path.join(self.directory, "eval_results.txt"), results_text(result))
        return True
