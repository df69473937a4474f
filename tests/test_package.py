"""bert_tf/__init__.py: importing bert_tf before TensorFlow allocates puts TensorFlow's CPU tensors on its BFC allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# get_memory_info answers only for allocators that keep statistics: BFC does, plain malloc raises ValueError.
PROBE = """
import bert_tf
import tensorflow as tf
tf.ones([256, 256]).numpy()
try:
    print("bfc", tf.config.experimental.get_memory_info("CPU:0")["peak"] > 0)
except ValueError:
    print("malloc")
"""


@pytest.mark.parametrize("setting, expected", [(None, "bfc True"), ("false", "malloc"), ("true", "bfc True")])
def test_cpu_allocator(setting, expected):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPU_ALLOCATOR_USE_BFC"}
    if setting is not None:  # the user's own choice wins over bert_tf's default
        env["TF_CPU_ALLOCATOR_USE_BFC"] = setting
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[-2] == expected
