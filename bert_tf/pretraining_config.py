"""The settings of a masked-LM pretraining run (PretrainingConfig) and the checks that need nothing but them.

Kept free of TensorFlow, as run_config.py is: `run_pretraining` answers a wrong flag value before the seconds-long
TensorFlow import. The checks against the records and the encoder are bert_tf.pretraining's.
"""

from __future__ import annotations

import dataclasses

from bert_tf.errors import InputError
from bert_tf.run_config import BaseRunConfig, check_shared_settings

# What fixes the data order and the step count of a pretraining run: resuming with another value would continue
# at the old step on another order or schedule. Checked when its --output_dir holds checkpoints.
TRAINING_KEYS = ("train_batch_size", "num_train_steps", "seed", "bucket_window", "train_records")


@dataclasses.dataclass
class PretrainingConfig(BaseRunConfig):
    """The settings of a run; each field is the run_pretraining flag of the same name, with its default."""

    num_train_steps: int | None = None
    warmup_steps: int | None = None  # None: num_train_steps // 10
    freeze_encoder_steps: int = 0  # the first steps train the masked-LM head alone

    @property
    def warmup(self) -> int:
        """The warmup steps: --warmup_steps, or a tenth of the steps (google-research/bert: 10,000 of 100,000)."""
        return self.num_train_steps // 10 if self.warmup_steps is None else self.warmup_steps


def check_settings(config: PretrainingConfig) -> None:
    """The checks of `config` that need neither the records nor TensorFlow."""
    check_shared_settings(config)
    if config.num_train_steps is None:
        raise InputError("is required", flag="num_train_steps")
    if config.num_train_steps < 1:
        raise InputError(f"{config.num_train_steps} is out of range", flag="num_train_steps",
                         hint="use a positive number of steps")
    if not 0 <= config.freeze_encoder_steps < config.num_train_steps:
        raise InputError(f"{config.freeze_encoder_steps} is out of range", flag="freeze_encoder_steps",
                         hint=f"use 0 (off) to fewer than --num_train_steps ({config.num_train_steps}) steps")
    if not 0 <= config.warmup <= config.num_train_steps:
        raise InputError(f"{config.warmup} is out of range", flag="warmup_steps",
                         hint=f"use 0 to --num_train_steps ({config.num_train_steps}) steps")
