"""Writing outputs so that nothing is ever half-written: a temp name in the same directory, then a rename.

Paths with a scheme (`gs://`, `s3://`, TF's in-process `ram://`: any tf.io.gfile file system) work too. Object
stores have no atomic rename: a file is written under a temp name and then copied to its name (the copy is one
object write, which readers see whole or not at all); a directory is written on local disk, then copied file by
file with the file that marks it complete (a SavedModel's saved_model.pb, records' metadata.json) last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator


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


def is_remote(path: str) -> bool:
    """Whether `path` is on a tf.io.gfile file system other than the local disk (gs://, ram://, …)."""
    return "://" in path and not path.startswith("file://")


def exists(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def isdir(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def read_bytes(path: str) -> bytes:
    """A whole file, local or on any tf.io.gfile file system (TensorFlow is imported only for the latter)."""
    if is_remote(path):
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(path) from None
    with open(path, "rb") as f:
        return f.read()


def copy_tree(local_dir: str, remote_dir: str, last: str) -> None:
    """Copies a finished local directory to a remote one, replacing its files; the file named `last` goes last."""
    import tensorflow as tf

    files = [os.path.relpath(os.path.join(root, name), local_dir)
             for root, _, names in os.walk(local_dir) for name in names]
    for relative in sorted(files, key=lambda name: name == last):
        target = os.path.join(remote_dir, relative)
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.copy(os.path.join(local_dir, relative), target, overwrite=True)


def atomic_write(path: str, content: str | bytes) -> None:
    """Writes a file via a temp file beside it, renamed into place: readers see the old file or the new one."""
    if is_remote(path):
        import tensorflow as tf

        temp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        with tf.io.gfile.GFile(temp, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        tf.io.gfile.rename(temp, path, overwrite=True)
        return
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


@contextlib.contextmanager
def writing_dir(output_dir: str, last: str) -> Iterator[str]:
    """A local directory to fill; once the block ends without an error it replaces `output_dir` whole: renamed
    into place (local), or copied with `last` (the file its readers look for, a relative path) last, after the
    earlier files there are removed (remote). On an error nothing of it is left."""
    if is_remote(output_dir):
        import tensorflow as tf

        with tempfile.TemporaryDirectory(prefix=".staging-") as staging:
            yield staging
            if tf.io.gfile.exists(output_dir):
                tf.io.gfile.rmtree(output_dir)
            copy_tree(staging, output_dir, last=last)
        return
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
    as_umask_allows(staging)
    try:
        yield staging
        replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_savedmodel(obj, output_dir: str, signatures=None) -> str:
    """tf.saved_model.save by way of writing_dir: complete or not at all (remote: saved_model.pb copied last)."""
    import tensorflow as tf  # here: the encoder registry uses this module before TensorFlow is needed

    with writing_dir(output_dir, last="saved_model.pb") as staging:
        tf.saved_model.save(obj, staging, signatures=signatures)
    return output_dir if is_remote(output_dir) else os.path.abspath(output_dir)
