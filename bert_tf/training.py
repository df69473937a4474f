"""One custom training loop for every tf.distribute strategy, with checkpoints and TensorBoard summaries.

Why not `model.fit`: on TF 2.21, Keras 3's fit fails under MultiWorkerMirroredStrategy (it cannot convert
the PerReplica inputs). `strategy.run` on a `tf.function` step with a Keras 3 model and optimizer works on
every strategy, so, as TF Model Garden's Orbit does, there is one loop: several steps per `tf.function` call
(fewer Python round trips), `model.ckpt-N` checkpoints through `tf.train.CheckpointManager`, and a resume
that continues at the saved step, mid-epoch, on the same data order.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hp

from bert_tf.errors import InputError, Stopped
from bert_tf.input_pipeline import model_inputs, train_dataset
from bert_tf.optimization import clip_gradients
from bert_tf.progress import Progress
from bert_tf.records import RecordsMetadata, parse_examples

CHECKPOINT_NAME = "model.ckpt"


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class WorkerLost(Exception):
    """Another worker of a multi-worker run stopped; every worker must be restarted to resume."""


class RecordsDamaged(Exception):
    """A record file ended mid-record or failed its checksum (a truncated copy, a full disk at create time)."""


def remove_tree(path: str) -> None:
    """Removes a directory on any tf.io.gfile file system, if it is there."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def os_reason(error: Exception) -> str:
    """The operating system's words in a TensorFlow I/O error ("No space left on device"), without TF's prefix."""
    message = getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)
    message = re.sub(r"\{\{.*?\}\}\s*", "", message).splitlines()[0]
    return message.rsplit("; ", 1)[-1][:200]


class StopSignals:
    """While training: SIGTERM (a preemptible VM, a TPU maintenance event, Kubernetes) or Ctrl-C asks the loop
    to stop at the next step boundary, i.e. when the running tf.function call returns (Python handlers run
    only between calls), after a checkpoint there. A second Ctrl-C stops at once.

    Why not tf.distribute.experimental.PreemptionCheckpointHandler: on GCE CPU and TPU VMs it only logs that
    it is unsupported and never saves, and it counts its own calls in the checkpoint; this loop already has
    the step and the checkpoint manager, and agrees across workers with one all-reduce per call
    (Trainer._any_worker_stopping).
    """

    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame) -> None:
        if self.received is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal_number
            logging.warning("%s: stopping at the next step boundary, after a checkpoint (Ctrl-C again stops at once)",
                            signal.Signals(signal_number).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # Python only lets the main thread handle them
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)


@dataclasses.dataclass
class TrainConfig:
    data_dir: str
    output_dir: str
    global_batch_size: int
    num_train_epochs: float
    seed: int = 42
    steps_per_loop: int = 20
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    clip_norm: float = 1.0
    pad_multiple: int | None = 1  # input_pipeline.model_inputs: trim each batch to its longest (None: keep)
    batches_per_bucket_window: int = 0
    hparams: dict = dataclasses.field(default_factory=dict)
    is_chief: bool = True
    profile_steps: tuple[int, int] | None = None  # trace steps [start, end) with the TF profiler (chief only)
    eval_every_steps: int | None = None  # evaluate every this many steps too, not only at the end of each epoch
    class_weights: tuple[float, ...] | None = None  # the training loss's per-class (multi-label: positive) weights
    num_train_steps: int | None = None  # train exactly this many steps (run_pretraining), not num_train_epochs'

    def steps_per_epoch(self, metadata: RecordsMetadata) -> int:
        steps = metadata.train_data_size // self.global_batch_size
        if steps == 0:
            raise InputError(
                f"{metadata.train_data_size} training examples make no full batch of {self.global_batch_size}",
                flag="train_batch_size", hint="use a smaller batch",
            )
        return steps

    def total_steps(self, metadata: RecordsMetadata) -> int:
        if self.num_train_steps is not None:
            self.steps_per_epoch(metadata)  # a batch larger than the records is still refused
            return self.num_train_steps
        return max(1, int(self.steps_per_epoch(metadata) * self.num_train_epochs))

    def evaluation_steps(self, metadata: RecordsMetadata) -> list[int]:
        """The steps after which a monitor evaluates: every epoch's end (and every eval_every_steps), the last."""
        steps_per_epoch, total = self.steps_per_epoch(metadata), self.total_steps(metadata)
        points = set(range(steps_per_epoch, total + 1, steps_per_epoch)) | {total}
        if self.eval_every_steps:
            points |= set(range(self.eval_every_steps, total + 1, self.eval_every_steps))
        return sorted(points)


