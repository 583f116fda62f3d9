"""``run_rl.py convert DIR --trust-pickles``: run directories from before DynaLay stopped
unpickling, rewritten with plain files.

    python run_rl.py convert runs/<run> --trust-pickles       # one run directory
    python run_rl.py convert docs/results --trust-pickles     # every run directory below

Run directories used to hold ``vecnormalize.pkl`` and (DQN) ``replay_buffer.pkl``, which every
reader now refuses (:func:`agents.files.refuse_pickles`): loading a pickle runs whatever code
its author put in it. This command loads them, once, for directories you trust, and writes
``vecnormalize.json`` (:mod:`agents.normalization`) and ``replay_buffer.npz``
(:mod:`agents.replay_buffer`) in their place. In a phase folder with a manifest the phase's
files are checked first (a damaged phase is not converted) and the manifest is rewritten, last
but for the pickles' removal, to list the new files; a run of a conversion that stopped midway
finishes it. ``agent.zip`` stays as it is: :func:`agents.algorithms.load_agent` reads it
without unpickling.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from agents.files import (
    MANIFEST_FILE,
    NORMALIZE_FILE,
    PICKLED_FILES,
    REPLAY_BUFFER_FILE,
    PhaseInvalid,
    RunDirectory,
    run_dir_of,
)
from agents.normalization import NormalizerState
from agents.replay_buffer import write_replay_buffer
from main_model.io import atomic_write, fsync_directory

__all__ = ["ConversionError", "convert_folder", "convert_main", "pickled_folders"]


class ConversionError(Exception):
    """A folder that cannot be converted; the message names it and why."""


def pickled_folders(root: Path) -> list[Path]:
    """Every folder at or below ``root`` that holds one of :data:`~agents.files.PICKLED_FILES`
    (sorted)."""
    root = Path(root)
    found = {path.parent for name in PICKLED_FILES for path in root.rglob(name) if path.is_file()}
    return sorted(found)


def _unpickle(path: Path, kind: type) -> object:
    """The object in ``path`` (this is the unpickling the caller vouched for), if a ``kind``."""
    with open(path, "rb") as handle:
        loaded = pickle.load(handle)
    if not isinstance(loaded, kind):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, not a {kind.__name__}")
    return loaded


def convert_folder(folder: Path) -> list[str]:
    """Replace the pickles in ``folder`` by plain files; returns ``old -> new`` per file.

    Unpickles ``folder``'s ``vecnormalize.pkl`` and ``replay_buffer.pkl``: call it only on
    folders whose author you trust.
    """
    folder = Path(folder)
    record = None
    if (folder / MANIFEST_FILE).is_file():
        run = RunDirectory(run_dir_of(folder))
        try:
            record = run.verify(folder.relative_to(run.checkpoints).as_posix())
        except ValueError as error:  # relative_to: not inside a run's checkpoints/
            raise ConversionError(
                f"{folder} has a manifest but is no run's phase folder"
            ) from error
        except PhaseInvalid as error:
            raise ConversionError(f"{folder} is not converted: {error}") from error
    done = []
    pickled = folder / "vecnormalize.pkl"
    if pickled.is_file():
        stats = NormalizerState.of(_unpickle(pickled, VecNormalize))  # type: ignore[arg-type]
        stats.save(folder / NORMALIZE_FILE)
        done.append(f"{pickled.name} -> {NORMALIZE_FILE}")
    pickled = folder / "replay_buffer.pkl"
    if pickled.is_file():
        buffer = _unpickle(pickled, ReplayBuffer)
        atomic_write(folder / REPLAY_BUFFER_FILE, lambda tmp: write_replay_buffer(buffer, tmp))
        done.append(f"{pickled.name} -> {REPLAY_BUFFER_FILE}")
    if record is not None:
        files = [PICKLED_FILES.get(name, name) for name in record.files]
        run.write_manifest(record.phase, files, record.state)
    for name in PICKLED_FILES:  # last: a conversion cut short leaves them, and is run again
        (folder / name).unlink(missing_ok=True)
    fsync_directory(folder)
    return done


def convert_main(argv: Sequence[str]) -> int:
    """``run_rl.py convert DIR [DIR ...] --trust-pickles``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py convert",
        description="Rewrite run directories made before DynaLay stopped unpickling: their "
        "vecnormalize.pkl and replay_buffer.pkl become vecnormalize.json and replay_buffer.npz "
        "(manifests updated). Reading the pickles runs whatever code is in them, so only "
        "convert directories whose author you trust.",
    )
    parser.add_argument("dirs", nargs="+", help="run directories, or folders holding them")
    parser.add_argument(
        "--trust-pickles",
        action="store_true",
        help="you trust whoever made these directories: load their pickles (required)",
    )
    args = parser.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).is_dir()]
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    folders = [folder for d in args.dirs for folder in pickled_folders(Path(d))]
    if not folders:
        print(f"run_rl.py convert: no pickles in {', '.join(args.dirs)}; nothing to convert")
        return 0
    if not args.trust_pickles:
        listed = "\n".join(f"  {folder}" for folder in folders)
        print(
            f"run_rl.py convert: these folders hold pickles:\n{listed}\nLoading a pickle runs "
            "whatever code its author put in it. If you trust whoever made them, run again "
            "with --trust-pickles; otherwise do not use them.",
            file=sys.stderr,
        )
        return 2
    failures = 0
    for folder in folders:
        try:
            done = convert_folder(folder)
        except (ConversionError, pickle.UnpicklingError, EOFError, OSError, ImportError) as error:
            print(f"run_rl.py convert: {error}", file=sys.stderr)
            failures += 1
            continue
        print(f"converted {folder}: {json.dumps(done)}")
    return 1 if failures else 0
