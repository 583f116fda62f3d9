"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, fsync it, then move it onto ``path`` in one step.

    The temporary file keeps ``path``'s suffix (SB3 and matplotlib pick formats by it); on any
    failure it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # durable before it becomes visible under its name
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(payload: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))
