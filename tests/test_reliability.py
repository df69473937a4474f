"""Faults during training: a diverging loss, a damaged checkpoint, a process killed with SIGKILL, stopped with
SIGTERM or Ctrl-C (one worker of two, too), damaged records, a full disk."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    assert_one_error_line,
    finish,
    max_difference,
    read_log,
    read_weights,
    run_classifier,
    start_classifier,
    start_workers,
    stop,
    stop_at,
)

# Long enough to be killed at a chosen checkpoint: 80 steps, a checkpoint every 2, one step per tf.function call.
KILL_FLAGS = ["--do_train", "--num_train_epochs=10", "--save_checkpoints_steps=2", "--iterations_per_loop=1"]
KILL_TOTAL = 10 * (64 // 8)
ITERATIONS = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
MOMENTS = "optimizer/_variables/"  # AdamW's first and second moment of every trainable variable


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=5", "--save_checkpoints_steps=3",
                   "--keep_checkpoint_max=20")
    stop_at(out, 6)  # as if interrupted there; it resumes with a learning rate that diverges
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=5",
                            "--save_checkpoints_steps=3", "--learning_rate=1e12", check=False)
    error = assert_one_error_line(result, "loss became", "learning rate")
    diverged_after = int(re.search(r"between steps (\d+) and", error).group(1))
    kept = tf.train.latest_checkpoint(out)
    assert kept is not None and int(kept.rsplit("-", 1)[1]) <= diverged_after


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_records, tiny_encoder, tmp_path):
    out = str(tmp_path / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=2", "--save_checkpoints_steps=3")
    stop_at(out, 9)  # as if interrupted after the checkpoint of step 9
    latest = tf.train.latest_checkpoint(out)
    assert latest.endswith("model.ckpt-9")
    for data in glob.glob(latest + ".data-*"):
        with open(data, "r+b") as f:
            f.truncate(100)
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=2",
                            "--save_checkpoints_steps=3")
    assert "model.ckpt-9 is unreadable" in result.stderr
    assert "Resuming from" in result.stderr and "model.ckpt-6 at step 6" in result.stderr
    assert tf.train.latest_checkpoint(out).endswith("model.ckpt-16")


def checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def read_optimizer_state(checkpoint: str) -> dict[str, np.ndarray]:
    """Every optimizer/ entry of a checkpoint: its step counter, AdamW's moments, its references to the weights."""
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: np.asarray(reader.get_tensor(name))
            for name in reader.get_variable_to_shape_map() if name.startswith("optimizer/")}


def assert_same_training_state(reference: str, checkpoint: str) -> None:
    """The weights (to 1e-5), the optimizer's step count (exactly) and AdamW's moments of two checkpoints agree.

    A moment agrees to 1e-4 of its tensor's largest value (second moments are ~1e-6, so a fixed tolerance
    would pass anything), plus 1e-9 for the moments of the attention key biases: their gradient is 0 up to
    rounding (softmax ignores a shift), so they hold noise of ~1e-10.
    """
    expected_weights = read_weights(reference)
    difference = max_difference(expected_weights, read_weights(checkpoint))
    assert difference < 1e-5, f"weights of {checkpoint} differ from {reference} by {difference}"
    expected, actual = read_optimizer_state(reference), read_optimizer_state(checkpoint)
    assert expected.keys() == actual.keys()
    assert actual[ITERATIONS] == expected[ITERATIONS], (actual[ITERATIONS], expected[ITERATIONS])
    moments = [name for name in expected if name.startswith(MOMENTS)]
    # Two moments per trainable weight: if Keras renames them, this says so rather than comparing nothing.
    assert len(moments) == 2 * len(expected_weights), sorted(expected)[:10]
    for name in expected:
        if expected[name].dtype.kind != "f":
            assert np.array_equal(expected[name], actual[name]), name
            continue
        difference = float(np.max(np.abs(expected[name] - actual[name])))
        # Besides the moments, optimizer/ holds the weights it updates (optimizer/_trainable_variables/N).
        tolerance = 1e-4 * float(np.max(np.abs(expected[name]))) + 1e-9 if name.startswith(MOMENTS) else 1e-5
        assert difference <= tolerance, f"{name} of {checkpoint} differs by {difference} (> {tolerance})"


