"""A fine-tuning run as plain steps over one RunConfig: validate → build → train → evaluate → predict → export.

run_classifier (the command line) builds the RunConfig from its flags and calls these steps; any other caller
(a notebook, a sweep, an API) calls the same ones, so they cannot drift apart:

    config = RunConfig(data_dir="data/my_task", output_dir="runs/my_task", do_train=True, do_eval=True)
    run = ClassifierRun(config)      # validates the records and flags, builds the model under its strategy
    run.train()
    result, report_path = run.evaluate()  # eval_results.txt and the report are written too
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bert_tf import distribution, reports, run_directory
from bert_tf.calibration import load_temperature, save_temperature
from bert_tf.encoders.hub_layers import HubEncoder
from bert_tf.encoders.loading import encoder_info
from bert_tf.errors import InputError
from bert_tf.evaluation import Predictions, Predictor, calibrate, compute_metrics, tune_thresholds
from bert_tf.export import ServingModel, save_serving_model
from bert_tf.files import atomic_write
from bert_tf.model import BertClassifier, choose_pooling
from bert_tf.optimization import create_optimizer, layerwise_learning_rates
from bert_tf.records import RecordsMetadata, check_split_files, fingerprint, iterate_numpy, read_metadata, read_texts
from bert_tf.run_config import RunConfig, check_settings
from bert_tf.tokenization import load_vocab, vocab_digest
from bert_tf.training import RecordsDamaged, Trainer, TrainConfig, TrainingDiverged, WorkerLost, restore_latest


def validate(config: RunConfig) -> RecordsMetadata:
    """Checks the settings against each other and against the records; returns the records' metadata."""
    check_settings(config)
    metadata = read_metadata(config.data_dir)
    for wanted, split, flag in ((config.do_train, "train", "do_train"), (config.do_eval, "dev", "do_eval"),
                                (config.do_predict, "test", "do_predict")):
        if wanted and not metadata.size(split):
            raise InputError(f"the records have no {split} split", file=config.data_dir, flag=flag,
                             hint=f"write them with --{split}_file")
        if wanted:
            check_split_files(config.data_dir, split, metadata)
    if config.init_checkpoint and not tf.io.gfile.exists(config.init_checkpoint + ".index"):
        raise InputError("no such checkpoint", file=config.init_checkpoint, flag="init_checkpoint",
                         hint="give a checkpoint prefix such as runs/my_task/model.ckpt-1000 (its .index file exists)")
    if config.tune_thresholds and (not metadata.head.tunes_thresholds or not config.do_eval):
        raise InputError("tunes multi-label thresholds on dev: it needs multi-label records and --do_eval",
                         flag="tune_thresholds")
    if config.calibrate and (not config.do_eval or not metadata.head.has_classes or metadata.windowed):
        raise InputError("fits a temperature on dev: it needs --do_eval and classes (multi-class or multi-label), "
                         "and records without --long_document=sliding_window", flag="calibrate")
    if config.best_metric and config.best_metric not in metadata.head.selectable_metrics:
        raise InputError(f"'{config.best_metric}' is not a dev metric of a {metadata.task_type} task where higher is "
                         f"better", flag="best_metric", hint=f"use one of {', '.join(metadata.head.selectable_metrics)}")
    if metadata.windowed and config.aggregation == "vote" and not metadata.head.votes:
        raise InputError("vote needs classes", flag="aggregation",
                         hint=f"aggregate {metadata.task_type} windows with mean or max")
    if config.aggregation != RunConfig.aggregation and not metadata.windowed:
        logging.warning("--aggregation applies only to records written with --long_document=sliding_window")
    return metadata


def class_weights(setting: str, metadata: RecordsMetadata, data_dir: str) -> tuple[float, ...] | None:
    """--class_weight as one weight per label (None for none); balanced counts the training records' labels."""
    if setting == "none":
        return None
    if not metadata.head.has_classes:
        raise InputError(f"class weights need classes; a {metadata.task_type} task has none", flag="class_weight")
    if setting == "balanced":
        labels = np.concatenate([batch["label_ids"] for batch in iterate_numpy(data_dir, "train", metadata)])
        return tuple(round(float(w), 6) for w in metadata.head.balanced_class_weights(labels, metadata.num_labels))
    try:
        weights = tuple(float(part) for part in setting.split(","))
    except ValueError:
        weights = ()
    if len(weights) != metadata.num_labels or not all(w > 0 and np.isfinite(w) for w in weights):
        raise InputError(f"'{setting}' is not none, balanced or {metadata.num_labels} positive weights", flag="class_weight",
                         hint=f"one per label, in the order {', '.join(metadata.label_names)}")
    return weights


