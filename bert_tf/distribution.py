"""Choosing the tf.distribute strategy: one device, several GPUs (or logical CPUs), several machines, a TPU.

Multi-machine training is MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable
(set on each machine, same cluster, its own task index): no launcher of ours.
"""

from __future__ import annotations

import glob
import json
import os

import tensorflow as tf
from absl import logging

from bert_tf.errors import InputError
from bert_tf.hardware import cpu_has_bf16
from bert_tf.run_config import BaseRunConfig

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def read_tf_config() -> dict | None:
    """TF_CONFIG as a dict (None when unset), or one clear line on what is wrong with it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InputError(f"TF_CONFIG is not valid JSON ({error.msg} at char {error.pos})",
                         hint='expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise InputError("TF_CONFIG needs 'cluster' and 'task'",
                         hint='expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}')
    task = config["task"]
    workers = config["cluster"].get("worker", [])
    if task.get("type") == "worker" and not 0 <= int(task.get("index", -1)) < len(workers):
        raise InputError(f"TF_CONFIG task index {task.get('index')} is not among its {len(workers)} workers")
    return config


def use_logical_cpus(count: int) -> None:
    """Splits the CPU into `count` logical devices, so MirroredStrategy can be run (and tested) without GPUs.

    Must run before TensorFlow initializes its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def make_strategy(
    name: str = "auto",
    num_gpus: int | None = None,
    tpu_name: str | None = None,
    tpu_zone: str | None = None,
    gcp_project: str | None = None,
) -> tf.distribute.Strategy:
    """The strategy `name` asks for; "auto" picks TPU (when tpu_name is given), TF_CONFIG workers, GPUs, CPU."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy '{name}'", flag="distribution_strategy", hint=f"use one of {', '.join(STRATEGIES)}")
    tf_config = read_tf_config()
    if name == "auto" and not tpu_name and tf_config and len(tf_config["cluster"].get("worker", [])) > 1:
        name = "multi_worker_mirrored"
    if name == "multi_worker_mirrored":
        if not tf_config:
            raise InputError("multi-worker training needs TF_CONFIG", flag="distribution_strategy",
                             hint="set TF_CONFIG on every worker (see README, 'Many machines')")
        # Created before anything lists devices: collectives must be configured before TF initializes.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if num_gpus is not None:
        if num_gpus > len(gpus):
            raise InputError(f"asked for {num_gpus} GPUs, found {len(gpus)}", flag="num_gpus")
        gpus = gpus[:num_gpus]
    if name == "auto":
        if tpu_name:
            name = "tpu"
        elif len(gpus) > 1 or len(tf.config.list_logical_devices("CPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        return _tpu_strategy(tpu_name, tpu_zone, gcp_project)
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _tpu_strategy(tpu_name: str | None, zone: str | None, project: str | None) -> tf.distribute.TPUStrategy:
    if not tpu_name and not (glob.glob("/dev/accel*") or os.path.exists("/dev/vfio")):
        raise InputError("no TPU on this machine", flag="use_tpu",
                         hint="run on a TPU VM, or give --tpu_name (and --tpu_zone, --gcp_project) of a Cloud TPU")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name or "", zone=zone, project=project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    # OSError: urllib's URLError, when the resolver cannot look the name up (no such TPU, no GCE metadata server).
    except (ValueError, OSError, tf.errors.OpError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        which = f"TPU '{tpu_name}'" if tpu_name else "TPU"
        raise InputError(f"no {which} reachable ({message})", flag="tpu_name",
                         hint="run on a TPU VM or give --tpu_name/--tpu_zone/--gcp_project of an existing TPU") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs (every worker runs the same steps; one writes the files)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns on every worker once all have reached it (a collective sum); a no-op with one worker."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None).numpy()


def pad_multiple(strategy: tf.distribute.Strategy) -> int | None:
    """What each batch's length is trimmed to a multiple of (input_pipeline.model_inputs).

    TPUs compile a program per input shape: they keep max_seq_length (None). GPUs round up to 8, where
    float16 tensor cores want their matrix sizes. oneDNN on CPU runs any size, so the exact longest wastes
    nothing; rounding up would pad every batch of short sentences by a few tokens.
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return None
    return 8 if tf.config.list_logical_devices("GPU") else 1


def configure_precision(mode: str, strategy: tf.distribute.Strategy) -> str:
    """Turns on reduced precision for the whole graph, the restored encoder's included; returns the mode.

    A TF Hub encoder runs its own saved graph, which Keras dtype policies do not reach. Grappler's rewrites
    do: on CPU, oneDNN's bfloat16 rewrite (README Results has its speed); on GPU, grappler's float16 rewrite, with which the training step scales the
    loss (optimization.create_optimizer(loss_scaling=True); untested on a GPU: there is none here). TPUs
    compute matmuls in bfloat16 already, so "auto" leaves them alone.
    """
    if mode == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            mode = "none"
        elif tf.config.list_logical_devices("GPU"):
            mode = "fp16"
        else:
            mode = "bf16" if cpu_has_bf16() else "none"
    if mode == "bf16" and not tf.config.list_logical_devices("GPU"):
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    elif mode == "fp16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})
    return mode


def start(config: BaseRunConfig) -> tuple[tf.distribute.Strategy, str]:
    """The strategy and precision a run's hardware flags ask for (run_classifier's and run_pretraining's)."""
    if config.num_cpu_replicas > 1:  # before anything initializes TensorFlow's devices
        use_logical_cpus(config.num_cpu_replicas)
    # google-research/bert's --use_tpu alone selects the TPU; --tpu_name says which one.
    strategy = make_strategy("tpu" if config.use_tpu else config.distribution_strategy, config.num_gpus,
                             config.tpu_name, config.tpu_zone, config.gcp_project)
    precision = configure_precision(config.mixed_precision, strategy)
    logging.info("Strategy %s with %d replicas, precision %s", type(strategy).__name__,
                 strategy.num_replicas_in_sync, precision)
    return strategy, precision
