"""One error type for bad user input, and the CLI wrapper that turns it into one line and exit code 2.

The wrapper also makes SIGTERM and Ctrl-C end a command cleanly: one line, no traceback, and its temp files
removed on the way out (they unwind as the Stopped exception); writing records and extracting features hold a
SIGTERM back to the end of a batch (stops_held); training stops at a step boundary after a checkpoint instead
(bert_tf.training).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import sys
from typing import Callable

EXIT_BAD_INPUT = 2
# A disk that is full, read-only or not ours: the user's to fix, so one line, not a traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class InputError(Exception):
    """Something the user gave us is wrong: a file, a row, a column or a flag.

    The message is printed as one line, so it must say where the problem is and what to do.

    >>> str(InputError("empty text", file="train.csv", row=5, column="text", hint="fill it or drop the row"))
    "train.csv, row 5, column 'text': empty text; fill it or drop the row"
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        flag: str | None = None,
        hint: str | None = None,
    ):
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.flag = flag
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.flag:
            where.append(f"--{self.flag}")
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = ", ".join(where) + ": " + self.message if where else self.message
        if self.hint:
            text += "; " + self.hint
        return " ".join(text.split())  # always a single line


class Stopped(Exception):
    """A signal stopped the command; it exits with 128 + the signal's number, as a shell reports a death by it
    (143 for SIGTERM, 130 for Ctrl-C), so a scheduler sees a failure and restarts it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


# The signals raise_stopped has seen since the wrapper started the command.
_received: list[int] = []
# How many stops_held blocks are running; while any is, raise_stopped only records.
_holding = 0


def _stopped_by(signal_number: int) -> Stopped:
    return Stopped(f"stopped by {signal.Signals(signal_number).name}", signal_number)


def raise_stopped(signal_number: int, frame) -> None:
    _received.append(signal_number)
    if not _holding:
        raise _stopped_by(signal_number)


@contextlib.contextmanager
def stops_held():
    """Holds a SIGTERM back until the block ends, then raises its Stopped.

    For a block that runs TensorFlow (one batch of a loop): a Python signal handler runs at the next bytecode,
    which may be inside TensorFlow's C++ (it calls back into Python to flatten a tf.function's arguments), and an
    exception raised there is printed as a traceback and replaced by another error.
    """
    global _holding
    seen = len(_received)
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
    if not _holding and len(_received) > seen:
        raise _stopped_by(_received[-1])


def _stop_behind(error: Exception) -> Stopped | None:
    """The stop that caused `error`, if a signal did. A library may catch the Stopped that the handler raised in
    its code and raise another error in its place (TensorFlow did, interrupted while tracing a tf.function)."""
    if isinstance(error, Stopped):
        return error
    if _received:
        return _stopped_by(_received[-1])
    return None


def exits_cleanly_on_bad_input(main: Callable) -> Callable:
    """Wraps an absl `main(argv)`: an InputError becomes one line on stderr and exit code 2, no traceback; a
    SIGTERM or Ctrl-C becomes one line and exit code 128 + its number, after the command's cleanup ran."""

    @functools.wraps(main)
    def wrapper(argv):
        _received.clear()
        signal.signal(signal.SIGTERM, raise_stopped)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("stopped by Ctrl-C", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        except Exception as error:
            stop = _stop_behind(error)
            if stop is not None:
                print(stop, file=sys.stderr)
                sys.exit(stop.exit_code)
            if isinstance(error, InputError):
                print(f"error: {error}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            if isinstance(error, OSError) and error.errno in DISK_ERRORS:
                print(f"error: {error.filename or 'a file'}: cannot write it ({error.strerror}); free space or use "
                      f"a writable location", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            raise

    return wrapper
