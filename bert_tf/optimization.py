"""BERT's optimizer: AdamW with weight decay off for LayerNorm and biases, linear warmup then linear decay."""

from __future__ import annotations

import re
from typing import Iterable

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


class FusedAdamW(keras.optimizers.AdamW):
    """Keras's AdamW, each variable's update run as one fused kernel instead of a dozen element-wise ops.

    Keras 3 writes Adam's step as separate ops (subtract, multiply, square, sqrt, divide, assign…), each a
    full pass over the variable with its own temporary: for the 30,522 × 384 word embeddings that is about
    15 passes over 47 MB per step. TensorFlow's ResourceApplyAdam kernel (the one Keras 2 used) does the same
    arithmetic in one pass (README Results: `bench/train_step.py --optimizer=keras|fused`).
    Same variables (checkpoints are interchangeable) and the same update, up to float32 rounding (the
    kernel computes 1 - β in float32): tests/test_optimization.py.

    >>> optimizer = FusedAdamW(learning_rate=1e-3, weight_decay=0.01)
    >>> weight = keras.Variable([1.0, -2.0])
    >>> optimizer.apply([tf.constant([0.5, 0.5])], [weight])
    >>> [round(float(x), 5) for x in weight.numpy()]
    [0.99899, -2.00098]
    """

    def _apply_weight_decay(self, variables):
        pass  # update_step decays each variable just before its Adam update, as Keras does for all first

    def __init__(self, *args, learning_rate_multipliers: dict[str, float] | None = None,
                 frozen_variables: Iterable[str] = (), frozen_steps: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})  # variable path → factor
        self.frozen_variables = frozenset(frozen_variables)  # variable paths that keep their values ...
        self.frozen_steps = int(frozen_steps)  # ... for this many steps

    def build(self, var_list):
        super().build(var_list)
        # By index: update_step may get the variable a Keras weight wraps (a restored SavedModel's), pathless.
        self._learning_rate_factors = [self.learning_rate_multipliers.get(v.path, 1.0) for v in var_list]
        self._frozen = [v.path in self.frozen_variables for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        lr = tf.cast(learning_rate, dtype) * self._learning_rate_factors[index]
        if self._frozen[index] and self.frozen_steps:
            # A zero learning rate leaves the variable (and its decay) exactly as it is while the moments follow
            # its gradients, so it starts with warm moments instead of Adam's bias-corrected first steps.
            lr *= tf.cast(self.iterations >= self.frozen_steps, dtype)
        if self._use_weight_decay(variable):
            # Decoupled decay, var - var·wd·lr, as one multiply whose result the variable takes over.
            variable.assign(variable * (1 - tf.cast(self.weight_decay, dtype) * lr))
        step = tf.cast(self.iterations + 1, dtype)
        # Under tf.distribute this runs inside strategy.extended.update: `.handle` of a mirrored moment is
        # then the component on the device being updated.
        momentum, velocity = self._momentums[index].value, self._velocities[index].value
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.handle, v=velocity.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=lr, beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.convert_to_tensor(tf.cast(gradient, dtype)),
        )


def create_optimizer(
    learning_rate: float,
    total_steps: int,
    warmup_steps: int,
    weight_decay: float = 0.01,
    gradient_accumulation_steps: int = 1,
    loss_scaling: bool = False,
    learning_rate_multipliers: dict[str, float] | None = None,
    frozen_variables: Iterable[str] = (),
    frozen_steps: int = 0,
) -> keras.optimizers.Optimizer:
    """AdamW as BERT fine-tunes: β=(0.9, 0.999), ε=1e-6.

    BERT also clips gradients to a global norm of 1.0; the training step does that (`clip_gradients`),
    because Keras clips each replica's partial gradients before summing them across replicas, which is not
    the norm of the batch's gradient.

    With `loss_scaling` (float16 training), the AdamW is wrapped in Keras's dynamic LossScaleOptimizer:
    small float16 gradients underflow to zero unless the loss is scaled up first. It starts at 2^15, skips
    any step whose gradients overflow (halving the scale) and doubles the scale after 2,000 good steps.

    `learning_rate_multipliers` (variable path → factor, 1 for the others) scale the learning rate of some
    variables: layerwise_learning_rates gives them for layer-wise decay. `frozen_variables` (paths) keep their
    values for the first `frozen_steps` steps: a fresh head learns before the encoder under it moves.
    """
    optimizer = FusedAdamW(
        learning_rate=WarmupLinearDecay(learning_rate, total_steps, warmup_steps),
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        gradient_accumulation_steps=gradient_accumulation_steps if gradient_accumulation_steps > 1 else None,
        learning_rate_multipliers=learning_rate_multipliers,
        frozen_variables=frozen_variables,
        frozen_steps=frozen_steps,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


_LAYER = re.compile(r"(?:^|[_/])layer_(\d+)(?:[_/]|$)")


def layerwise_learning_rates(encoder_variables: list, decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay (Sun et al. 2019): an encoder of L layers, numbered 0 (lowest) to L-1,
    trains layer k at lr × decay^(L-k) and its embeddings at lr × decay^(L+1); the pooler and the head above
    keep the full lr. Layers are read from the variables' names, which say them in converted encoders
    (`bert/encoder/layer_3/…`) and in TF Hub BERT SavedModels (`transformer/layer_3/…`).

    Returns variable path → factor for the encoder's variables.
    """
    layers = {variable.path: _LAYER.search(variable.name) for variable in encoder_variables}
    num_layers = 1 + max((int(match.group(1)) for match in layers.values() if match), default=-1)
    factors = {}
    for variable in encoder_variables:
        match = layers[variable.path]
        if match:
            factors[variable.path] = decay ** (num_layers - int(match.group(1)))
        elif "embedding" in variable.name:
            factors[variable.path] = decay ** (num_layers + 1)
        elif "pooler" not in variable.name:
            raise ValueError(f"cannot tell which layer the encoder's variable {variable.name!r} belongs to")
    return factors


def clip_gradients(gradients: list[tf.Tensor], clip_norm: float = 1.0,
                   loss_scale: tf.Tensor | None = None) -> list[tf.Tensor]:
    """In a replica context: sums the gradients over replicas, clips their global norm, and returns them
    divided by the number of replicas, so the optimizer's own cross-replica sum yields the clipped total.

    Gradients of a loss multiplied by `loss_scale` are clipped by their unscaled norm and stay scaled (the
    LossScaleOptimizer divides them). If that norm overflows, they all become NaN: the optimizer then skips
    the step and lowers the scale, where clipping to zero would hide the overflow from it.
    """
    context = tf.distribute.get_replica_context()
    # Embedding gradients come as IndexedSlices with one row per token occurrence; Keras's AdamW makes them
    # dense anyway, and summing them dense here gives the same result whatever the number of replicas.
    dense = [tf.convert_to_tensor(gradient) for gradient in gradients]
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    # tf.clip_by_global_norm's scale and the division by replicas in one multiply: one pass, not two.
    norm = tf.linalg.global_norm(total)
    if loss_scale is not None:
        norm = norm / loss_scale
    scale = clip_norm / tf.maximum(norm, clip_norm) / context.num_replicas_in_sync
    if loss_scale is not None:
        scale = tf.where(tf.math.is_finite(norm), scale, float("nan"))
    return [gradient * scale for gradient in total]