def wait_for_checkpoint(output_dir: str, step: int, processes: list[subprocess.Popen], logs: list[str],
                        timeout: float = 300) -> str:
    """Polls until the newest checkpoint of `output_dir` is at `step` or later; fails if a process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = tf.train.latest_checkpoint(output_dir)
        if latest and checkpoint_step(latest) >= step:
            return latest
        for process, log in zip(processes, logs):
            assert process.poll() is None, f"ended (code {process.returncode}) before step {step}: {read_log(log)[-3000:]}"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of step {step} in {output_dir} after {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(tiny_records, tiny_encoder, tmp_path_factory) -> str:
    """The final checkpoint of a single-device run of KILL_FLAGS that nobody kills: what the kill tests reach."""
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    run_classifier(tiny_records, tiny_encoder, out, *KILL_FLAGS)
    final = tf.train.latest_checkpoint(out)
    assert final == os.path.join(out, f"model.ckpt-{KILL_TOTAL}")
    return final


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_run_resumes_to_the_same_state(seed, uninterrupted, tiny_records, tiny_encoder, tmp_path):
    """SIGKILL once the checkpoint of a random step is written (seeds 0, 1, 2: steps 66, 36 and 64, an epoch's
    end); the same command resumes from it and ends at the step, weights and AdamW state of a run never killed."""
    target = int(np.random.default_rng(seed).choice(np.arange(2, KILL_TOTAL - 3, 2)))
    out, log = str(tmp_path / "killed"), str(tmp_path / "killed.log")
    process = start_classifier(tiny_records, tiny_encoder, out, *KILL_FLAGS, log=log)
    try:
        wait_for_checkpoint(out, target, [process], [log])
        process.kill()
        process.wait(timeout=60)
    finally:
        stop([process])
    saved = tf.train.latest_checkpoint(out)  # at `target`, or a step or two later if a save raced the kill
    step = checkpoint_step(saved)
    assert target <= step < KILL_TOTAL, f"killed at step {step} of {KILL_TOTAL}"
    assert read_optimizer_state(saved)[ITERATIONS] == step

    resumed = run_classifier(tiny_records, tiny_encoder, out, *KILL_FLAGS)
    assert f"Resuming from {saved} at step {step} of {KILL_TOTAL}" in resumed.stderr, resumed.stderr[-3000:]
    final = tf.train.latest_checkpoint(out)
    assert final == os.path.join(out, f"model.ckpt-{KILL_TOTAL}")
    assert_same_training_state(uninterrupted, final)


@pytest.mark.slow
def test_killed_worker_then_restarted_cluster_resumes_from_the_chiefs_checkpoint(uninterrupted, tiny_records,
                                                                                 tiny_encoder, tmp_path):
    """SIGKILL worker 1 of 2 mid-run. The chief (worker 0) then fails on its own, within seconds, in the
    collective of its current step: at once when the peer's connection drops mid-exchange ("Collective ops is
    aborted by: recvmsg:Connection reset by peer"), else once the coordination service misses the peer's
    heartbeats (20 s after the kill here: "tasks are unhealthy (stopped sending heartbeats)").
    Either way an UnavailableError ends it with code 1 and a traceback. Its newest checkpoint is intact; both
    workers restarted with the same flags resume from it and end where an uninterrupted run ends (the
    single-device one: the strategies agree to ~1e-6). The killed worker's .worker_tmp/<pid> stays behind."""
    out = str(tmp_path / "multi_worker")
    logs = [str(tmp_path / f"worker{index}.log") for index in range(2)]
    processes = start_workers(tiny_records, tiny_encoder, out, *KILL_FLAGS, logs=logs)
    try:
        wait_for_checkpoint(out, 10, processes, logs)  # beyond the first checkpoint, mid second epoch
        processes[1].kill()
        processes[1].wait(timeout=60)
        try:
            processes[0].wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass  # still blocked in a collective: killed below
        chief_code = processes[0].poll()
    finally:
        stop(processes)
    assert chief_code != 0, "the chief reported success for a run its peer could not finish"
    saved = tf.train.latest_checkpoint(out)
    step = checkpoint_step(saved)
    assert 10 <= step < KILL_TOTAL
    # Wholly written: every tensor reads back, and the step counter matches the name.
    assert read_weights(saved) and read_optimizer_state(saved)[ITERATIONS] == step

    logs = [str(tmp_path / f"restarted{index}.log") for index in range(2)]
    processes = start_workers(tiny_records, tiny_encoder, out, *KILL_FLAGS, logs=logs)
    try:
        outputs = [finish(process, log) for process, log in zip(processes, logs)]
    finally:
        stop(processes)
    for index, output in enumerate(outputs):
        assert f"Resuming from {saved} at step {step} of {KILL_TOTAL}" in output, f"worker {index}: {output[-3000:]}"
    final = tf.train.latest_checkpoint(out)
    assert final == os.path.join(out, f"model.ckpt-{KILL_TOTAL}")
    assert_same_training_state(uninterrupted, final)


