"""Writing outputs so that nothing is ever half-written: a temp name in the same directory, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import tensorflow as tf


def atomic_write(path: str, content: str | bytes) -> None:
    """Writes a file via a temp file beside it, renamed into place: readers see the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(content, bytes) else "w"
    encoding = None if mode == "wb" else "utf-8"
    with tempfile.NamedTemporaryFile(mode, dir=directory, delete=False, prefix=".tmp-", encoding=encoding) as f:
        f.write(content)
        temp = f.name
    os.replace(temp, path)


def replace_dir(staging_dir: str, output_dir: str) -> None:
    """Moves a finished `staging_dir` to `output_dir`, replacing what was there."""
    if os.path.exists(output_dir):
        stale = f"{output_dir}.stale-{uuid.uuid4().hex}"
        os.rename(output_dir, stale)
        shutil.rmtree(stale)
    os.rename(staging_dir, output_dir)


def save_savedmodel(obj, output_dir: str, signatures=None) -> str:
    """tf.saved_model.save into a temp dir beside output_dir, renamed into place once complete."""
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
    try:
        tf.saved_model.save(obj, staging, signatures=signatures)
        replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
