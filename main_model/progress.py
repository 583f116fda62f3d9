"""Progress bars that suit a terminal and a log file alike.

On a terminal a bar redraws itself in place, as often as tqdm likes. Written to a file, a pipe
or a CI log (``nohup``, ``make ... > log``) every redraw would be a line of its own (8,600 of
them for one pre-training), so there a bar writes at most one line every
:data:`LOG_INTERVAL_S` seconds. Every bar of the project is made by :func:`progress_bar`.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between two lines of a bar whose output is not a terminal.
LOG_INTERVAL_S = 30.0


def is_terminal(stream: TextIO | None) -> bool:
    """True when ``stream`` is an interactive terminal (False for files, pipes, None)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(*, file: TextIO | None = None, **options: Any) -> tqdm:
    """A tqdm bar on ``file`` (default: stderr) with tqdm's ``options``; when ``file`` is not a
    terminal it refreshes at most every :data:`LOG_INTERVAL_S` seconds (unless ``mininterval``
    is given)."""
    file = sys.stderr if file is None else file
    if "mininterval" not in options and not is_terminal(file):
        options["mininterval"] = LOG_INTERVAL_S
    return tqdm(file=file, **options)
