"""--output_dir: one run at a time (run.lock), a resumed run is the same run, what a failed or eval-only run does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import assert_one_error_line, run_classifier

from bert_tf.errors import InputError
from bert_tf.run_directory import LOCK_FILE, RUN_FILE, RunLock


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(directory, pid: int, host: str | None = None) -> None:
    holder = {"command": "run_classifier --do_train", "host": host or RunLock(str(directory)).holder["host"],
              "pid": pid, "started": "2026-12-01T10:00:00+00:00"}
    (directory / LOCK_FILE).write_text(json.dumps(holder))


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def test_a_lock_held_by_a_live_process_refuses_with_its_holder(tmp_path, sleeper):
    write_lock(tmp_path, sleeper.pid)
    with pytest.raises(InputError) as refused:
        RunLock(str(tmp_path)).acquire()
    message = str(refused.value)
    assert "another run is using it" in message and f"pid {sleeper.pid}" in message and LOCK_FILE in message


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid(), host="some-other-machine")
    with pytest.raises(InputError, match="some-other-machine"):
        RunLock(str(tmp_path)).acquire()


def test_a_stale_lock_is_taken_over_with_a_warning_then_released(tmp_path, caplog):
    write_lock(tmp_path, dead_pid())
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert "Taking over" in caplog.text
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    RunLock(str(tmp_path)).acquire()  # the same process again (a TextClassifier fitting, then evaluating)
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_half_written_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text('{"command": "run_cl')
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert lock.held
    lock.release()


def test_a_second_run_into_a_busy_output_dir_refuses(tiny_records, tiny_encoder, tmp_path, sleeper):
    out = tmp_path / "run"
    out.mkdir()
    write_lock(out, sleeper.pid)
    result = run_classifier(tiny_records, tiny_encoder, str(out), "--do_train", "--num_train_epochs=0.2", check=False)
    assert_one_error_line(result, "--output_dir", "another run is using it", f"pid {sleeper.pid}")
    assert sorted(os.listdir(out)) == [LOCK_FILE]


@pytest.fixture(scope="module")
def trained_run(tiny_records, tiny_encoder, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("trained") / "run")
    run_classifier(tiny_records, tiny_encoder, out, "--do_train", "--num_train_epochs=0.5")
    return out


@pytest.mark.parametrize("flag, key", [
    pytest.param("--train_batch_size=4", "train_batch_size", marks=pytest.mark.slow),
    pytest.param("--num_train_epochs=2", "num_train_epochs", marks=pytest.mark.slow),
    ("--seed=7", "seed"),
    pytest.param("--gradient_accumulation_steps=2", "gradient_accumulation_steps", marks=pytest.mark.slow),
    pytest.param("--bucket_window=0", "bucket_window", marks=pytest.mark.slow),
    pytest.param("--class_weight=1,3", "class_weight", marks=pytest.mark.slow),
])
def test_resuming_with_what_fixes_the_data_order_or_step_count_changed_refuses(trained_run, tiny_records,
                                                                             tiny_encoder, flag, key):
    before = {name: os.path.getmtime(os.path.join(trained_run, name)) for name in os.listdir(trained_run)}
    result = run_classifier(tiny_records, tiny_encoder, trained_run, "--do_train", "--num_train_epochs=0.5", flag,
                            check=False)
    assert_one_error_line(result, "--output_dir", f"another {key}", "--overwrite_output_dir")
    assert {name: os.path.getmtime(os.path.join(trained_run, name)) for name in os.listdir(trained_run)} == before


def test_resuming_on_other_train_records_refuses(trained_run, tiny_records, tiny_encoder, tmp_path):
    records = shutil.copytree(tiny_records, str(tmp_path / "records"))
    metadata = json.load(open(os.path.join(records, "metadata.json")))
    metadata["train_data_size"] -= 8  # as if written from a smaller table
    json.dump(metadata, open(os.path.join(records, "metadata.json"), "w"))
    result = run_classifier(records, tiny_encoder, trained_run, "--do_train", "--num_train_epochs=0.5", check=False)
    assert_one_error_line(result, "another train_records")


@pytest.mark.slow
def test_evaluating_a_finished_run_with_other_training_flags_is_fine(trained_run, tiny_records, tiny_encoder):
    recorded = json.load(open(os.path.join(trained_run, RUN_FILE)))
    result = run_classifier(tiny_records, tiny_encoder, trained_run, "--do_eval", "--train_batch_size=4")
    assert "eval_accuracy" in result.stdout
    assert json.load(open(os.path.join(trained_run, RUN_FILE))) == recorded  # an evaluation does not rewrite it


@pytest.mark.slow
def test_a_failed_run_before_its_first_checkpoint_does_not_bind_the_next(tiny_records, tiny_encoder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({"encoder": "another", "pooling": "cls", "train_batch_size": 99}))
    run_classifier(tiny_records, tiny_encoder, str(out), "--do_train", "--num_train_epochs=0.2")
    assert json.load(open(out / RUN_FILE))["train_batch_size"] == 8


def test_eval_with_overwrite_output_dir_refuses_and_keeps_the_checkpoints(trained_run, tiny_records, tiny_encoder):
    checkpoints = sorted(name for name in os.listdir(trained_run) if name.startswith("model.ckpt-"))
    result = run_classifier(tiny_records, tiny_encoder, trained_run, "--do_eval", "--overwrite_output_dir",
                            check=False)
    assert_one_error_line(result, "--overwrite_output_dir", "needs --do_train")
    assert sorted(name for name in os.listdir(trained_run) if name.startswith("model.ckpt-")) == checkpoints


def test_evaluating_a_directory_without_checkpoints_refuses(tiny_records, tiny_encoder, tmp_path):
    result = run_classifier(tiny_records, tiny_encoder, str(tmp_path / "empty"), "--do_eval", check=False)
    assert_one_error_line(result, "holds no checkpoint", "--do_train")
    assert not os.path.exists(tmp_path / "empty" / "eval_results.txt")
