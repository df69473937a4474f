"""A console progress line for long steps: count, rate and ETA, redrawn in place on a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """`with Progress(total, "examples") as p: p.update(n)`; on a terminal one redrawn line, else a line per 10%.

    Off a terminal (a log file, a pipe), a step done within `quiet_seconds` prints nothing: the line that
    reports its result follows at once.

    >>> with Progress(2, "items", stream=sys.stdout, interactive=False, quiet_seconds=0) as p:
    ...     p.update(2)  # doctest: +ELLIPSIS
    items: 2/2 (100%) ...
    """

    def __init__(self, total: int, unit: str, stream=None, interactive: bool | None = None, quiet_seconds: float = 2.0):
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.done = 0
        self._started = time.monotonic()
        self._last_decile = -1
        self._quiet_seconds = quiet_seconds
        self.extra = ""

    def __enter__(self) -> "Progress":
        return self

    def update(self, count: int, extra: str = "") -> None:
        self.done += count
        self.extra = extra
        decile = min(10, self.done * 10 // self.total)
        if self.interactive:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif decile != self._last_decile and time.monotonic() - self._started >= self._quiet_seconds:
            self.stream.write(self.line() + "\n")
            self._last_decile = decile

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        remaining = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"{self.unit}: {self.done}/{self.total} ({100 * self.done // self.total}%) {rate:,.1f}/s ETA {remaining:,.0f}s"
        return text + (f" {self.extra}" if self.extra else "")

    def __exit__(self, *exc) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
