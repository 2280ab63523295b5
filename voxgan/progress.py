"""Progress of the waits a user sees (inversion, t-SNE, surface metrics, evaluation): one tqdm bar per
task on stderr, with its rate and ETA.

On a terminal the bar redraws in place. Elsewhere (a log file, a pipe, a test's captured stderr) it
prints whole lines instead of carriage returns: one when the task starts, at most one a minute while it
runs, and one when it ends. Library functions take ``progress: bool`` (off by default, so tests and
Python callers see nothing); the apps turn it on.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from tqdm import tqdm

# Seconds between lines where stderr is not a terminal: a 6-minute inversion logs about eight lines.
LINE_INTERVAL_S = 60.0
# Seconds between redraws on a terminal.
REDRAW_INTERVAL_S = 0.5
# A line of a log: the numbers without the bar's drawing.
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

_CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm that turns its in-place redraws into whole lines, for files and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> None:
        line = _CONTROL.sub("", text).strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(label: str, total: int | None = None, enable: bool = True, unit: str = "it",
                 stream: TextIO | None = None) -> tqdm:
    """A bar named ``label`` over ``total`` units on ``stream`` (stderr); ``enable=False``: a bar that
    prints nothing (and counts nothing). Use it as a context manager; set postfixes with
    ``refresh=False``, so that they show on the bar's own clock (a refresh in a log is a line)."""
    stream = stream if stream is not None else sys.stderr
    terminal = enable and _is_terminal(stream)
    options: dict[str, Any] = {"mininterval": REDRAW_INTERVAL_S, "dynamic_ncols": True, "leave": None}
    if not terminal:
        # Lines in a log: no redraws, no terminal width; each bar ends on a line of its own.
        stream = _Lines(stream)
        options = {"mininterval": LINE_INTERVAL_S, "maxinterval": LINE_INTERVAL_S, "leave": True,
                   "bar_format": LINE_FORMAT if total else None}
    bar = tqdm(total=total, desc=label, unit=unit, disable=not enable, file=stream, **options)
    bar.terminal = terminal
    return bar


def show_stage(bar: tqdm, stage: str) -> None:
    """Name the stage ``bar`` is in (its postfix): redrawn at once on a terminal, shown with the next
    line in a log."""
    bar.set_postfix_str(stage, refresh=getattr(bar, "terminal", False))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
