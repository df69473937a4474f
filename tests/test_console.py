"""The commands' console: TensorFlow's C++ and Python log hidden, bert_tf's own lines and real errors kept."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from conftest import run_classifier

from bert_tf.console import is_noise, wants_full_log
from bert_tf.progress import Progress

CPP_INFO = b"I0000 00:00:1796167796.829580   26858 port.cc:153] oneDNN custom operations are on."
CPP_WARNING = b"W0000 00:00:1796167806.675417   27037 dataset.cc:997] Input of GeneratorDatasetOp::Dataset will not"
CUINIT = b"E0000 00:00:1796167798.168039   26858 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
REAL_ERROR = b"E0000 00:00:1796167798.168039   26858 status.cc:12] Resource exhausted: OOM when allocating tensor"


@pytest.mark.parametrize("line, has_gpu, noise", [
    (CPP_INFO, False, True),
    (CPP_WARNING, False, True),
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", False, True),
    (b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
     b"compiler flags.", False, True),
    (CUINIT, False, True),
    (CUINIT, True, False),  # on a machine with a GPU, a failing CUDA probe is a real error
    (REAL_ERROR, False, False),
    (b"F0000 00:00:1796167798.168039   26858 check.cc:1] Check failed: x", False, False),
    (b"error: --data_dir: no metadata.json here", False, False),
    (b"Traceback (most recent call last):", False, False),
    (b"I1201 23:30:00.625805 140289159142272 create_tfrecords.py:132] a Python absl line", False, False),
])
def test_only_tensorflows_log_lines_are_noise(line, has_gpu, noise):
    assert is_noise(line, has_gpu) is noise


def test_the_user_can_ask_for_the_full_log(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert not wants_full_log(["--data_dir=x", "--do_eval"])
    assert wants_full_log(["--verbosity=1"]) and wants_full_log(["-v", "1"]) and wants_full_log(["-v=0"])
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert wants_full_log([])


def run_tool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env={**environment, **(env or {})})


def test_a_command_shows_its_own_lines_only(tiny_records, tiny_encoder, tmp_path):
    # A whole evaluation (TensorFlow, tensorflow_hub, tf.data, a checkpoint restored) says what it did and
    # nothing else: no C++ log, no TensorFlow Python log, no pkg_resources warning.
    run_classifier(tiny_records, tiny_encoder, str(tmp_path / "run"), "--do_train", "--num_train_epochs=0.2")
    done = run_tool("bert_tf.run_classifier", f"--data_dir={tiny_records}", f"--encoder={tiny_encoder}",
                    f"--output_dir={tmp_path / 'run'}", "--do_eval", "--mixed_precision=none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines() == ["Strategy OneDeviceStrategy with 1 replicas, precision none"]
    assert "***** Eval results *****" in done.stdout


@pytest.mark.slow
def test_tensorflows_log_comes_back_when_asked(tmp_path):
    quiet = run_tool("bert_tf.classify_text", f"--model={tmp_path}/missing", "a text")
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [
        "error: --model: no exported model there; run run_classifier with --do_export first"]
    for env in ({"TF_CPP_MIN_LOG_LEVEL": "0"}, {}):
        flags = () if env else ("--verbosity=0",)
        loud = run_tool("bert_tf.classify_text", f"--model={tmp_path}/missing", *flags, "a text", env=env)
        assert loud.returncode == 2
        assert any(is_noise(line.encode(), has_gpu=False) for line in loud.stderr.splitlines()), loud.stderr


def test_progress_off_a_terminal_skips_quick_steps():
    quick = io.StringIO()
    with Progress(4, "items", stream=quick, interactive=False) as progress:
        progress.update(4)
    assert quick.getvalue() == ""
    slow = io.StringIO()
    with Progress(4, "items", stream=slow, interactive=False, quiet_seconds=0) as progress:
        progress.update(2)
        progress.update(2)
    assert [line.split(" (")[0] for line in slow.getvalue().splitlines()] == ["items: 2/4", "items: 4/4"]
