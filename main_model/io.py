"""Files that are never seen half-written: the project's one atomic writer.

:func:`atomic_write` writes through a temporary file in the target's folder, fsyncs it, moves
it onto the target in one step (``os.replace``) and fsyncs the folder (:func:`fsync_directory`),
so a crash leaves either the old file or the new one. :func:`write_json_atomic` and
:func:`atomic_save` (``torch.save``) are its two common uses. The checkpoint format
(:mod:`main_model.checkpoint`), the run directory (:mod:`agents.files`) and every results
writer go through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "atomic_write", "fsync_directory", "write_json_atomic"]


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, fsync it, then move it onto ``path`` in one step.

    The temporary file sits in ``path``'s folder and keeps its suffix (SB3 and matplotlib pick
    formats by it); on any failure it is removed and ``path`` is left as it was. The project's
    one atomic writer: everything that must never be seen half-written goes through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # durable before it becomes visible under its name
            os.fsync(handle.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the renames and deletions in ``folder`` durable, not just the files' contents.

    A renamed file's bytes are on disk after its own fsync, but its new name is an entry of the
    folder; without this, a power loss can bring back the old name. Best effort: platforms that
    cannot open or fsync a folder (Windows) skip it.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(payload: Any, path: str | os.PathLike) -> Path:
    """``payload`` as indented JSON at ``path``, through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))
