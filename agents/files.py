"""The files of a run directory: the one atomic writer, and one manifest per phase.

Layout of a run directory (``agents.trainer`` writes it, ``--resume`` and ``eval`` read it)::

    config.yaml                     the resolved TrainConfig (agents.config)
    checkpoints/<phase>/            one folder per phase, e.g. checkpoints/round1/rl/
        main_model.pt  agent.zip  vecnormalize.json  replay_buffer.npz  (those the phase has)
        manifest.json               written last: the files above with SHA-256 and size

A phase counts as done only when its manifest exists and every file it lists still has its
checksum: a crash between two writes, a truncated copy or a flipped byte leaves a phase that is
not trusted, never a main model paired with another phase's agent or statistics. Each phase's
files are complete by themselves, so a phase can be re-run from the previous phase's folder.
Every write goes through :func:`main_model.io.atomic_write` (fsync'd file, rename, fsync'd
folder).

Nothing in a run directory is unpickled: run directories are shared, and loading a pickle runs
whatever code its author put in it. The main model is read with ``weights_only=True``, the
agent by :func:`agents.agent_zip.load_agent` (every pickled entry of SB3's zip supplied by the
project), the observation statistics from JSON and the replay buffer from arrays (``.npz``).
Folders from before (``vecnormalize.pkl``, ``replay_buffer.pkl``: :data:`PICKLED_FILES`) are
refused by :func:`refuse_pickles`, whose message says how to convert one you trust
(``run_rl.py convert``, :mod:`agents.convert`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.config import load_run_config
from main_model.io import fsync_directory, write_json_atomic

__all__ = [
    "AGENT_FILE",
    "MODEL_FILE",
    "NORMALIZE_FILE",
    "REPLAY_BUFFER_FILE",
    "PICKLED_FILES",
    "PhaseInvalid",
    "PhaseRecord",
    "RunDirectory",
    "RunFileError",
    "UnsafeRunFile",
    "final_checkpoints",
    "refuse_pickles",
    "sha256_file",
]

MODEL_FILE = "main_model.pt"
AGENT_FILE = "agent.zip"
NORMALIZE_FILE = "vecnormalize.json"  # VecNormalize's statistics (agents.normalization)
REPLAY_BUFFER_FILE = "replay_buffer.npz"  # off-policy algorithms (DQN; agents.replay_buffer)
#: The pickles run directories held before, each with the plain file that replaces it.
PICKLED_FILES = {"vecnormalize.pkl": NORMALIZE_FILE, "replay_buffer.pkl": REPLAY_BUFFER_FILE}
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "dynalay-phase-manifest"
CHECKPOINTS = "checkpoints"
#: Phase folders kept: the last one, and the one before so the last can be re-run if damaged
#: (a DQN replay buffer is hundreds of MB; one per phase would fill a disk).
KEPT_PHASES = 2


class PhaseInvalid(Exception):
    """A phase's folder cannot be trusted; the message names the file and what is wrong."""


class RunFileError(ValueError):
    """A run directory's file that cannot be used (unsafe, malformed, or not this run's); the
    message names the file and says what to do. The command line exits 2 with it."""


class UnsafeRunFile(RunFileError):
    """A run directory's file that DynaLay will not load because loading it could run code (a
    pickle); the message names the file and what to do."""


