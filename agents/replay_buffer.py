"""An off-policy agent's replay buffer as arrays: what a run directory's ``replay_buffer.npz``
holds (SB3's own ``save_replay_buffer`` pickles the buffer object, and reading a pickle runs
whatever code is in it).

The arrays are SB3 ``ReplayBuffer``'s, each (S, N, ...) with S = the buffer's slots per env and
N = the number of envs: ``observations`` and ``next_observations`` (S, N, D) float32,
``actions`` (S, N, 1), ``rewards``, ``dones`` and ``timeouts`` (S, N) float32; plus ``pos``
(the next slot written) and ``full``. Read back with ``allow_pickle=False`` into the buffer the
loaded agent built for itself, after checking every shape and dtype against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.files import RunFileError

__all__ = ["ARRAYS", "ReplayBufferError", "load_replay_buffer", "write_replay_buffer"]

#: The buffer's arrays, in the order they are written.
ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class ReplayBufferError(RunFileError):
    """A ``replay_buffer.npz`` that does not fit the agent; the message names the file."""


def _check_plain(buffer: object) -> ReplayBuffer:
    # Subclasses (dict observations, n-step returns, HER) hold other state than these arrays.
    if type(buffer) is not ReplayBuffer:
        raise TypeError(
            f"only SB3's plain ReplayBuffer is saved as arrays, not a {type(buffer).__name__}"
        )
    if buffer.optimize_memory_usage:
        raise TypeError("a ReplayBuffer with optimize_memory_usage=True is not supported")
    return buffer


def write_replay_buffer(buffer: ReplayBuffer, path: str | Path) -> None:
    """Write ``buffer``'s arrays, ``pos`` and ``full`` to ``path`` (an uncompressed ``.npz``;
    callers go through :func:`main_model.io.atomic_write`)."""
    buffer = _check_plain(buffer)
    arrays = {name: getattr(buffer, name) for name in ARRAYS}
    with open(path, "wb") as handle:  # a handle: np.savez would add ".npz" to a bare name
        np.savez(handle, pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **arrays)


def load_replay_buffer(agent: OffPolicyAlgorithm, path: str | Path) -> None:
    """Fill ``agent``'s (freshly built, empty) replay buffer from ``path``."""
    path = Path(path)
    buffer = _check_plain(agent.replay_buffer)
    try:
        with np.load(path, allow_pickle=False) as saved:
            stored = {name: saved[name] for name in (*ARRAYS, "pos", "full")}
    except (OSError, ValueError, KeyError) as error:
        raise ReplayBufferError(
            f"{path} is not a replay buffer DynaLay can read ({error}); resume from an earlier "
            "phase or start the run again"
        ) from error
    for name in ARRAYS:
        expected = getattr(buffer, name)
        if stored[name].shape != expected.shape or stored[name].dtype != expected.dtype:
            raise ReplayBufferError(
                f"{path}: {name} is {stored[name].dtype}{list(stored[name].shape)}, but the "
                f"agent's buffer holds {expected.dtype}{list(expected.shape)} (another "
                "buffer_size, number of envs or observation?)"
            )
    pos = int(stored["pos"])
    if not 0 <= pos < buffer.buffer_size or stored["full"].shape != ():
        raise ReplayBufferError(f"{path}: pos {pos} or full is out of range")
    for name in ARRAYS:
        setattr(buffer, name, stored[name])
    buffer.pos = pos
    buffer.full = bool(stored["full"])