class Objective(Protocol):
    """What the Trainer minimises: how a record file's batch is parsed, and one replica's loss of its batch.

    The classifier's is ClassificationObjective (below); run_pretraining's is pretraining.MaskedLMObjective.
    """

    # Names of the per-replica sums replica_loss returns beside the loss; the loop adds them up over replicas
    # and steps, and summaries() turns the totals of one loop call into train/ scalars.
    statistics: tuple[str, ...]

    def parse(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        """A batch of serialized records → features (tf.data map; int32 ids)."""

    def replica_loss(self, model: keras.Model, features: dict[str, tf.Tensor]
                     ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """In a replica context, while training: this replica's share of the global batch's loss (the shares
        of all replicas add up to it) and its `statistics` (float32 scalars)."""

    def summaries(self, totals: dict[str, float]) -> dict[str, float]:
        """train/ scalars (besides loss and learning_rate) from one loop call's statistics."""


class ClassificationObjective:
    """The task head's loss (heads.py), weighted per example and by class, over the global batch size."""

    statistics = ()

    def __init__(self, metadata: RecordsMetadata, global_batch_size: int,
                 class_weights: tuple[float, ...] | None = None, pad_multiple: int | None = 1):
        self.metadata = metadata
        self.head = metadata.head
        self.global_batch_size = global_batch_size
        self.pad_multiple = pad_multiple
        self._class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def parse(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return parse_examples(serialized, self.metadata)

    def replica_loss(self, model: keras.Model, features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
        logits = model(model_inputs(features, self.pad_multiple), training=True)
        losses = self.head.per_example_loss(features["label_ids"], logits, self._class_weights) * features["weight"]
        # Sum over this replica's examples / global batch: the optimizer sums gradients over replicas,
        # which then average over the global batch whatever the number of replicas.
        return tf.reduce_sum(losses) / self.global_batch_size, {}

    def summaries(self, totals: dict[str, float]) -> dict[str, float]:
        return {}


class TrainingMonitor(Protocol):
    """Evaluates during training and may stop it (bert_tf.run's best-weights and early-stopping bookkeeping)."""

    def evaluate_during_training(self, step: int) -> None:
        """Runs at each of TrainConfig.evaluation_steps (on every worker: it may use collectives)."""

    def should_stop(self, step: int) -> bool:
        """Asked after a restore and after each evaluation: True ends training at `step`."""


def checkpoint_manager(checkpoint: tf.train.Checkpoint, config: TrainConfig) -> tf.train.CheckpointManager:
    """Chief writes `output_dir/model.ckpt-N`; other workers write a throwaway copy (collectives need all)."""
    directory = config.output_dir if config.is_chief else os.path.join(config.output_dir, ".worker_tmp", str(os.getpid()))
    return tf.train.CheckpointManager(
        checkpoint, directory, max_to_keep=config.keep_checkpoint_max, checkpoint_name=CHECKPOINT_NAME
    )


def chief_checkpoints(checkpoint: tf.train.Checkpoint, config: TrainConfig) -> tf.train.CheckpointManager:
    """The chief's checkpoints, which every worker restores from (so all resume at the same step)."""
    return tf.train.CheckpointManager(checkpoint, config.output_dir, max_to_keep=None, checkpoint_name=CHECKPOINT_NAME)


def restore_latest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> str | None:
    """Restores the newest readable checkpoint; a damaged newest one is skipped with a warning, not deleted."""
    for path in reversed(manager.checkpoints):
        try:
            checkpoint.restore(path).expect_partial()
            return path
        except Exception as error:  # a damaged file fails in the reader with OpError, ValueError, IndexError…
            logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path, type(error).__name__)
    return None


class Trainer:
    """Trains `model` with `optimizer` on the records of `config.data_dir` under `strategy`, minimising
    `objective` (default: the classifier's, ClassificationObjective of the records' task head).

    Build the model and optimizer inside `strategy.scope()` before constructing the Trainer. `metadata` needs
    `train_data_size` (and, for the default objective, is the records' RecordsMetadata).
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 metadata: RecordsMetadata, config: TrainConfig, objective: Objective | None = None):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.metadata = metadata
        self.config = config
        self.objective = objective or ClassificationObjective(metadata, config.global_batch_size,
                                                              config.class_weights, config.pad_multiple)
        with strategy.scope():
            # Slots exist before a restore, so it fills them rather than deferring.
            optimizer.build(model.trainable_variables)
            # Batches trained so far. Not optimizer.iterations: with gradient accumulation Keras counts updates
            # there (batches // accumulation steps), and the data position and checkpoint numbers are batches.
            self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, global_step=self.step_counter)
        self.manager = checkpoint_manager(self.checkpoint, config)
        self.restore_from = chief_checkpoints(self.checkpoint, config)
        # No AutoGraph: the loop is an explicit tf.while_loop and nothing else branches on tensors, and
        # AutoGraph's conversion of every Keras and encoder function called inside took seconds per trace.
        self.train_steps = tf.function(self._train_steps_fn, autograph=False)

    @property
    def global_step(self) -> int:
        return int(self.step_counter.numpy())

    def _replica_step(self, features):
        scaling = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            loss, statistics = self.objective.replica_loss(self.model, features)
            scaled_loss = self.optimizer.scale_loss(loss) if scaling else loss
        gradients = clip_gradients(tape.gradient(scaled_loss, self.model.trainable_variables), self.config.clip_norm,
                                   loss_scale=self.optimizer.dynamic_scale if scaling else None)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return loss, statistics

    def _train_steps_fn(self, iterator, num_steps):
        """num_steps steps; returns their mean loss and the objective's statistics summed over them."""
        names = self.objective.statistics

        def total(per_replica):
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        def body(step, loss_sum, sums):
            loss, statistics = self.strategy.run(self._replica_step, args=(next(iterator),))
            return step + 1, loss_sum + total(loss), tuple(s + total(statistics[n]) for s, n in zip(sums, names))

        initial = (tf.constant(0), tf.constant(0.0), tuple(tf.constant(0.0) for _ in names))
        _, loss_sum, sums = tf.while_loop(lambda step, *_: step < num_steps, body, initial)
        self.step_counter.assign_add(tf.cast(num_steps, tf.int64))
        return loss_sum / tf.cast(num_steps, tf.float32), dict(zip(names, sums))

    def train(self, monitor: TrainingMonitor | None = None) -> int:
        """Runs (or resumes) training to the planned number of steps, or until `monitor` stops it; returns the step."""
        config = self.config
        restored = restore_latest(self.checkpoint, self.restore_from)
        step = self._first_step = self.global_step
        total_steps = config.total_steps(self.metadata)
        if restored:
            logging.info("Resuming from %s at step %d of %d", restored, step, total_steps)
        if step >= total_steps or (monitor is not None and monitor.should_stop(step)):
            return step
        if config.is_chief:  # throwaway checkpoint copies of workers of an earlier, interrupted run
            remove_tree(os.path.join(config.output_dir, ".worker_tmp"))
        writer = tf.summary.create_file_writer(os.path.join(config.output_dir, "train")) if config.is_chief else tf.summary.create_noop_writer()
        progress = Progress(total_steps, "train steps")
        progress.done = step
        profiler = StepProfiler(os.path.join(config.output_dir, "train"), config.profile_steps if config.is_chief else None)
        evaluations = [point for point in config.evaluation_steps(self.metadata) if point > step] if monitor else []
        with writer.as_default(), progress, profiler, StopSignals() as self._signals:
            if config.is_chief and config.hparams:
                hp.hparams(config.hparams)
            while step < total_steps:
                stop_at = evaluations[0] if evaluations else total_steps
                step = self._train_until(step, stop_at, total_steps, progress, profiler)
                if evaluations and step == evaluations[0]:
                    evaluations.pop(0)
                    monitor.evaluate_during_training(step)
                    if monitor.should_stop(step):
                        if step % config.save_checkpoints_steps:  # not saved yet: a rerun resumes (and stops) here
                            self._save(step)
                        logging.info("Early stopping at step %d of %d", step, total_steps)
                        break
        writer.flush()
        if not config.is_chief:  # a non-chief worker's checkpoints exist only for the collective save
            remove_tree(self.manager.directory)
        return step

    def _train_until(self, step: int, stop_at: int, total_steps: int, progress: Progress,
                     profiler: "StepProfiler") -> int:
        """Trains from `step` to stop_at (within one epoch at a time), saving checkpoints; returns the step."""
        config = self.config
        steps_per_epoch = config.steps_per_epoch(self.metadata)
        while step < stop_at:
            epoch = step // steps_per_epoch
            dataset = train_dataset(config.data_dir, self.metadata, config.global_batch_size, config.seed, epoch,
                                    config.batches_per_bucket_window, parse=self.objective.parse)
            dataset = dataset.skip(step - epoch * steps_per_epoch)
            iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
            epoch_end = min((epoch + 1) * steps_per_epoch, stop_at)
            while step < epoch_end:
                self._stop_if_signalled(step)
                next_save = (step // config.save_checkpoints_steps + 1) * config.save_checkpoints_steps
                num_steps = min(config.steps_per_loop, epoch_end - step, next_save - step)
                profiler.before(step)
                started = time.monotonic()
                loss, statistics = self._run_steps(iterator, step, num_steps)
                elapsed = time.monotonic() - started
                profiler.after(step + num_steps)
                step += num_steps
                self._log_steps(step, num_steps, loss, statistics, elapsed, progress)
                if step % config.save_checkpoints_steps == 0 or step == total_steps:
                    self._save(step)
        return step

    def _save(self, step: int) -> None:
        """model.ckpt-step; a failed write (a full disk) removes its partial files and says how to go on."""
        try:
            self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            prefix = os.path.join(self.manager.directory, f"{CHECKPOINT_NAME}-{step}")
            for partial in tf.io.gfile.glob(prefix + "_temp*") + tf.io.gfile.glob(prefix + ".*"):
                if tf.io.gfile.isdir(partial):
                    tf.io.gfile.rmtree(partial)
                else:
                    tf.io.gfile.remove(partial)
            raise InputError(f"cannot write checkpoint {os.path.basename(prefix)} ({os_reason(error)})",
                             file=self.manager.directory, flag="output_dir",
                             hint="free space (or fix the permissions); the same command then resumes from the "
                                  "last checkpoint") from None

    def _stop_if_signalled(self, step: int) -> None:
        """At a step boundary: if this or any other worker got SIGTERM/Ctrl-C, all save step's checkpoint and stop."""
        if not self._any_worker_stopping(self._signals.received is not None):
            return
        if step % self.config.save_checkpoints_steps and step != self._first_step:  # not saved there yet
            self._save(step)
        signal_number = self._signals.received or signal.SIGTERM
        cause = "" if self._signals.received else " (another worker was stopped)"
        raise Stopped(f"stopped at step {step}{cause}; the same command resumes", signal_number)

    def _any_worker_stopping(self, stopping_here: bool) -> bool:
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return stopping_here
        flag = self.strategy.run(lambda: tf.constant(1.0 if stopping_here else 0.0))
        try:
            return float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, flag, axis=None)) > 0
        except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
            raise WorkerLost(f"a worker stopped ({error.message.splitlines()[0][:200]}); run the same command again "
                             f"on every worker to resume from the last checkpoint") from None

    def _log_steps(self, step: int, num_steps: int, loss: float, statistics: dict[str, float], elapsed: float,
                   progress: Progress) -> None:
        examples_per_sec = num_steps * self.config.global_batch_size / elapsed
        learning_rate = float(self.optimizer.learning_rate)
        tf.summary.scalar("loss", loss, step=step)
        extra = self.objective.summaries(statistics)
        for name, value in extra.items():
            tf.summary.scalar(name, value, step=step)
        tf.summary.scalar("learning_rate", learning_rate, step=step)
        tf.summary.scalar("examples_per_sec", examples_per_sec, step=step)
        shown = "".join(f" {name} {value:.4f}" for name, value in extra.items())
        progress.update(num_steps, f"loss {loss:.4f}{shown} lr {learning_rate:.2e} {examples_per_sec:.1f} ex/s")

    def _run_steps(self, iterator, step: int, num_steps: int) -> tuple[float, dict[str, float]]:
        """One call of the compiled loop: num_steps steps from `step`; returns their mean loss and statistics."""
        try:
            loss, statistics = self.train_steps(iterator, tf.constant(num_steps))
            loss, statistics = float(loss), {name: float(value) for name, value in statistics.items()}
        except tf.errors.DataLossError as error:
            raise RecordsDamaged(
                f"{self.config.data_dir}: a train record file is damaged or truncated "
                f"({error.message.splitlines()[0][:200]}); rewrite the records with create_tfrecords") from None
        except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
            if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise
            raise WorkerLost(
                f"a worker stopped between steps {step} and {step + num_steps} "
                f"({error.message.splitlines()[0][:200]}); run the same command again on every worker "
                f"to resume from the last checkpoint") from None
        if not np.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} between steps {step} and {step + num_steps}; the last good checkpoint "
                f"is kept. Usual causes: a learning rate too high, bad labels"
            )
        return loss, statistics


class StepProfiler:
    """Traces the training loop calls that cover steps [start, end) with the TensorFlow profiler.

    The trace lands in `logdir/plugins/profile/<time>/`, where TensorBoard's Profile tab (the xprof plugin)
    shows the op-by-op time line and statistics; bench/profile_summary.py prints the op statistics.
    Tracing costs time itself: profile a few steps after the first call (which traces the tf.function).
    """

    def __init__(self, logdir: str, steps: tuple[int, int] | None):
        self.logdir, self.steps, self.active = logdir, steps, False

    def before(self, step: int) -> None:
        if self.steps and not self.active and self.steps[0] <= step < self.steps[1]:
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def after(self, step: int) -> None:
        if self.active and step >= self.steps[1]:
            self.stop()

    def stop(self) -> None:
        if self.active:
            tf.profiler.experimental.stop()
            self.active = False
            logging.info("Profile of steps %d-%d written under %s/plugins/profile", *self.steps, self.logdir)

    def __enter__(self) -> "StepProfiler":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
