"""A run's --output_dir: what identifies its run (run_config.json), one run at a time (run.lock), starting
afresh, and the best weights in best/.

  run_config.json   the encoder, labels, task type, sequence length and pooling the checkpoints were trained
                    with, and what fixes the data order and step count (batch size, epochs, seed, …, the train
                    records' fingerprint); a later run into the same directory must match them (or pass
                    --overwrite_output_dir)
  run.lock          who is using the directory now (command, host, pid, start time)
  best/             model.ckpt and eval_results.txt of the epoch with the best dev metric so far
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import socket
import sys

import keras
import tensorflow as tf
from absl import logging

from bert_tf.calibration import CALIBRATION_FILE
from bert_tf.errors import InputError
from bert_tf.files import atomic_write
from bert_tf.reports import THRESHOLDS_FILE, read_results, results_text

RUN_FILE = "run_config.json"
LOCK_FILE = "run.lock"
BEST_DIR = "best"
# What must not change between runs into one directory: checkpoints of one cannot continue as the other.
IDENTITY_KEYS = ("encoder", "label_names", "task_type", "max_seq_length", "pooling")
# What fixes the data order, the step count and the loss: a run resumed with another value would silently be
# neither run (a new batch size continues at the old step). Checked when training resumes.
TRAINING_KEYS = ("train_batch_size", "num_train_epochs", "seed", "gradient_accumulation_steps", "bucket_window",
                 "class_weight", "train_records")


def has_checkpoints(output_dir: str) -> bool:
    return bool(tf.io.gfile.glob(os.path.join(output_dir, "model.ckpt-*.index"))) or \
        tf.io.gfile.exists(os.path.join(output_dir, BEST_DIR, "model.ckpt.index"))


def prepare(output_dir: str, identity: dict, training_settings: dict | None, overwrite: bool,
            lock: "RunLock | None") -> None:
    """Creates output_dir, takes its lock and records the run in it, after checking it against an earlier
    run's checkpoints. The chief passes its lock; the other workers (lock None) only check.

    `training_settings` (TRAINING_KEYS; None when not training) are checked only if there are checkpoints to
    resume from: a run that failed before its first checkpoint does not bind the next one. With overwrite, the
    chief first removes the earlier run's checkpoints and logs, so training starts afresh. Thresholds tuned for
    weights that training is about to replace are removed.
    """
    try:
        tf.io.gfile.makedirs(output_dir)
    except (tf.errors.OpError, OSError) as error:
        raise InputError(f"cannot create it ({error})", flag="output_dir") from None
    chief = lock is not None
    if chief:
        lock.acquire()
    resuming = not overwrite and has_checkpoints(output_dir)
    if overwrite:
        if chief:
            remove_earlier_run(output_dir)
    elif resuming:
        check_same_run(output_dir, identity, IDENTITY_KEYS)
        if training_settings is not None:
            check_same_run(output_dir, training_settings, TRAINING_KEYS)
    if chief and (training_settings is not None or not resuming):
        record = {**identity, **(training_settings or {})}
        try:
            atomic_write(os.path.join(output_dir, RUN_FILE), json.dumps(record, indent=2) + "\n")
        except OSError as error:
            raise InputError(f"cannot write in it ({error.strerror or error})", file=output_dir, flag="output_dir",
                             hint="use a writable --output_dir") from None
        for stale in (THRESHOLDS_FILE, CALIBRATION_FILE):  # fitted to weights that training replaces
            path = os.path.join(output_dir, stale)
            if training_settings is not None and tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


def remove_earlier_run(output_dir: str) -> None:
    for name in tf.io.gfile.listdir(output_dir):
        if name.startswith(("model.ckpt-", "checkpoint", RUN_FILE, THRESHOLDS_FILE, CALIBRATION_FILE)) or name.rstrip("/") in (BEST_DIR, "train", "eval"):
            target = os.path.join(output_dir, name.rstrip("/"))
            if tf.io.gfile.isdir(target):
                tf.io.gfile.rmtree(target)
            else:
                tf.io.gfile.remove(target)


def check_same_run(output_dir: str, settings: dict, keys: tuple[str, ...]) -> None:
    """Refuses to continue the checkpoints of an earlier run in the same directory with other `keys` settings
    (a key an older run_config.json lacks is not checked)."""
    path = os.path.join(output_dir, RUN_FILE)
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path) as f:
            previous = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"is not valid JSON ({error})", file=path, hint="delete it, or use --overwrite_output_dir") from None
    settings = json.loads(json.dumps(settings))  # as recorded: tuples become lists
    for key in keys:
        if key in previous and previous[key] != settings.get(key):
            raise InputError(
                f"holds the checkpoints of a run with another {key} ({previous[key]!r}, now {settings.get(key)!r})",
                file=output_dir, flag="output_dir",
                hint=f"pass the same {key} to resume it, or use a new --output_dir, or --overwrite_output_dir",
            )


class RunLock:
    """run.lock: one run per output_dir. A second run refuses to start; a lock whose process is gone (same host,
    dead pid: a kill -9, a crash) is taken over with a warning.

    The file is created exclusively on local disks. Object stores (gs://) have no exclusive create, so there two
    runs starting in the same second can both proceed; the lock still stops the usual case, a second command
    into a directory in use.
    """

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.holder = {"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:500],
                       "host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        self.held = False

    def acquire(self) -> None:
        current = self._read()
        if current is not None:
            if (current.get("host"), current.get("pid")) == (self.holder["host"], self.holder["pid"]):
                return  # this process holds it already (a TextClassifier that fits, then evaluates)
            if current and (current.get("host") != self.holder["host"] or _process_alive(current.get("pid"))):
                raise self._in_use(current)
            logging.warning("Taking over %s from a run that is gone (pid %s, started %s)", self.path,
                            current.get("pid"), current.get("started"))
            tf.io.gfile.remove(self.path)
        if not self._create():
            raise self._in_use(self._read() or {})
        self.held = True
        atexit.register(self.release)

    def release(self) -> None:
        if self.held:
            self.held = False
            current = self._read()
            if current and current.get("pid") == self.holder["pid"] and current.get("host") == self.holder["host"]:
                tf.io.gfile.remove(self.path)

    def _create(self) -> bool:
        content = json.dumps(self.holder, indent=2) + "\n"
        if "://" in self.path:
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(content)
            return True
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise InputError(f"cannot write in it ({error.strerror})", file=os.path.dirname(self.path),
                             flag="output_dir", hint="use a writable --output_dir") from None
        with os.fdopen(descriptor, "w") as f:
            f.write(content)
        return True

    def _read(self) -> dict | None:
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.load(f)
        except tf.errors.NotFoundError:
            return None
        except ValueError:  # half-written by a run killed while taking it: nobody holds it
            return {}

    def _in_use(self, current: dict) -> InputError:
        return InputError(
            f"another run is using it: `{current.get('command', '?')}` (pid {current.get('pid', '?')} on "
            f"{current.get('host', '?')}, since {current.get('started', '?')})", file=os.path.dirname(self.path),
            flag="output_dir", hint=f"wait for it to finish or use another --output_dir; if that run is gone, "
                                    f"delete {self.path}")


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


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
        if self.metric not in result:  # eval_f1 of a task with more than 2 classes, eval_auc of a dev lacking one
            raise InputError(f"dev gives no {self.metric}", flag="best_metric",
                             hint=f"use one of {', '.join(key for key in sorted(result) if key.startswith('eval_'))}")
        if not result[self.metric] > self.best:
            return False
        self.best, self.step = result[self.metric], int(result["global_step"])
        if self.writer:
            tf.io.gfile.makedirs(self.directory)
            tf.train.Checkpoint(model=model).write(self.checkpoint)
            atomic_write(os.path.join(self.directory, "eval_results.txt"), results_text(result))
        return True
