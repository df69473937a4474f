"""python -m bert_tf.sweep: trials of run_classifier over a grid, their results, the best trial's export, resuming,
and bad flags refused before any trial runs."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import assert_one_error_line, stop_at

# A learning rate too small to learn anything against one that learns the toy task (dev accuracy 0.5 vs 0.9).
SLOW, FAST = "lr=1e-06,epochs=3,seed=1", "lr=0.002,epochs=3,seed=1"
TINY_RUN = ["--train_batch_size=8", "--eval_batch_size=8", "--mixed_precision=none", "--dropout_rate=0",
            "--iterations_per_loop=3", "--save_checkpoints_steps=8"]


def run_sweep(records: str, output_dir: str, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bert_tf.sweep", f"--data_dir={records}", f"--output_dir={output_dir}", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def sweep_flags(encoder: str) -> list[str]:
    return ["--learning_rates=1e-6,2e-3", "--num_train_epochs=3", "--seeds=1", f"--encoder={encoder}", *TINY_RUN]


def read_rows(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "sweep_results.tsv"), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def snapshot(output_dir: str) -> dict[str, int]:
    """Every file of the sweep with its mtime (ns), event files and the results file aside."""
    paths = glob.glob(os.path.join(output_dir, "**", "*"), recursive=True)
    return {path: os.stat(path).st_mtime_ns for path in paths if os.path.isfile(path)
            and "tfevents" not in path and not path.endswith("sweep_results.tsv")}


def tags(directory: str) -> set[str]:
    """The summary tags of the event files directly in `directory`."""
    import tensorflow as tf

    found = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            found.update(value.tag for value in event.summary.value)
    return found


@pytest.fixture(scope="module")
def swept(tiny_records, tiny_encoder, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
    output_dir = str(tmp_path_factory.mktemp("sweep") / "out")
    result = run_sweep(tiny_records, output_dir, *sweep_flags(tiny_encoder))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result


@pytest.mark.slow
def test_a_sweep_runs_every_trial_and_exports_the_best(swept):
    import tensorflow as tf

    output_dir, result = swept
    rows = read_rows(output_dir)
    assert [row["trial"] for row in rows] == [SLOW, FAST]
    assert list(rows[0]) == ["trial", "learning_rate", "num_train_epochs", "seed", "eval_accuracy", "global_step",
                             "wall_seconds"]
    assert [(row["learning_rate"], row["num_train_epochs"], row["seed"]) for row in rows] == [
        ("1e-06", "3", "1"), ("0.002", "3", "1")]
    slow, fast = (float(row["eval_accuracy"]) for row in rows)
    assert fast >= slow + 0.2, rows
    # The best trial's export: its best weights (the step its row names), and the record says which trial.
    with open(os.path.join(output_dir, "best_trial", "trial.json"), encoding="utf-8") as f:
        assert json.load(f)["trial"] == FAST
    export = tf.saved_model.load(os.path.join(output_dir, "best_trial", "export"))
    assert int(export.global_step()) == int(rows[1]["global_step"])
    assert not glob.glob(os.path.join(output_dir, "lr=*", "export"))  # the best one moved, the other deleted
    # One progress line per trial, with the ETA; each trial's output in its log.
    progress = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert len(progress) == 2 and progress[0].startswith(f"trial 1/2 {SLOW}: eval_accuracy = ") and "ETA" in progress[0]
    with open(os.path.join(output_dir, FAST, "trial.log"), encoding="utf-8") as f:
        assert "Step 24: eval_accuracy" in f.read()
    # The HParams dashboard: the experiment at the top, a session (with the metric) per trial.
    assert "_hparams_/experiment" in tags(output_dir)
    assert {"_hparams_/session_start_info", "eval_accuracy"} <= tags(os.path.join(output_dir, SLOW))


@pytest.mark.slow
def test_a_rerun_skips_the_finished_trials_and_resumes_an_interrupted_one(swept, tiny_records, tiny_encoder):
    output_dir, _ = swept
    interrupted = os.path.join(output_dir, SLOW)
    os.remove(os.path.join(interrupted, "trial_done.json"))  # as if the sweep had stopped during that trial
    stop_at(interrupted, 16)
    finished = {path: mtime for path, mtime in snapshot(output_dir).items() if not path.startswith(interrupted)}
    result = run_sweep(tiny_records, output_dir, *sweep_flags(tiny_encoder))
    assert result.returncode == 0, result.stderr[-3000:]
    # The finished trial: not run again (no log line, checkpoint, result or export written).
    assert {path: mtime for path, mtime in snapshot(output_dir).items() if not path.startswith(interrupted)} == finished
    assert f"trial 2/2 {FAST}: finished before, eval_accuracy" in result.stdout, result.stdout
    # The interrupted one: resumed from its checkpoint, finished and recorded.
    with open(os.path.join(interrupted, "trial.log"), encoding="utf-8") as f:
        last_run = f.read().rsplit("=== ", 1)[-1]
    assert "at step 16 of 24" in last_run, last_run
    assert os.path.exists(os.path.join(interrupted, "trial_done.json"))
    assert [row["trial"] for row in read_rows(output_dir)] == [SLOW, FAST]


@pytest.mark.parametrize("flag, expected", [
    ("--no_such_flag=1", ("no_such_flag", "run_classifier")),
    ("--learning_rate=1e-3", ("--learning_rate", "--learning_rates")),
    ("--train_batch_size=many", ("train_batch_size", "many")),
    ("--warmup_proportion=2", ("--warmup_proportion", "out of range")),  # run_classifier's own check
    ("--output_dir=elsewhere", ("--output_dir", "twice")),
])
def test_bad_flags_are_refused_before_any_trial(tiny_records, tiny_encoder, tmp_path, flag, expected):
    output_dir = str(tmp_path / "out")
    result = run_sweep(tiny_records, output_dir, *sweep_flags(tiny_encoder), flag)
    assert_one_error_line(result, *expected)
    assert not os.path.exists(output_dir)


def test_bad_sweep_lists_are_refused(tiny_records, tmp_path):
    result = run_sweep(tiny_records, str(tmp_path / "out"), "--learning_rates=2e-5,fast")
    assert_one_error_line(result, "--learning_rates", "'fast'")


def test_a_failed_trial_stops_the_sweep_naming_its_log(tmp_path):
    from bert_tf import sweep

    class FailingSweep(sweep.Sweep):
        def command(self, trial):  # a run_classifier that refuses its input
            return [sys.executable, "-c", "import sys; print('error: --encoder: not found', file=sys.stderr); sys.exit(2)"]

    trials = sweep.make_trials(["5e-5"], ["3"], ["1", "2"])
    with pytest.raises(sweep.TrialFailed) as failure:
        FailingSweep("records", str(tmp_path), trials, [], "eval_accuracy", stream=io.StringIO()).run()
    log = os.path.join(tmp_path, "lr=5e-05,epochs=3,seed=1", "trial.log")
    assert str(failure.value) == f"trial lr=5e-05,epochs=3,seed=1 failed (exit code 2): --encoder: not found; its log: {log}"
    assert failure.value.returncode == 2  # main: one error line, exit code 2
    assert not os.path.exists(os.path.join(tmp_path, "lr=5e-05,epochs=3,seed=1", "trial_done.json"))
    assert not os.path.exists(os.path.join(tmp_path, "lr=5e-05,epochs=3,seed=2"))  # the sweep stopped