# SIGTERM tests: checkpoints only every 10 steps, so the one written on the signal is the run's own doing.
SIGNAL_FLAGS = [*KILL_FLAGS, "--save_checkpoints_steps=10"]
STOPPED_LINE = re.compile(r"^stopped at step (\d+)( \(another worker was stopped\))?; the same command resumes$", re.M)


def stopped_step(log: str) -> int:
    lines = STOPPED_LINE.findall(read_log(log))
    assert len(lines) == 1, read_log(log)[-3000:]
    return int(lines[0][0])


@pytest.mark.parametrize("after_step, signal_number", [
    (10, signal.SIGTERM),
    pytest.param(30, signal.SIGINT, marks=pytest.mark.slow),
    pytest.param(50, signal.SIGTERM, marks=pytest.mark.slow),
])
def test_signalled_run_checkpoints_at_the_next_step_and_resumes_to_the_same_state(
        after_step, signal_number, uninterrupted, tiny_records, tiny_encoder, tmp_path):
    """SIGTERM (a preemption) or Ctrl-C: a checkpoint at the step the signal found, one line, exit code 128 +
    the signal; the same command then ends at the weights and AdamW state of a run never stopped."""
    out, log = str(tmp_path / "stopped"), str(tmp_path / "stopped.log")
    process = start_classifier(tiny_records, tiny_encoder, out, *SIGNAL_FLAGS, log=log)
    try:
        wait_for_checkpoint(out, after_step, [process], [log])
        process.send_signal(signal_number)
        process.wait(timeout=120)
    finally:
        stop([process])
    assert process.returncode == 128 + signal_number, read_log(log)[-3000:]
    assert "Traceback" not in read_log(log)
    step = stopped_step(log)
    assert after_step <= step < KILL_TOTAL
    assert tf.train.latest_checkpoint(out) == os.path.join(out, f"model.ckpt-{step}")
    assert read_optimizer_state(os.path.join(out, f"model.ckpt-{step}"))[ITERATIONS] == step
    assert not os.path.exists(os.path.join(out, "run.lock"))

    resumed = run_classifier(tiny_records, tiny_encoder, out, *SIGNAL_FLAGS)
    assert f"at step {step} of {KILL_TOTAL}" in resumed.stderr, resumed.stderr[-3000:]
    assert_same_training_state(uninterrupted, tf.train.latest_checkpoint(out))


