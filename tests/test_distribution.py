"""Choosing the strategy: a TPU that cannot be found is one error line."""

from __future__ import annotations

import os
import subprocess

from conftest import assert_one_error_line, classifier_command


def test_unresolvable_tpu_name_is_one_error_line(tiny_records, tiny_encoder, tmp_path):
    # The resolver looks the name up through the GCE metadata server; metadata.invalid never resolves (RFC 6761),
    # so the look-up fails at once, with a network or without.
    command = classifier_command(tiny_records, tiny_encoder, str(tmp_path / "run"), "--do_train", "--use_tpu",
                                 "--tpu_name=no-such-tpu")
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "GCE_METADATA_IP": "metadata.invalid"})
    assert_one_error_line(result, "--tpu_name", "no TPU 'no-such-tpu' reachable")
