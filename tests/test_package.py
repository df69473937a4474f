"""bert_tf/__init__.py: importing bert_tf before TensorFlow picks TensorFlow's BFC allocator and oneDNN kernels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# get_memory_info answers only for allocators that keep statistics: BFC does, plain malloc raises ValueError.
PROBE = """
import bert_tf
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
tf.ones([256, 256]).numpy()
try:
    allocator = "bfc" if tf.config.experimental.get_memory_info("CPU:0")["peak"] > 0 else "empty bfc"
except ValueError:
    allocator = "malloc"
print(allocator, "onednn" if _pywrap_util_port.IsMklEnabled() else "eigen")
"""


def probe(**settings: str) -> str:
    names = ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS")
    env = {key: value for key, value in os.environ.items() if key not in names}
    env.update(settings)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_defaults_are_bfc_and_onednn():
    assert probe() == "bfc onednn"


# With oneDNN on, TensorFlow allocates through oneDNN's pooling allocator whatever TF_CPU_ALLOCATOR_USE_BFC
# says: the allocator setting shows only with oneDNN off.
@pytest.mark.parametrize("settings, expected", [
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "bfc eigen"),
    ({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "false"}, "malloc eigen"),
])
def test_the_users_environment_wins(settings, expected):
    assert probe(**settings) == expected
