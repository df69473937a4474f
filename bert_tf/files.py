"""Writing outputs so that nothing is ever half-written: a temp name in the same directory, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import, before threads start: os.umask can only be read by setting it.
_UMASK = _current_umask()


def as_umask_allows(path: str) -> None:
    """Gives a file or directory made by tempfile (0600 / 0700, private) the mode the user's umask gives new ones,
    so a serving container or another user can read results and exports as they could any file (0644 / 0755
    under umask 022)."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def atomic_write(path: str, content: str | bytes) -> None:
    """Writes a file via a temp file beside it, renamed into place: readers see the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(content, bytes) else "w"
    encoding = None if mode == "wb" else "utf-8"
    with tempfile.NamedTemporaryFile(mode, dir=directory, delete=False, prefix=".tmp-", encoding=encoding) as f:
        temp = f.name
        try:
            f.write(content)
        except BaseException:  # a full disk: no half-written temp file left behind
            f.close()
            os.remove(temp)
            raise
    as_umask_allows(temp)
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
    import tensorflow as tf  # here: the encoder registry uses this module before TensorFlow is needed

    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
    as_umask_allows(staging)
    try:
        tf.saved_model.save(obj, staging, signatures=signatures)
        replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
