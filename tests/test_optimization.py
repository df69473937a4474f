"""bert_tf/optimization.py: the fused AdamW against Keras's own AdamW, the schedule, and global-norm clipping."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from bert_tf.optimization import NO_DECAY, FusedAdamW, WarmupLinearDecay, clip_gradients, create_optimizer

# Named as HubEncoder names the weights it exposes (slashes are not allowed in Keras names).
SHAPES = {"word_embeddings": (50, 8), "dense_kernel": (8, 4), "dense_bias": (4,), "LayerNorm_gamma": (8,)}


def variables(seed: int) -> list[keras.Variable]:
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype(np.float32), name=name) for name, shape in SHAPES.items()]


def train(optimizer: keras.optimizers.Optimizer, steps: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`steps` updates with seeded random gradients; returns the weights and the optimizer's variables."""
    weights = variables(0)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        optimizer.apply([tf.constant(rng.normal(size=w.shape).astype(np.float32)) for w in weights], weights)
    return [w.numpy() for w in weights], [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("accumulation", [None, 2])
def test_fused_adamw_matches_keras_adamw(accumulation):
    def schedule():
        return WarmupLinearDecay(1e-2, total_steps=6, warmup_steps=2)

    settings = dict(weight_decay=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-6, gradient_accumulation_steps=accumulation)
    fused_weights, fused_state = train(FusedAdamW(learning_rate=schedule(), **settings), steps=6)
    keras_weights, keras_state = train(keras.optimizers.AdamW(learning_rate=schedule(), **settings), steps=6)
    initial = [w.numpy() for w in variables(0)]
    for name, fused, reference, start in zip(SHAPES, fused_weights, keras_weights, initial):
        assert np.abs(fused - start).max() > 1e-3, f"{name} did not move"
        np.testing.assert_allclose(fused, reference, rtol=1e-6, atol=5e-7, err_msg=name)  # moves of 1e-2 a step
    assert len(fused_state) == len(keras_state)  # same slots: checkpoints of either restore into the other
    for fused, reference in zip(fused_state, keras_state):
        # The kernel computes 1 - β₂ in float32 (0.00099998713), Keras in float64 then casts (0.001): the
        # second moments differ by 1.3e-5 relative. A wrong formula would differ by orders of magnitude more.
        np.testing.assert_allclose(fused, reference, rtol=5e-5, atol=1e-6 * np.abs(reference).max())


def test_weight_decay_skips_layer_norm_and_biases():
    # With zero gradients Adam's step is 0: only the decay moves a weight.
    optimizer = FusedAdamW(learning_rate=0.5, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    weights = variables(0)
    before = [w.numpy() for w in weights]
    optimizer.apply([tf.zeros(w.shape) for w in weights], weights)
    for name, w, start in zip(SHAPES, weights, before):
        expected = start if any(part in name for part in NO_DECAY) else start * (1 - 0.1 * 0.5)
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6, err_msg=name)


def test_create_optimizer_is_the_fused_adamw_with_berts_settings():
    optimizer = create_optimizer(2e-5, total_steps=100, warmup_steps=10, weight_decay=0.01)
    assert isinstance(optimizer, FusedAdamW)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon, optimizer.weight_decay) == (0.9, 0.999, 1e-6, 0.01)
    assert float(optimizer.learning_rate) == 0.0  # step 0 of the warmup


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clip_gradients_equals_clip_by_global_norm(scale):
    rng = np.random.default_rng(2)
    gradients = [tf.constant(rng.normal(size=shape).astype(np.float32) * scale) for shape in SHAPES.values()]
    # An embedding's gradient arrives as IndexedSlices with repeated rows; it is summed dense first.
    slices = tf.IndexedSlices(tf.fill([3, 8], scale), tf.constant([4, 4, 7]), tf.constant([50, 8]))
    clipped = tf.distribute.get_strategy().run(lambda: clip_gradients([*gradients, slices], clip_norm=1.0))
    expected, norm = tf.clip_by_global_norm([*gradients, tf.convert_to_tensor(slices)], 1.0)
    assert (float(norm) > 1.0) == (scale > 1)
    for got, want in zip(clipped, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_loss_scaling_trains_as_unscaled_and_skips_overflowing_steps():
    rng = np.random.default_rng(3)
    gradients = [tf.constant(rng.normal(size=shape).astype(np.float32) * 10) for shape in SHAPES.values()]

    def step(optimizer: keras.optimizers.Optimizer, weights: list[keras.Variable], scale: float | None) -> None:
        scaled = [gradient * scale for gradient in gradients] if scale else gradients
        loss_scale = optimizer.dynamic_scale if scale else None
        clipped = tf.distribute.get_strategy().run(lambda: clip_gradients(scaled, clip_norm=1.0, loss_scale=loss_scale))
        optimizer.apply(clipped, weights)

    reference, reference_weights = create_optimizer(1e-2, total_steps=10, warmup_steps=0), variables(0)
    step(reference, reference_weights, scale=None)
    scaling, weights = create_optimizer(1e-2, total_steps=10, warmup_steps=0, loss_scaling=True), variables(0)
    assert isinstance(scaling, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaling.inner_optimizer, FusedAdamW)
    scaling.build(weights)

    # A scale whose gradients' squared norm overflows float32: the step is skipped and the scale halved.
    scaling.dynamic_scale.assign(2.0**100)
    step(scaling, weights, scale=2.0**100)
    for weight, start in zip(weights, variables(0)):
        np.testing.assert_array_equal(weight.numpy(), start.numpy())
    assert float(scaling.dynamic_scale) == 2.0**99 and int(scaling.iterations) == 0

    # The default scale fits: the step equals the unscaled one (powers of two scale exactly).
    scaling.dynamic_scale.assign(2.0**15)
    step(scaling, weights, scale=2.0**15)
    assert int(scaling.iterations) == 1
    for got, want in zip(weights, reference_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-7)


def adamw_reference(start: np.ndarray, gradients: np.ndarray, learning_rates: list[float], weight_decay: float,
                    beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-6) -> list[np.ndarray]:
    """AdamW written out in float64 (decoupled decay, then the bias-corrected Adam step); the weights after each
    step. The moments follow every gradient, whatever the step's learning rate."""
    weight, momentum, velocity, history = start.astype(np.float64), 0.0, 0.0, []
    for step, (gradient, learning_rate) in enumerate(zip(gradients, learning_rates), start=1):
        weight = weight * (1 - weight_decay * learning_rate)
        momentum = beta_1 * momentum + (1 - beta_1) * gradient
        velocity = beta_2 * velocity + (1 - beta_2) * gradient**2
        corrected = learning_rate * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        weight = weight - corrected * momentum / (np.sqrt(velocity) + epsilon)
        history.append(weight)
    return history


def test_frozen_variables_keep_their_values_then_train_with_the_moments_of_the_frozen_steps():
    frozen_start, free_start = np.array([1.0, -2.0], np.float32), np.array([0.5, 3.0], np.float32)
    frozen, free = keras.Variable(frozen_start, name="frozen"), keras.Variable(free_start, name="free")
    optimizer = FusedAdamW(learning_rate=1e-2, weight_decay=0.1, epsilon=1e-6, frozen_variables=[frozen.path],
                           frozen_steps=3)
    gradients = np.random.default_rng(0).normal(size=(6, 2, 2)).astype(np.float32)
    frozen_expected = adamw_reference(frozen_start, gradients[:, 0], [0.0] * 3 + [1e-2] * 3, weight_decay=0.1)
    free_expected = adamw_reference(free_start, gradients[:, 1], [1e-2] * 6, weight_decay=0.1)
    for step, gradient in enumerate(gradients):
        optimizer.apply([tf.constant(gradient[0]), tf.constant(gradient[1])], [frozen, free])
        if step < 3:
            np.testing.assert_array_equal(frozen.numpy(), frozen_start)  # exactly: no decay, no update
        else:
            assert np.abs(frozen.numpy() - frozen_start).max() > 1e-3
            np.testing.assert_allclose(frozen.numpy(), frozen_expected[step], rtol=1e-5, err_msg=f"step {step + 1}")
        np.testing.assert_allclose(free.numpy(), free_expected[step], rtol=1e-5, err_msg=f"step {step + 1}")