def run_dir_of(folder: Path) -> Path:
    """The run directory a checkpoint folder belongs to (the parent of its ``checkpoints/``);
    ``folder`` itself when it is not inside one."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.name == CHECKPOINTS:
            return parent.parent
    return folder


def refuse_pickles(folder: Path) -> None:
    """Raise :class:`UnsafeRunFile` when ``folder`` holds one of :data:`PICKLED_FILES`.

    Any such file counts, listed in a manifest or not: a folder is never half read from a
    pickle and half from plain files (a conversion that stopped midway is finished by running
    it again).
    """
    found = [name for name in PICKLED_FILES if (Path(folder) / name).is_file()]
    if not found:
        return
    run_dir = run_dir_of(folder)
    raise UnsafeRunFile(
        f"{folder} holds {' and '.join(found)}: pickles, which this version of DynaLay does not "
        "load, since loading a pickle runs whatever code its author put in it (run directories "
        "made before it saved plain files hold them). If you trust whoever made "
        f"{run_dir}, convert it once with 'python run_rl.py convert {run_dir} --trust-pickles' "
        f"(it writes {' and '.join(PICKLED_FILES[name] for name in found)} in their place); "
        "otherwise do not use it"
    )


@dataclass(frozen=True)
class PhaseRecord:
    """A phase whose manifest and files checked out."""

    phase: str
    folder: Path
    files: tuple[str, ...]
    #: JSON-like values the phase hands to the next (e.g. the digest the agent learned on).
    state: Mapping[str, Any]

    def path(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        return name in self.files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunDirectory:
    """The checkpoint folders and manifests of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / CHECKPOINTS

    def phase_folder(self, phase: str) -> Path:
        return self.checkpoints / phase

    def begin_phase(self, phase: str) -> Path:
        """An empty folder for ``phase``'s files: what an earlier, unfinished attempt left there
        (its manifest first of all) is removed, so no old file can be listed with new ones."""
        folder = self.phase_folder(phase)
        if folder.exists():
            (folder / MANIFEST_FILE).unlink(missing_ok=True)  # durably gone before anything else
            fsync_directory(folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        fsync_directory(folder.parent)
        return folder

    def commit_phase(
        self, phase: str, files: Sequence[str], state: Mapping[str, Any], phases: Sequence[str]
    ) -> PhaseRecord:
        """Write ``phase``'s manifest (last, atomically) for exactly ``files`` in its folder,
        then remove the folders of phases older than the :data:`KEPT_PHASES` last."""
        record = self.write_manifest(phase, files, state)
        self._prune(phases[: max(phases.index(phase) + 1 - KEPT_PHASES, 0)])
        return record

    def write_manifest(
        self, phase: str, files: Sequence[str], state: Mapping[str, Any]
    ) -> PhaseRecord:
        """Write (or replace, atomically) ``phase``'s manifest for exactly ``files`` in its
        folder, with their checksums as they are now."""
        folder = self.phase_folder(phase)
        listed = {
            name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in files
        }
        manifest = {"format": MANIFEST_FORMAT, "phase": phase, "files": listed, "state": state}
        write_json_atomic(manifest, folder / MANIFEST_FILE)
        return PhaseRecord(phase, folder, tuple(files), dict(state))

    def verify(self, phase: str) -> PhaseRecord:
        """The phase's record when its manifest exists and every listed file matches it."""
        folder = self.phase_folder(phase)
        manifest_file = folder / MANIFEST_FILE
        if not manifest_file.is_file():
            raise PhaseInvalid(f"{manifest_file} is missing: phase {phase} did not finish")
        try:
            manifest = json.loads(manifest_file.read_text())
            listed: dict[str, dict[str, Any]] = manifest["files"]
            state = manifest["state"]
        except (ValueError, KeyError, TypeError) as error:
            raise PhaseInvalid(f"{manifest_file} is unreadable: {error}") from error
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("phase") != phase:
            raise PhaseInvalid(f"{manifest_file} is not the manifest of phase {phase}")
        for name, expected in listed.items():
            path = folder / name
            if not path.is_file():
                raise PhaseInvalid(f"{path} is missing (listed in {manifest_file})")
            size = path.stat().st_size
            if size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
                raise PhaseInvalid(
                    f"{path} is corrupted: its SHA-256 or size ({size} bytes) differs from "
                    f"{manifest_file}'s ({expected['bytes']} bytes)"
                )
        return PhaseRecord(phase, folder, tuple(listed), state)

    def latest_complete(self, phases: Sequence[str]) -> tuple[PhaseRecord | None, list[str]]:
        """The last of ``phases`` that checks out (None: start from scratch), and why each later
        phase that left a folder behind is not trusted (in phase order)."""
        problems: list[str] = []
        for phase in reversed(phases):
            if not self.phase_folder(phase).exists():
                continue
            try:
                return self.verify(phase), problems[::-1]
            except PhaseInvalid as error:
                problems.append(str(error))
        if (self.checkpoints / MODEL_FILE).is_file():
            problems.append(
                f"{self.checkpoints} holds files from before phase manifests existed; nothing in "
                "it can be checked, so the run starts again from its first phase"
            )
        return None, problems[::-1]

    def final_folder(self, phases: Sequence[str]) -> Path:
        """The folder of the run's latest complete phase that holds an agent: what ``eval`` and
        the sweep evaluate. Runs from before manifests keep theirs flat in ``checkpoints/``."""
        for phase in reversed(phases):
            if not self.phase_folder(phase).exists():
                continue
            try:
                record = self.verify(phase)
            except PhaseInvalid:
                continue
            if record.has(AGENT_FILE):
                return record.folder
        if (self.checkpoints / AGENT_FILE).is_file() and not any(
            self.phase_folder(p).exists() for p in phases
        ):
            return self.checkpoints
        raise FileNotFoundError(
            f"{self.root} has no complete phase with an agent (no {CHECKPOINTS}/<phase>/"
            f"{MANIFEST_FILE} whose files check out); finish it with "
            f"'python run_rl.py --resume {self.root}'"
        )

    def _prune(self, phases: Sequence[str]) -> None:
        """Remove these phases' folders (not fsync'd: one that comes back is still consistent)."""
        for phase in phases:
            folder = self.phase_folder(phase)
            if not folder.exists():
                continue
            shutil.rmtree(folder)
            parent = folder.parent  # round1/ once its rl/ and supervised/ are both gone
            if parent != self.checkpoints and not any(parent.iterdir()):
                parent.rmdir()


def final_checkpoints(run_dir: Path) -> Path:
    """The folder with the run's final main model and agent (its last complete phase's)."""
    return RunDirectory(run_dir).final_folder(load_run_config(run_dir).phases())
