"""BERT's optimizer: AdamW with weight decay off for LayerNorm and biases, linear warmup then linear decay."""

from __future__ import annotations

import keras
import tensorflow as tf

# google-research/bert excludes these from weight decay: decaying LayerNorm scales and biases towards 0
# hurts, and they are too few to overfit.
NO_DECAY = ["LayerNorm", "layer_norm", "bias"]


@keras.saving.register_keras_serializable(package="bert_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak` over `warmup_steps`, then falls linearly to 0 at `total_steps`.

    >>> schedule = WarmupLinearDecay(1e-4, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 55, 100)]
    [0.0, 5e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = peak
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * step / max(self.warmup_steps, 1)
        decay_span = max(self.total_steps - self.warmup_steps, 1)
        decay = self.peak * tf.maximum(0.0, (self.total_steps - step) / decay_span)
        return tf.where(step < self.warmup_steps, warmup, decay)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def create_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    weight_decay: float = 0.01,
    gradient_accumulation_steps: int = 1,
) -> keras.optimizers.AdamW:
    """AdamW as BERT fine-tunes: β=(0.9, 0.999), ε=1e-6.

    BERT also clips gradients to a global norm of 1.0; the training step does that (`clip_gradients`),
    because Keras clips each replica's partial gradients before summing them across replicas, which is not
    the norm of the batch's gradient.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupLinearDecay(learning_rate, total_steps, warmup_steps),
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        gradient_accumulation_steps=gradient_accumulation_steps if gradient_accumulation_steps > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def clip_gradients(gradients: list[tf.Tensor], clip_norm: float = 1.0) -> list[tf.Tensor]:
    """In a replica context: sums the gradients over replicas, clips their global norm, and returns them
    divided by the number of replicas, so the optimizer's own cross-replica sum yields the clipped total."""
    context = tf.distribute.get_replica_context()
    # Embedding gradients come as IndexedSlices with one row per token occurrence; Keras's AdamW makes them
    # dense anyway, and summing them dense here gives the same result whatever the number of replicas.
    dense = [tf.convert_to_tensor(gradient) for gradient in gradients]
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    clipped, _ = tf.clip_by_global_norm(total, clip_norm)
    return [gradient / context.num_replicas_in_sync for gradient in clipped]