@pytest.mark.slow
def test_sigterm_on_one_of_two_workers_stops_both_at_one_step_and_the_cluster_resumes(uninterrupted, tiny_records,
                                                                                     tiny_encoder, tmp_path):
    """SIGTERM to worker 1 only (its VM is preempted): both workers agree (one all-reduce per loop call) and
    save the same step, each says so, both exit 143; restarted, the cluster ends where an uninterrupted run ends."""
    out = str(tmp_path / "multi_worker")
    logs = [str(tmp_path / f"worker{index}.log") for index in range(2)]
    processes = start_workers(tiny_records, tiny_encoder, out, *SIGNAL_FLAGS, logs=logs)
    try:
        wait_for_checkpoint(out, 10, processes, logs)
        processes[1].send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=180)
    finally:
        stop(processes)
    assert [process.returncode for process in processes] == [143, 143], [read_log(log)[-2000:] for log in logs]
    steps = [stopped_step(log) for log in logs]
    assert steps[0] == steps[1] and 10 <= steps[0] < KILL_TOTAL
    assert "another worker was stopped" in read_log(logs[0]) and "another worker" not in read_log(logs[1])
    assert tf.train.latest_checkpoint(out) == os.path.join(out, f"model.ckpt-{steps[0]}")

    logs = [str(tmp_path / f"restarted{index}.log") for index in range(2)]
    processes = start_workers(tiny_records, tiny_encoder, out, *SIGNAL_FLAGS, logs=logs)
    try:
        outputs = [finish(process, log) for process, log in zip(processes, logs)]
    finally:
        stop(processes)
    assert all(f"at step {steps[0]} of {KILL_TOTAL}" in output for output in outputs)
    assert_same_training_state(uninterrupted, tf.train.latest_checkpoint(out))


def test_truncated_train_records_give_one_line(tiny_records, tiny_encoder, tmp_path):
    records = shutil.copytree(tiny_records, str(tmp_path / "records"))
    path = os.path.join(records, "train.tf_record")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 2 // 3)
    result = run_classifier(records, tiny_encoder, str(tmp_path / "run"), "--do_train", "--num_train_epochs=1",
                            check=False)
    assert_one_error_line(result, "train record file is damaged or truncated", "create_tfrecords")


def test_truncated_dev_records_give_one_line(tiny_records, tiny_encoder, tmp_path):
    records = shutil.copytree(tiny_records, str(tmp_path / "records"))
    path = os.path.join(records, "eval.tf_record")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    result = run_classifier(records, tiny_encoder, str(tmp_path / "run"), "--do_train", "--do_eval",
                            "--num_train_epochs=0.2", check=False)
    assert_one_error_line(result, "dev records are damaged or truncated")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: room for the run's small files, not for a checkpoint of the tiny model with AdamW."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    yield str(mount_point)
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_at_a_checkpoint_gives_one_line_and_leaves_no_partial_checkpoint(tiny_records, tiny_encoder,
                                                                                    small_disk):
    out = os.path.join(small_disk, "run")
    result = run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=1",
                            "--save_checkpoints_steps=2", check=False)
    assert_one_error_line(result, "--output_dir", "No space left on device", "resumes")
    assert not glob.glob(os.path.join(out, "model.ckpt-*_temp*")), os.listdir(out)
    assert not os.path.exists(os.path.join(out, "run.lock"))


def test_read_only_output_dir_gives_one_line(tiny_records, tiny_encoder, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", small_disk], check=True)
    result = run_classifier(tiny_records, tiny_encoder, os.path.join(small_disk, "run"), "--do_train",
                            "--num_train_epochs=0.2", check=False)
    assert_one_error_line(result, "--output_dir", "Read-only file system")


@pytest.mark.parametrize("damage, expected", [
    ("metadata not json", ["metadata.json", "is not valid JSON", "create_tfrecords"]),
    ("metadata without a field", ["metadata.json", "lacks or mangles a field"]),
    ("train records missing", ["--data_dir", "no train.tf_record here", "64 train records"]),
])
def test_damaged_records_directory_gives_one_line(damage, expected, tiny_records, tiny_encoder, tmp_path):
    records = shutil.copytree(tiny_records, str(tmp_path / "records"))
    metadata = os.path.join(records, "metadata.json")
    if damage == "metadata not json":
        with open(metadata, "r+") as f:
            f.truncate(40)
    elif damage == "metadata without a field":
        content = json.load(open(metadata))
        del content["label_names"]
        json.dump(content, open(metadata, "w"))
    else:
        os.remove(os.path.join(records, "train.tf_record"))
    result = run_classifier(records, tiny_encoder, str(tmp_path / "run"), "--do_train", check=False)
    assert_one_error_line(result, *expected)
