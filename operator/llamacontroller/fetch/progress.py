"""How a download shows its progress: ``43 % of 4.9 GiB``, as lines (an init container's log, which
the operator reads into the status) or as one line redrawn in place (a terminal)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
BAR_WIDTH = 30


def human_size(size: int) -> str:
    """1.5 GiB, 98.2 MiB, 512 B: binary units, one decimal."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def percent(done: int, total: int) -> int:
    """Whole percent, 100 only when all is there."""
    if total <= 0:
        return 0
    return 100 if done >= total else min(99, done * 100 // total)


def progress_line(done: int, total: int | None) -> str:
    """What the operator puts in the status while the fetch runs (status.PROGRESS_LINE)."""
    if not total:
        return f"{human_size(done)} so far"
    return f"{percent(done, total)} % of {human_size(total)}"


class Progress:
    """Says how far a download is. Lines: one per whole percent reached, at most one a second
    (``interval``), and always the last; in place: one line redrawn on a terminal."""

    def __init__(
        self,
        out: TextIO,
        *,
        in_place: bool = False,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out, self._in_place, self._interval, self._clock = out, in_place, interval, clock
        self._shown: tuple[int, int | None] | None = None
        self._at = float("-inf")

    def say(self, line: str) -> None:
        """A line of its own (waiting for a lock, found in place, resuming)."""
        if self._in_place and self._shown is not None:
            self._out.write("\n")
            self._shown = None
        self._out.write(line + "\n")
        self._out.flush()

    def update(self, done: int, total: int | None) -> None:
        step = (percent(done, total) if total else done // (64 << 20), total)
        now = self._clock()
        final = total is not None and done >= total
        if step == self._shown or (not final and now - self._at < self._interval):
            return
        self._shown, self._at = step, now
        line = progress_line(done, total)
        if self._in_place:
            self._out.write("\r" + _bar(done, total) + line + ("\n" if final else ""))
            if final:
                self._shown = None
        else:
            self._out.write(line + "\n")
        self._out.flush()


def _bar(done: int, total: int | None) -> str:
    if not total:
        return ""
    filled = BAR_WIDTH * min(done, total) // total
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
