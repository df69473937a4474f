"""One error type for bad user input, and the CLI wrapper that turns it into one line and exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Callable

EXIT_BAD_INPUT = 2


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


def exits_cleanly_on_bad_input(main: Callable) -> Callable:
    """Wraps an absl `main(argv)`: an InputError becomes one line on stderr and exit code 2, no traceback."""

    @functools.wraps(main)
    def wrapper(argv):
        try:
            return main(argv)
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper
