"""A run's logs: the Python log (``log.txt``) and SB3's logger (TensorBoard, text, CSV).

- :func:`configure_run_log`: the ``dynalay`` logger writes to ``<run>/log.txt`` and stderr on
  rank 0 (records logged with ``extra={"file_only": True}`` to the file only); other ranks
  only warn, on stderr.
- :func:`sb3_logger`: SB3's :class:`~stable_baselines3.common.logger.Logger` for ``<run>/tb``
  (TensorBoard events, ``tb/log.txt`` and ``tb/progress.csv``, the last two continued, not
  emptied, when a resumed run reopens them: :class:`ContinuedCSVOutputFormat`); one that
  writes nothing on ranks other than 0.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    Logger,
    make_output_format,
)

#: The Python logger of a training run.
log = logging.getLogger("dynalay")


class ContinuedCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV log, continued where a previous process left it instead of emptied: the
    header's columns are read back, new rows go at the end (SB3 rewrites the file in place
    when a new column appears, which works the same on a reopened file)."""

    def __init__(self, filename: str) -> None:
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(filename)
            return
        super().__init__(os.devnull)  # separator, quote character; no file of its own yet
        self.file.close()
        self.file = open(path, "r+")  # closed by the logger, as SB3's own
        header = self.file.readline().rstrip("\n")
        self.keys = header.split(self.separator) if header else []
        self.file.seek(0, os.SEEK_END)


def configure_run_log(run_dir: Path, main_process: bool = True) -> logging.Logger:
    """Point :data:`log` at ``run_dir/log.txt`` and stderr (``main_process``), or at stderr for
    warnings only (the other ranks under torchrun)."""
    if not main_process:
        log.handlers = [logging.StreamHandler(sys.stderr)]
        log.setLevel(logging.WARNING)
        return log
    handler = logging.FileHandler(Path(run_dir) / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    stream = logging.StreamHandler(sys.stderr)
    # `extra={"file_only": True}`: a message the caller also prints (it would show twice).
    stream.addFilter(lambda record: not getattr(record, "file_only", False))
    log.handlers = [handler, stream]
    log.setLevel(logging.INFO)
    return log


def sb3_logger(folder: Path | None) -> Logger:
    """SB3's logger writing into ``folder`` (see the module docstring); ``None``: a logger
    that writes nothing (ranks other than 0)."""
    if folder is None:
        return Logger(folder=None, output_formats=[])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    formats = [
        make_output_format("tensorboard", str(folder)),
        HumanOutputFormat(open(folder / "log.txt", "a")),  # kept open by the logger
        ContinuedCSVOutputFormat(str(folder / "progress.csv")),
    ]
    return Logger(folder=str(folder), output_formats=formats)
