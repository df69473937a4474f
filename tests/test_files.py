"""Outputs are readable as the user's umask says, not private like tempfile's (0600 files, 0700 directories)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

WRITE = """
import sys, tensorflow as tf
from bert_tf.files import atomic_write, save_savedmodel
atomic_write(sys.argv[1] + "/eval_results.txt", "eval_accuracy = 1.0\\n")
module = tf.Module()
module.f = tf.function(lambda: tf.constant(1.0), input_signature=[])
save_savedmodel(module, sys.argv[1] + "/export")
"""


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_results_and_exports_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], check=True, capture_output=True,
                   preexec_fn=lambda: os.umask(umask))
    assert mode(tmp_path / "eval_results.txt") == file_mode
    assert mode(tmp_path / "export") == dir_mode
    assert mode(tmp_path / "export" / "saved_model.pb") == file_mode
