"""run_classifier's TensorBoard logs, read back with TensorBoard's own event reader."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from bert_tf.reports import read_results

TRAIN_STEPS = 64 // 8  # tiny_records: 64 train examples, batch 8, 1 epoch


def load(directory: str) -> event_accumulator.EventAccumulator:
    assert os.path.isdir(directory) and os.listdir(directory), f"no event files in {directory}"
    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}  # 0 = keep all
    )
    return accumulator.Reload()


def plugin(accumulator: event_accumulator.EventAccumulator, tag: str) -> str:
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def scalars(accumulator: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar. TF2's tf.summary.scalar writes a tensor summary (plugin "scalars"), which the
    accumulator lists under Tensors(); TF1-style simple_value summaries are under Scalars()."""
    tags = accumulator.Tags()
    if tag in tags["scalars"]:
        return [(event.step, event.value) for event in accumulator.Scalars(tag)]
    assert tag in tags["tensors"], f"no scalar {tag!r}; tags: {tags}"
    assert plugin(accumulator, tag) == "scalars"
    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]


@pytest.fixture(scope="module")
def run_dir(tiny_records, tiny_encoder, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tensorboard") / "run")
    result = subprocess.run(
        [sys.executable, "-m", "bert_tf.run_classifier", f"--data_dir={tiny_records}", f"--encoder={tiny_encoder}",
         f"--output_dir={out}", "--do_train", "--do_eval", "--mixed_precision=none", "--train_batch_size=8",
         "--eval_batch_size=8", "--num_train_epochs=1", "--iterations_per_loop=3", "--profile_steps=3,6"],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_train_scalars(run_dir):
    train = load(os.path.join(run_dir, "train"))
    for tag in ("loss", "learning_rate", "examples_per_sec"):
        series = scalars(train, tag)
        steps = [step for step, _ in series]
        # Logged after every loop of --iterations_per_loop=3 steps: 3, 6, then the final step.
        assert steps == [3, 6, TRAIN_STEPS], (tag, steps)
        values = np.array([value for _, value in series])
        assert np.all(np.isfinite(values)), (tag, values)
        if tag != "loss":
            assert np.all(values >= 0), (tag, values)
    assert all(value > 0 for _, value in scalars(train, "examples_per_sec"))
    assert all(value > 0 for _, value in scalars(train, "loss"))


def test_eval_scalars_and_confusion_matrix(run_dir):
    evaluation = load(os.path.join(run_dir, "eval"))
    results = read_results(os.path.join(run_dir, "eval_results.txt"))
    assert int(results["global_step"]) == TRAIN_STEPS
    for tag in ("accuracy", "loss"):
        series = scalars(evaluation, tag)
        assert series, tag
        step, value = series[-1]
        assert step == TRAIN_STEPS
        assert value == pytest.approx(float(results[f"eval_{tag}"]), rel=1e-5)
    assert 0 <= scalars(evaluation, "accuracy")[-1][1] <= 1

    # tf.summary.image writes a tensor summary (plugin "images"): [width, height, PNG bytes...].
    tags = evaluation.Tags()
    if "confusion_matrix" in tags["images"]:  # a TF1-style image summary
        events = evaluation.Images("confusion_matrix")
        width, height, png = events[-1].width, events[-1].height, events[-1].encoded_image_string
    else:
        assert "confusion_matrix" in tags["tensors"], tags
        assert plugin(evaluation, "confusion_matrix") == "images"
        events = evaluation.Tensors("confusion_matrix")
        width, height, png = tensor_util.make_ndarray(events[-1].tensor_proto)[:3]
    assert events[-1].step == TRAIN_STEPS
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int(width) > 100 and int(height) > 100


def test_profile_of_the_requested_steps(run_dir):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    runs = glob.glob(os.path.join(run_dir, "train", "plugins", "profile", "*"))
    assert len(runs) == 1, runs  # one trace: steps 3-6, not one per loop call
    [path] = glob.glob(os.path.join(runs[0], "*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    [host] = [plane for plane in space.planes if plane.name == "/host:CPU"]
    ops = {metadata.name.rsplit(":", 1)[-1] for metadata in host.event_metadata.values()}
    # oneDNN's kernels are named _MklMatMul, _MklNativeFusedMatMul…: compare the op types under them.
    ops = {op.removeprefix("_MklNative").removeprefix("_Mkl") for op in ops}
    # The training step ran while tracing: the encoder's forward matmuls and their gradients.
    assert {"MatMul", "BatchMatMulV2"} <= ops, sorted(op for op in ops if "MatMul" in op)
    assert any("gradients" in metadata.name for metadata in host.event_metadata.values())
