"""Training-step speed: bert_tf's step vs Hugging Face PyTorch on the same weights, batch and sequence length.

  .venv/bin/python bench/train_step.py [--batch_size=32 --seq_length=128 --steps=10]

Runs, in one command: the machine's matmul rate (TF fp32 and bf16, 4096x4096, the best of 10), our training step (the
default encoder, all-MiniLM-L6-v2, + head, through bert_tf.training.Trainer's tf.function), and HF
transformers BertForSequenceClassification from the same weights in fp32 and bf16 autocast (AdamW), each
timed as the median of `--steps` steps after warm-up. Prints examples/sec, model FLOP/s, MFU against the
measured bf16 matmul rate, and the ratios; the LAST line is one JSON object with all figures.

Three of bert_tf's speed-ups can be switched off to measure them: --allocator=malloc (TensorFlow's default CPU
allocator instead of BFC), --onednn=off (Eigen's kernels instead of oneDNN's; both in bert_tf/__init__.py) and
--optimizer=keras (Keras's AdamW instead of bert_tf's FusedAdamW). --xla compiles our replica step with XLA.

To compare two versions of the encoder's graph (e.g. a conversion by an older bert_tf, made with BERT_TF_HOME=OLD
in a checkout of it): --vs_encoder=OLD/encoders/all-MiniLM-L6-v2/encoder times our step on both, alternating.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

from shared_data import default_encoder_dir

flags.DEFINE_integer("batch_size", 32, "Examples per step.")
flags.DEFINE_integer("seq_length", 128, "Tokens per example (all real: no padding to trim).")
flags.DEFINE_integer("steps", 10, "Timed steps per configuration (after 3 warm-up steps).")
flags.DEFINE_enum("precision", "auto", ["auto", "bf16", "none"], "Our precision (bert_tf's --mixed_precision).")
flags.DEFINE_string("profile_dir", None,
                    "After timing, trace 3 of our steps with the TF profiler into this TensorBoard logdir "
                    "(read it with bench/profile_summary.py or TensorBoard's Profile tab).")
flags.DEFINE_boolean("ours_only", False, "Skip the PyTorch peers (e.g. when profiling).")
flags.DEFINE_enum("optimizer", "fused", ["fused", "keras"],
                  "Our AdamW: bert_tf's FusedAdamW (default) or Keras's own keras.optimizers.AdamW, same settings.")
flags.DEFINE_enum("onednn", "on", ["on", "off"],
                  "oneDNN kernels (bert_tf's default, see bert_tf/__init__.py) or Eigen's.")
flags.DEFINE_enum("allocator", "bfc", ["bfc", "malloc"],
                  "TensorFlow's CPU allocator: BFC (bert_tf's default, see bert_tf/__init__.py) or plain malloc.")
flags.DEFINE_string("vs_encoder", None,
                    "Instead, time our step on the default encoder and on this encoder SavedModel (e.g. an older "
                    "conversion's DIR/encoder), alternating step by step in one process; prints only their speeds and "
                    "the median of the paired ratios (no matmul rate, peers or profile).")
flags.DEFINE_boolean("xla", False, "Compile our replica step with XLA (tf.function(jit_compile=True)).")
FLAGS = flags.FLAGS
WARMUP = 3


def matmul_rate(dtype) -> float:
    import tensorflow as tf

    a = tf.random.normal([4096, 4096], dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    times = []
    for _ in range(10):
        started = time.perf_counter()
        matmul(a).numpy()
        times.append(time.perf_counter() - started)
    # The best repeat: on a shared VM the median swung between runs (the MFU's denominator should be what the
    # hardware can do, not what a neighbour left of it).
    return 2 * 4096**3 / min(times)


def training_flops_per_example(config: dict, seq_length: int) -> float:
    """≈ 6 × non-embedding parameters × tokens + attention scores (QKᵀ and AV, forward and backward)."""
    hidden, layers, intermediate = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate
    dense = 6 * layers * per_layer * seq_length
    attention = 3 * layers * 2 * 2 * seq_length * seq_length * hidden
    return dense + attention


def time_steps(step) -> float:
    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(FLAGS.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return FLAGS.batch_size / statistics.median(times)


def our_step(encoder_path: str, model_dir: str):
    """One training step of our Trainer on `encoder_path` (a TF Hub-format encoder SavedModel), as a callable."""
    import keras
    import numpy as np
    import tensorflow as tf

    from bert_tf.encoders.hub_layers import HubEncoder
    from bert_tf.model import BertClassifier
    from bert_tf.optimization import NO_DECAY, create_optimizer
    from bert_tf.records import RecordsMetadata
    from bert_tf.training import TrainConfig, Trainer

    strategy = tf.distribute.get_strategy()
    model = BertClassifier(HubEncoder(encoder_path), num_labels=2, pooling="mean")
    optimizer = create_optimizer(5e-5, total_steps=1000, warmup_steps=100)
    if FLAGS.optimizer == "keras":
        optimizer = keras.optimizers.AdamW.from_config(optimizer.get_config())
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    metadata = RecordsMetadata(task_type="multiclass", num_labels=2, label_names=["0", "1"],
                               max_seq_length=FLAGS.seq_length, train_data_size=FLAGS.batch_size)
    config = TrainConfig(data_dir="", output_dir=model_dir, global_batch_size=FLAGS.batch_size, num_train_epochs=1)
    trainer = Trainer(strategy, model, optimizer, metadata, config)
    if FLAGS.xla:  # not a Trainer option: it measured slower (README Results)
        trainer._replica_step = tf.function(trainer._replica_step, jit_compile=True)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(1000, 30000, [FLAGS.batch_size, FLAGS.seq_length]).astype(np.int32),
        "input_mask": np.ones([FLAGS.batch_size, FLAGS.seq_length], np.int32),
        "segment_ids": np.zeros([FLAGS.batch_size, FLAGS.seq_length], np.int32),
        "label_ids": rng.integers(0, 2, [FLAGS.batch_size]).astype(np.int32),
        "weight": np.ones([FLAGS.batch_size], np.float32),
    }
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
    # train_steps returns (mean loss, the objective's statistics); reading the loss waits for the step.
    return lambda: trainer.train_steps(iterator, tf.constant(1))[0].numpy()


def ours(model_dir: str) -> float:
    import tensorflow as tf

    from bert_tf import distribution
    from bert_tf.encoders.registry import resolve_encoder

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    distribution.configure_precision(FLAGS.precision, strategy)
    with strategy.scope():
        step = our_step(resolve_encoder("default").encoder, model_dir)
    examples_per_sec = time_steps(step)
    if FLAGS.profile_dir:
        tf.profiler.experimental.start(FLAGS.profile_dir)
        for _ in range(3):
            step()
        tf.profiler.experimental.stop()
    return examples_per_sec


def ours_vs_encoder(model_dir: str) -> dict:
    """Our step on the default encoder and on --vs_encoder, alternating step by step in one process, so both
    see the same machine (on a shared VM one configuration's speed drifted between runs); which of the two goes
    first alternates too."""
    import tensorflow as tf

    from bert_tf import distribution
    from bert_tf.encoders.registry import resolve_encoder

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    distribution.configure_precision(FLAGS.precision, strategy)
    with strategy.scope():
        steps = [our_step(resolve_encoder("default").encoder, os.path.join(model_dir, "default")),
                 our_step(FLAGS.vs_encoder, os.path.join(model_dir, "other"))]
    for step in steps:
        for _ in range(WARMUP):
            step()
    times: list[list[float]] = [[], []]
    for repeat in range(FLAGS.steps):
        for index in (0, 1) if repeat % 2 == 0 else (1, 0):
            started = time.perf_counter()
            steps[index]()
            times[index].append(time.perf_counter() - started)
    pair_ratios = [other / default for default, other in zip(*times)]
    return {"ex_per_s_ours": round(FLAGS.batch_size / statistics.median(times[0]), 2),
            "ex_per_s_vs_encoder": round(FLAGS.batch_size / statistics.median(times[1]), 2),
            "ours_over_vs_encoder_median_pair": round(statistics.median(pair_ratios), 3)}


def torch_peer(model_path: str, bf16: bool) -> float:
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_path, num_labels=2)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    ids = torch.randint(1000, 30000, (FLAGS.batch_size, FLAGS.seq_length))
    labels = torch.randint(0, 2, (FLAGS.batch_size,))
    mask = torch.ones_like(ids)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return time_steps(step)


def main(argv):
    del argv
    # Before TensorFlow is imported and allocates (the matmul rates below), or the choices come too late.
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = str(FLAGS.allocator == "bfc").lower()
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if FLAGS.onednn == "on" else "0"
    import tensorflow as tf

    model_path = default_encoder_dir()
    with open(os.path.join(model_path, "config.json")) as f:
        config = json.load(f)
    flops = training_flops_per_example(config, FLAGS.seq_length)
    figures = {"batch_size": FLAGS.batch_size, "seq_length": FLAGS.seq_length, "precision": FLAGS.precision,
               "allocator": FLAGS.allocator, "optimizer": FLAGS.optimizer, "onednn": FLAGS.onednn, "xla": FLAGS.xla}
    if FLAGS.vs_encoder:  # a ratio of two encoders on one machine: no matmul rate or peers needed
        with tempfile.TemporaryDirectory() as tmp:
            figures.update(vs_encoder=FLAGS.vs_encoder, **ours_vs_encoder(tmp))
        print(json.dumps(figures))
        return
    fp32_peak, bf16_peak = matmul_rate(tf.float32), matmul_rate(tf.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        ex_ours = ours(tmp)
    figures.update({
        "matmul_gflops_tf_fp32": round(fp32_peak / 1e9, 1),
        "matmul_gflops_tf_bf16": round(bf16_peak / 1e9, 1),
        "ex_per_s_ours": round(ex_ours, 2),
        "model_gflops_ours": round(ex_ours * flops / 1e9, 1),
        "mfu_bf16": round(ex_ours * flops / bf16_peak, 4),
        "mfu_fp32": round(ex_ours * flops / fp32_peak, 4),
    })
    if not FLAGS.ours_only:
        ex_torch_fp32 = torch_peer(model_path, bf16=False)
        ex_torch_bf16 = torch_peer(model_path, bf16=True)
        figures.update({
            "ex_per_s_torch_fp32": round(ex_torch_fp32, 2),
            "ex_per_s_torch_bf16": round(ex_torch_bf16, 2),
            "ours_over_torch_fp32": round(ex_ours / ex_torch_fp32, 3),
            "ours_over_torch_bf16": round(ex_ours / ex_torch_bf16, 3),
        })
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
