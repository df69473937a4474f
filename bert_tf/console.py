"""A quiet console for bert_tf's commands: TensorFlow's C++ log is dropped, bert_tf's own lines stay.

TensorFlow's shared libraries log through absl before anything can initialize absl's log, so every line goes to
stderr whatever TF_CPP_MIN_LOG_LEVEL says: a CPU machine shows a dozen lines per command, among them
`failed call to cuInit: … UNKNOWN ERROR (303)`, which reads like a failure and is only the probe for a GPU that
is not there. So a command's file descriptor 2 (where C++ writes) becomes a pipe that a thread reads, dropping
TensorFlow's INFO and WARNING lines and its known harmless ERROR lines, and passing everything else on. Python's
own sys.stderr keeps the real stderr (progress lines redraw on a terminal as before), and TensorFlow's Python
logger is set to WARNING.

Set TF_CPP_MIN_LOG_LEVEL (any value) or pass --verbosity (or -v) to see everything.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import re
import sys
import threading
import warnings

# "I0000 00:00:1796167796.829580   26858 port.cc:153] …": absl's format before InitializeLog, so the time is 0.
_CPP_LOG_LINE = re.compile(rb"^(?P<severity>[IWEF])0000 00:00:\d+\.\d+ +\d+ [\w.\-]+:\d+\] ")
_NOISE = (
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    rb"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.",
)
# ERROR lines that are not errors of the run: a kernel fallback, and the GPU probe (on a machine without GPUs).
_HARMLESS_ERROR = rb"oneDNN supports DT_INT64 only"
_GPU_PROBE_ERROR = rb"failed call to cuInit"


def wants_full_log(args: list[str]) -> bool:
    """The user asked for TensorFlow's log: TF_CPP_MIN_LOG_LEVEL set, or an absl --verbosity/-v flag in args."""
    return "TF_CPP_MIN_LOG_LEVEL" in os.environ or any(
        arg.startswith(("--verbosity", "-v=")) or arg == "-v" for arg in args)


def is_noise(line: bytes, has_gpu: bool) -> bool:
    """Whether a line written to stderr by C++ code is TensorFlow's log rather than something to show."""
    if any(re.match(pattern, line) for pattern in _NOISE):
        return True
    match = _CPP_LOG_LINE.match(line)
    if not match:
        return False
    severity = match.group("severity")
    if severity == b"E":
        return bool(re.search(_HARMLESS_ERROR, line) or (not has_gpu and re.search(_GPU_PROBE_ERROR, line)))
    return severity in (b"I", b"W")


def _forward(read_fd: int, target_fd: int, has_gpu: bool) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            shown = b"".join(line + b"\n" for line in lines if not is_noise(line, has_gpu))
            if shown:
                os.write(target_fd, shown)
        if pending and not is_noise(pending, has_gpu):
            os.write(target_fd, pending)


def quiet_tensorflow_log() -> None:
    """Filters this process's file descriptor 2 (and its children's) from here on; see the module docstring."""
    has_gpu = bool(glob.glob("/dev/nvidia[0-9]*"))
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = os.fdopen(real_stderr, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    forwarder = threading.Thread(target=_forward, args=(read_fd, real_stderr, has_gpu), daemon=True)
    forwarder.start()

    def finish() -> None:
        # Closing our end of the pipe lets the forwarder reach the end and write what is left.
        os.dup2(real_stderr, 2)
        forwarder.join(timeout=5)

    atexit.register(finish)
    quiet_python_log()


class _BertTfLines(logging.Filter):
    """Keeps warnings and errors, and bert_tf's own info lines; drops TensorFlow's and Keras's info lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}bert_tf{os.sep}" in record.pathname


class _PlainFormatter(logging.Formatter):
    """bert_tf's info lines as plain text; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def quiet_python_log() -> None:
    """TensorFlow and Keras log through absl and the `tensorflow` logger too: only bert_tf's lines stay."""
    from absl import logging as absl_logging

    absl_logging.get_absl_logger().addFilter(_BertTfLines())
    absl_logging.get_absl_handler().python_handler.setFormatter(_PlainFormatter())
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def quiet_when_a_command() -> None:
    """In `python -m bert_tf.COMMAND`: quiet TensorFlow (unless the user asked for its log)."""
    # tensorflow_hub 0.16 imports pkg_resources, which setuptools deprecates with a warning on every import.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    argv = sys.orig_argv
    command = next((i for i, (arg, value) in enumerate(zip(argv, argv[1:])) if arg == "-m" and value.startswith("bert_tf.")),
                   None)
    if command is not None and not wants_full_log(argv[command + 2:]):
        quiet_tensorflow_log()