class ClassifierRun:
    """One run: the model, optimizer, trainer and predictor of `config`, and the steps that use them.

    Construction validates the config and records, picks the strategy and precision, checks --output_dir
    against an earlier run and builds the model under the strategy. Only the chief writes files.
    """

    def __init__(self, config: RunConfig):
        self.config = config
        self.metadata = metadata = validate(config)
        self.strategy, self.precision = distribution.start(config)
        self.encoder = encoder_info(config.encoder)
        self._check_vocab()
        self.pooling = choose_pooling(config.pooling, config.encoder, metadata.paired)
        self.chief = distribution.is_chief(self.strategy)
        self.class_weights = class_weights(config.class_weight, metadata, config.data_dir) if config.do_train else None
        self.lock = run_directory.RunLock(config.output_dir)
        self._prepare_output_dir()
        train_config = self._train_config()
        total_steps = train_config.total_steps(metadata) if config.do_train else 1
        self.model, optimizer = self._build(total_steps)
        self.trainer = Trainer(self.strategy, self.model, optimizer, metadata, train_config)
        if config.init_checkpoint and not self.trainer.restore_from.latest_checkpoint:
            tf.train.Checkpoint(model=self.model).restore(config.init_checkpoint).expect_partial()
        self.predictor = Predictor(self.strategy, self.model, metadata, config.eval_batch_size,
                                   train_config.pad_multiple, config.aggregation, config.bucket_window)
        self._last_evaluation = None  # (step, predictions, result) of the latest evaluation during training
        self.best = run_directory.BestWeights(config.output_dir, config.best_metric or metadata.head.primary_metric,
                                              writer=self.chief)
        self._best_in_use = False  # whether use_final_weights loaded best/'s weights

    def _prepare_output_dir(self) -> None:
        """Takes run.lock (chief) and checks and records the run in run_config.json (run_directory.prepare)."""
        config, metadata = self.config, self.metadata
        identity = {"encoder": config.encoder, "label_names": metadata.label_names, "task_type": metadata.task_type,
                    "max_seq_length": metadata.max_seq_length, "pooling": self.pooling, "data_dir": config.data_dir}
        training = None
        if config.do_train:
            training = {key: getattr(config, key) for key in run_directory.TRAINING_KEYS if hasattr(config, key)}
            training.update(class_weight=self.class_weights, train_records=fingerprint(config.data_dir, "train"))
        run_directory.prepare(config.output_dir, identity, training, config.overwrite_output_dir,
                              self.lock if self.chief else None)

    def close(self) -> None:
        """Releases run.lock (also done at exit)."""
        self.lock.release()

    @contextlib.contextmanager
    def holding_lock(self) -> Iterator[None]:
        """run.lock taken again for one step of a run that released it (the Python API holds it per call)."""
        if self.chief:
            self.lock.acquire()
        try:
            yield
        finally:
            self.close()

    def __enter__(self) -> "ClassifierRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_vocab(self) -> None:
        expected = self.metadata.vocab_sha256
        if expected and self.config.vocab_file is None and vocab_digest(load_vocab(self.encoder.vocab_file)) != expected:
            raise InputError(
                f"the records were tokenized with another vocab than --encoder={self.config.encoder}'s",
                file=self.config.data_dir, flag="encoder", hint="rewrite the records with the same --encoder",
            )

    def _train_config(self) -> TrainConfig:
        config = self.config
        return TrainConfig(
            data_dir=config.data_dir, output_dir=config.output_dir, global_batch_size=config.train_batch_size,
            num_train_epochs=config.num_train_epochs, seed=config.seed, steps_per_loop=config.iterations_per_loop,
            save_checkpoints_steps=config.save_checkpoints_steps, keep_checkpoint_max=config.keep_checkpoint_max,
            is_chief=self.chief, pad_multiple=distribution.pad_multiple(self.strategy),
            batches_per_bucket_window=config.bucket_window, profile_steps=config.profile_steps,
            eval_every_steps=config.eval_every_steps, class_weights=self.class_weights,
            hparams={"encoder": config.encoder, "pooling": self.pooling, "learning_rate": config.learning_rate,
                     "train_batch_size": config.train_batch_size, "num_train_epochs": config.num_train_epochs,
                     "max_seq_length": self.metadata.max_seq_length, "precision": self.precision,
                     "replicas": self.strategy.num_replicas_in_sync},
        )

    def _build(self, total_steps: int) -> tuple[keras.Model, keras.optimizers.Optimizer]:
        """The classifier and its optimizer, created inside the strategy's scope (where variables are placed)."""
        config = self.config
        with self.strategy.scope():
            keras.utils.set_random_seed(config.seed)
            encoder = HubEncoder(self.encoder.handles.encoder, trainable=not config.freeze_encoder, name="encoder")
            model = BertClassifier(encoder, self.metadata.num_labels, pooling=self.pooling,
                                   dropout_rate=config.dropout_rate)
            multipliers = None
            if config.layerwise_lr_decay != 1.0:
                try:
                    multipliers = layerwise_learning_rates(encoder.trainable_variables, config.layerwise_lr_decay)
                except ValueError as error:
                    raise InputError(str(error), flag="layerwise_lr_decay") from None
            optimizer = create_optimizer(
                config.learning_rate, total_steps, int(total_steps * config.warmup_proportion), config.weight_decay,
                gradient_accumulation_steps=config.gradient_accumulation_steps,
                loss_scaling=self.precision == "fp16", learning_rate_multipliers=multipliers,
            )
        return model, optimizer

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    @property
    def weights_step(self) -> int:
        """The step of the weights that evaluate, predict and export use (best/'s, or the last)."""
        return self.best.step if self._best_in_use else self.global_step

    def train(self) -> int:
        """Trains (or resumes) to the planned step; with do_eval, evaluates after every epoch (and every
        eval_every_steps), keeps the best weights in best/ and stops early after early_stopping_patience
        evaluations without improvement. Then picks the final weights (use_final_weights)."""
        try:
            step = self.trainer.train(monitor=self if self.config.do_eval else None)
        except (TrainingDiverged, WorkerLost, RecordsDamaged) as error:
            raise InputError(str(error)) from None
        self.use_final_weights()
        return step

    def restore(self) -> None:
        """Without training: the latest checkpoint of output_dir (or init_checkpoint's weights, already loaded),
        then the final weights (use_final_weights)."""
        if restore_latest(self.trainer.checkpoint, self.trainer.restore_from) is None and not self.config.init_checkpoint:
            raise InputError("holds no checkpoint to evaluate, predict or export", file=self.config.output_dir,
                             flag="output_dir", hint="train first (--do_train), or pass --init_checkpoint")
        self.use_final_weights()

    def use_final_weights(self) -> None:
        """final_weights=best: best/'s weights when the run has them (it evaluated dev while training), else the last."""
        if self.config.final_weights != "best" or not self.best.exists() or self.best.step == self.global_step:
            return
        distribution.barrier(self.strategy)  # the chief's best/ is complete before any worker reads it
        tf.train.Checkpoint(model=self.model).read(self.best.checkpoint).expect_partial()
        self._best_in_use = True
        logging.info("Using the best weights, of step %d (%s = %.4f), not the last (step %d); --final_weights=last "
                     "for those", self.best.step, self.best.metric, self.best.best, self.global_step)

    # The training monitor (training.TrainingMonitor), with do_eval.
    def evaluate_during_training(self, step: int) -> None:
        predictions = self.predictor.predict(self.config.data_dir, "dev")
        result = {**compute_metrics(predictions, self.metadata), "global_step": step}
        self._last_evaluation = step, predictions, result
        self.best.offer(self.model, result)
        logging.info("Step %d: %s = %.4f", step, self.best.metric, result[self.best.metric])
        if self.chief:
            reports.write_eval_summaries(self.config.output_dir, result, step, image=False)

    def should_stop(self, step: int) -> bool:
        """Early stopping: early_stopping_patience evaluations since the best one, counted from the schedule,
        so a resumed run counts the evaluations before its restart too."""
        patience = self.config.early_stopping_patience
        if not patience or self.best.step == 0:
            return False
        schedule = self.trainer.config.evaluation_steps(self.metadata)
        return sum(self.best.step < point <= step for point in schedule) >= patience

    def evaluate(self) -> tuple[dict, str | None]:
        """Scores dev: eval_results.txt, the report and eval/ summaries (chief); returns (metrics, report's path)."""
        step = self.weights_step
        if self._last_evaluation and self._last_evaluation[0] == step:  # an evaluation in training saw these weights
            _, predictions, result = self._last_evaluation
        else:
            predictions = self.predictor.predict(self.config.data_dir, "dev")
            result = {**compute_metrics(predictions, self.metadata), "global_step": step}
        if self.config.calibrate:
            temperature, calibrated = calibrate(predictions, self.metadata.head)
            result.update(calibrated)
            if self.chief:
                save_temperature(self.config.output_dir, temperature, step)
            # Decisions from here on (tuned thresholds, the report) see what predict and the export will give.
            scaled = predictions.logits / temperature
            predictions = dataclasses.replace(predictions, logits=scaled,
                                              probabilities=self.metadata.head.probabilities(scaled).numpy())
        thresholds = None
        if self.config.tune_thresholds:
            thresholds = tune_thresholds(predictions)
            # Scored on the very examples they were tuned on: optimistic, hence the _tuned names; the test
            # split's scores (--do_predict) are the honest figure.
            tuned = compute_metrics(predictions, self.metadata, thresholds)
            result.update({f"{key}_tuned": tuned[key] for key in ("eval_micro_f1", "eval_macro_f1", "eval_exact_match")})
        report_path = None
        if self.chief:
            if thresholds is not None:
                reports.save_thresholds(self.config.output_dir, thresholds, self.metadata)
            report_path = reports.write_eval_results(self.config.output_dir, result, predictions, self.metadata,
                                                     thresholds)
            reports.write_eval_summaries(self.config.output_dir, result, step)
        return result, report_path

    def predict(self) -> tuple[Predictions, dict | None]:
        """Predicts the test split: test_results.tsv and predictions.tsv (chief), and, when the test split has
        labels, test_eval_results.txt; returns (the predictions, the test metrics or None)."""
        output_dir = self.config.output_dir
        thresholds = reports.load_thresholds(output_dir, self.metadata)
        predictions = self.predictor.predict(self.config.data_dir, "test", temperature=load_temperature(output_dir))
        result = None
        if self.metadata.test_has_labels:
            # The test split came with labels (BBC News, MRPC, …): score it too, in its own file.
            metrics = compute_metrics(predictions, self.metadata, thresholds)
            result = {key.replace("eval_", "test_", 1): value for key, value in metrics.items()}
            result["global_step"] = self.weights_step
        if self.chief:
            texts = read_texts(self.config.data_dir, "test")
            reports.write_predictions(output_dir, predictions, self.metadata, texts, thresholds)
            if result is not None:
                atomic_write(os.path.join(output_dir, "test_eval_results.txt"), reports.results_text(result))
        return predictions, result

    def serving_model(self) -> ServingModel:
        """The model behind raw strings, as the export serves it (the tokenizer of the records inside)."""
        config = self.config
        lower = self.encoder.do_lower_case if config.do_lower_case is None else config.do_lower_case
        return ServingModel(self.model, config.vocab_file or self.encoder.vocab_file, lower, self.metadata,
                            config.aggregation, reports.load_thresholds(config.output_dir, self.metadata),
                            global_step=self.weights_step, temperature=load_temperature(config.output_dir),
                            jit_compile=config.export_xla)

    def export(self, export_dir: str | None = None) -> str | None:
        """The serving SavedModel in export_dir (default output_dir/export); chief only, others return None."""
        if not self.chief:
            return None
        return save_serving_model(self.serving_model(), export_dir or os.path.join(self.config.output_dir, "export"))
