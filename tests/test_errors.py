"""The CLI wrapper of bert_tf.errors: bad input and signals become one line and an exit code, other errors stay."""

import os
import signal
import time

import pytest

from bert_tf.errors import InputError, exits_cleanly_on_bad_input, stops_held


@pytest.fixture(autouse=True)
def restore_sigterm_handler():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def run_wrapped(main):
    with pytest.raises(SystemExit) as exit_info:
        exits_cleanly_on_bad_input(main)([])
    return exit_info.value.code


def test_input_error_is_one_line_and_exit_code_2(capsys):
    def main(argv):
        raise InputError("empty text", file="t.csv", row=3, column="text")

    assert run_wrapped(main) == 2
    assert capsys.readouterr().err == "error: t.csv, row 3, column 'text': empty text\n"


def test_sigterm_is_one_line_and_exit_code_143(capsys):
    def main(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode and ends this

    assert run_wrapped(main) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM\n"


def test_sigterm_that_a_library_turned_into_another_error_still_stops_cleanly(capsys):
    # What TensorFlow did when SIGTERM arrived while it traced a tf.function: it caught the handler's exception and
    # raised a ValueError of its own ("Could not pack sequence").
    def main(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Exception:
            raise ValueError("Could not pack sequence") from None

    assert run_wrapped(main) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM\n"


def test_other_errors_keep_their_traceback_when_no_signal_came():
    def main(argv):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        exits_cleanly_on_bad_input(main)([])


def test_a_signal_of_an_earlier_command_in_the_process_does_not_stop_the_next(capsys):
    def stopped(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    def failing(argv):
        raise ValueError("a bug")

    assert run_wrapped(stopped) == 143
    with pytest.raises(ValueError, match="a bug"):
        exits_cleanly_on_bad_input(failing)([])


def test_sigterm_inside_stops_held_waits_for_the_block_to_end(capsys):
    finished = []

    def main(argv):
        for batch in range(3):
            with stops_held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler runs here, and must not raise
                finished.append(batch)

    assert run_wrapped(main) == 143
    assert finished == [0]
    assert capsys.readouterr().err == "stopped by SIGTERM\n"


def test_an_error_inside_stops_held_stays_and_holds_nothing_afterwards(capsys):
    def failing(argv):
        with stops_held():
            raise ValueError("a bug")

    def stopped(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with pytest.raises(ValueError, match="a bug"):
        exits_cleanly_on_bad_input(failing)([])
    started = time.monotonic()
    assert run_wrapped(stopped) == 143
    assert time.monotonic() - started < 2  # stopped at once, not after the sleep
