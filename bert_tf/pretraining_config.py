"""The settings of a masked-LM pretraining run (PretrainingConfig) and the checks that need nothing but them.

Kept free of TensorFlow, as run_config.py is: `run_pretraining` answers a wrong flag value before the seconds-long
TensorFlow import. The checks against the records and the encoder are bert_tf.pretraining's.
"""

from __future__ import annotations

import dataclasses

from bert_tf.errors import InputError
from bert_tf.run_config import RANGES

# What fixes the data order and the step count of a pretraining run: resuming with another value would continue
# at the old step on another order or schedule. Checked when its --output_dir holds checkpoints.
TRAINING_KEYS = ("train_batch_size", "num_train_steps", "seed", "bucket_window", "train_records")
# RANGES (run_config) that apply here too: the settings run_classifier and run_pretraining share.
SHARED_RANGES = ("train_batch_size", "eval_batch_size", "save_checkpoints_steps", "keep_checkpoint_max",
                 "iterations_per_loop", "num_cpu_replicas", "bucket_window", "learning_rate", "weight_decay")


@dataclasses.dataclass
class PretrainingConfig:
    """The settings of a run; each field is the run_pretraining flag of the same name, with its default."""

    # What and where
    data_dir: str | None = None
    output_dir: str | None = None
    encoder: str = "default"
    overwrite_output_dir: bool = False
    # Optimization
    num_train_steps: int | None = None
    warmup_steps: int | None = None  # None: num_train_steps // 10
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    train_batch_size: int = 32
    seed: int = 42
    bucket_window: int = 50
    # Evaluation
    eval_batch_size: int = 64
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
    # Checkpoints
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5

    @property
    def warmup(self) -> int:
        """The warmup steps: --warmup_steps, or a tenth of the steps (google-research/bert: 10,000 of 100,000)."""
        return self.num_train_steps // 10 if self.warmup_steps is None else self.warmup_steps


def check_settings(config: PretrainingConfig) -> None:
    """The checks of `config` that need neither the records nor TensorFlow."""
    for name in ("data_dir", "output_dir", "num_train_steps"):
        if getattr(config, name) is None or getattr(config, name) == "":
            raise InputError("is required", flag=name)
    if config.num_train_steps < 1:
        raise InputError(f"{config.num_train_steps} is out of range", flag="num_train_steps",
                         hint="use a positive number of steps")
    if not 0 <= config.warmup <= config.num_train_steps:
        raise InputError(f"{config.warmup} is out of range", flag="warmup_steps",
                         hint=f"use 0 to --num_train_steps ({config.num_train_steps}) steps")
    for name in SHARED_RANGES:
        valid, expected = RANGES[name]
        value = getattr(config, name)
        if not valid(value):
            raise InputError(f"{value} is out of range", flag=name, hint=f"use {expected}")
    if config.num_gpus is not None and config.num_gpus < 0:
        raise InputError(f"{config.num_gpus} is out of range", flag="num_gpus",
                         hint="use 0 or more, or leave it unset for all")
