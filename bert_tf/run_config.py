"""A run's settings (RunConfig) and the checks that need nothing but the settings themselves.

Kept free of TensorFlow, so `run_classifier` answers a wrong flag value in well under a second, before the
~8 s TensorFlow import; the checks against the records are bert_tf.run.validate's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from bert_tf.errors import InputError


@dataclasses.dataclass
class BaseRunConfig:
    """The settings run_classifier and run_pretraining share, each the flag of the same name with its default:
    the directory, encoder, training-loop and hardware flag groups of bert_tf.flags."""

    # What and where
    data_dir: str | None = None
    output_dir: str | None = None
    encoder: str = "default"
    overwrite_output_dir: bool = False
    # The training loop
    train_batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    seed: int = 42
    bucket_window: int = 50
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    # Hardware
    distribution_strategy: str = "auto"
    num_gpus: int | None = None
    num_cpu_replicas: int = 1
    use_tpu: bool = False
    tpu_name: str | None = None
    tpu_zone: str | None = None
    gcp_project: str | None = None
    mixed_precision: str = "auto"
    iterations_per_loop: int = 20


@dataclasses.dataclass
class RunConfig(BaseRunConfig):
    """The settings of a fine-tuning run; each field is the run_classifier flag of the same name, with its default."""

    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    do_export: bool = False
    export_xla: bool = False
    init_checkpoint: str | None = None
    # The model
    vocab_file: str | None = None
    do_lower_case: bool | None = None
    pooling: str = "auto"
    dropout_rate: float = 0.1
    freeze_encoder: bool = False
    # Optimization
    class_weight: str = "none"
    layerwise_lr_decay: float = 1.0
    num_train_epochs: float = 3.0
    warmup_proportion: float = 0.1
    gradient_accumulation_steps: int = 1
    # Evaluation, the best weights, and prediction
    eval_every_steps: int | None = None
    early_stopping_patience: int | None = None
    best_metric: str | None = None
    final_weights: str = "best"
    aggregation: str = "mean"
    tune_thresholds: bool = False
    calibrate: bool = False
    profile_steps: tuple[int, int] | None = None  # trace training steps [START, END) with the TF profiler


def _at_least(low: float) -> Callable[[float], bool]:
    return lambda value: math.isfinite(value) and value >= low


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


# Each numeric setting's valid range, and how to say it. A wrong value would otherwise crash deep in
# TensorFlow (a batch of 0), train silently wrong (a negative learning rate ascends the loss) or train
# one step where the user asked for none (0 epochs).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "train_batch_size": (_at_least(1), "a positive number of examples"),
    "eval_batch_size": (_at_least(1), "a positive number of examples"),
    "gradient_accumulation_steps": (_at_least(1), "1 (off) or more batches"),
    "save_checkpoints_steps": (_at_least(1), "a positive number of steps"),
    "keep_checkpoint_max": (_at_least(1), "a positive number of checkpoints"),
    "iterations_per_loop": (_at_least(1), "a positive number of steps"),
    "num_cpu_replicas": (_at_least(1), "1 or more logical CPUs"),
    "bucket_window": (_at_least(0), "0 (off) or a positive number of batches"),
    "learning_rate": (_positive, "a positive rate, e.g. 5e-5"),
    "num_train_epochs": (_positive, "a positive number of epochs (fractions allowed)"),
    "warmup_proportion": (lambda value: 0 <= value <= 1, "a share of the steps in [0, 1]"),
    "weight_decay": (_at_least(0), "0 (off) or a positive decay"),
    "dropout_rate": (lambda value: 0 <= value < 1, "a rate in [0, 1)"),
    "layerwise_lr_decay": (lambda value: 0 < value <= 1, "a factor in (0, 1]: 1 is off, Sun et al. used 0.95"),
}


def check_shared_settings(config: BaseRunConfig) -> None:
    """The checks of the settings `config` shares with every run: required directories, and every RANGES field
    it has."""
    for name in ("data_dir", "output_dir"):
        if not getattr(config, name):
            raise InputError("is required", flag=name)
    for name, (valid, expected) in RANGES.items():
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        if not valid(value):
            raise InputError(f"{value} is out of range", flag=name, hint=f"use {expected}")
    if config.num_gpus is not None and config.num_gpus < 0:
        raise InputError(f"{config.num_gpus} is out of range", flag="num_gpus", hint="use 0 or more, or leave it unset for all")


def check_settings(config: RunConfig) -> None:
    """The checks of `config` that need neither the records nor TensorFlow."""
    check_shared_settings(config)
    for name in ("eval_every_steps", "early_stopping_patience"):
        value = getattr(config, name)
        if value is not None and (value < 1 or not (config.do_train and config.do_eval)):
            raise InputError(f"{value} needs --do_train --do_eval and a positive number", flag=name)
    if config.final_weights not in ("best", "last"):
        raise InputError(f"'{config.final_weights}' is neither best nor last", flag="final_weights")
    if config.overwrite_output_dir and not config.do_train:
        # Without training, starting afresh would delete the trained weights and evaluate an untrained head.
        raise InputError("deletes the earlier run's checkpoints: it needs --do_train", flag="overwrite_output_dir",
                         hint="to evaluate, predict or export that run, leave it out")
