"""Multi-process training on PyTorch's own engine: torchrun's process group, in one place.

``torchrun --nproc_per_node=N run_rl.py ...`` starts N processes with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`init_from_env` joins them into one process group (NCCL on GPUs, gloo on CPUs) and
gives each its device (``cuda:LOCAL_RANK``; :func:`resolve_device` resolves ``auto``).
Everything else in DynaLay asks this module, never ``torch.distributed`` directly: :func:`rank`, :func:`world_size`, :func:`is_main_process`,
:func:`barrier`, :func:`broadcast_object`, :func:`all_reduce_sum_`, :func:`batch_shard` (which
rows of a global batch this rank trains on) and :func:`data_parallel` (the DDP wrapper).

Without ``WORLD_SIZE`` (or with 1) nothing here starts a process group, every helper is the
identity or a no-op, and training runs exactly the single-process code, bit for bit.

Semantics of a training batch under N ranks: ``batch_size`` is the *global* batch. Every rank
draws the same global batch (same shuffling generator, same seed), takes its own contiguous
share of the rows (:func:`batch_shard`, sizes differing by at most one), and scales its loss by
``N / global_rows`` so that DDP's averaging of the N ranks' gradients gives the gradient of the
mean loss over the whole global batch: what one process with that batch computes.

Barriers and object broadcasts go through a gloo group on the CPU even when training uses
NCCL, with a long timeout (:data:`TIMEOUT_VARIABLE`, default 24 h): ranks 1..N-1 wait at a
barrier while rank 0 runs a reinforcement-learning phase alone, which may take hours, and a
gloo barrier waits on a socket instead of holding a GPU. (When a rank dies, torchrun stops the
others; the timeout is only the last resort.)
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "BatchShard",
    "TIMEOUT_VARIABLE",
    "all_reduce_sum",
    "all_reduce_sum_",
    "barrier",
    "batch_shard",
    "broadcast_object",
    "check_batches",
    "data_parallel",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "rank",
    "resolve_device",
    "world_size",
]

#: Minutes a barrier or broadcast waits for the other ranks (rank 0's RL phase, its
#: evaluation) before the process group gives up.
TIMEOUT_VARIABLE = "DYNALAY_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 24 * 60

#: The CPU (gloo) group for barriers, object broadcasts and CPU sums; None: the default group.
_control_group: Any = None
#: The group BatchNorm's global statistics are summed in (:func:`all_reduce_sum`), forward and
#: backward. Not DDP's: the order in which DDP's gradient buckets become ready depends on each
#: rank's graph, which differs from rank to rank with the samples' paths, so collectives of
#: one group issued from inside backward could pair up with different ones on other ranks.
_stats_group: Any = None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the process group (1 when there is none)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's global rank (0 when there is no process group)."""
    return dist.get_rank() if _active() else 0


def is_distributed() -> bool:
    """True when training is shared among several processes."""
    return world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, the one process that writes files, logs and TensorBoard events."""
    return rank() == 0


def _timeout() -> datetime.timedelta:
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        minutes = float(text) if text else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        raise ValueError(f"${TIMEOUT_VARIABLE}={text!r} is not a number of minutes") from None
    return datetime.timedelta(minutes=minutes)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is the GPU when there is one, else the CPU; anything else is taken as given
    (a CUDA device on a machine without CUDA is refused with a clear error)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto'")
    return resolved


def init_from_env(device: torch.device | str = "cpu") -> torch.device:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; returns this rank's device.

    Idempotent (a second call only resolves the device). ``device``: the device asked for; a
    CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process, whatever index was asked for)
    and the group's backend NCCL, anything else keeps its device and the backend is gloo.
    With ``WORLD_SIZE`` unset or 1 the device is returned unchanged and nothing is started.
    """
    global _control_group, _stats_group
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    timeout = _timeout()
    if not _active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    if _stats_group is None:  # every rank creates the same groups in the same order
        backend = dist.get_backend()
        _stats_group = dist.new_group(backend=backend, timeout=timeout)
        # Barriers and object broadcasts on the CPU whatever the training backend (see the
        # module docstring); the default group already is one when training uses gloo.
        _control_group = (
            dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        )
    return device


def shutdown() -> None:
    """Leave the process group at the end of a run, on every rank: wait for the others, then
    destroy the groups, so that no process exits while its gloo/NCCL threads still serve a
    group (rank 0, done first, was aborted at exit: "terminate called without an active
    exception"). No-op without a process group."""
    global _control_group, _stats_group
    if not _active():
        return
    barrier()
    dist.destroy_process_group()  # every group, the default one included
    _control_group = _stats_group = None


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if is_distributed():
        dist.barrier(group=_control_group)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (picklable) on every rank; ``value`` itself in a single process."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src, group=_control_group)
    return holder[0]


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the sum of ``tensor`` over the ranks (any device; summed on the CPU)."""
    if is_distributed():
        summed = tensor.detach().cpu().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=_control_group)
        tensor.copy_(summed.to(tensor.device))
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; backward: each rank's input gets the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=_stats_group)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=_stats_group)
        return summed


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks, differentiable: in backward each rank's input gets
    the sum of every rank's gradient (every rank's loss depends on it), which DDP's averaging
    of the parameter gradients turns into the gradient of the global batch's mean loss. What
    the BatchNorm statistics of :class:`main_model.fpi.StraightStatsBatchNorm` are summed with
    under torchrun; on the tensor's own device, in a group of its own (see ``_stats_group``);
    ``tensor`` itself in one process."""
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


@dataclass(frozen=True)
class BatchShard:
    """This rank's share of a global batch.

    Attributes:
        rows: the contiguous rows ``[start, stop)`` of the global batch this rank trains on.
        loss_scale: ``world_size / global_rows``: the rank's loss is the *sum* of its samples'
            losses times this, so DDP's mean of the ranks' gradients is the gradient of the
            mean loss over the global batch, also when shards differ in size by one.
    """

    rows: slice
    loss_scale: float


def batch_shard(global_rows: int) -> BatchShard:
    """This rank's rows of a global batch of ``global_rows`` samples: ``torch.tensor_split``'s
    split into ``world_size()`` contiguous parts, the first ``global_rows % N`` one row longer.

    Raises:
        ValueError: fewer rows than ranks (a rank would train on nothing; see
            :func:`check_batches`).
    """
    n, r = world_size(), rank()
    if global_rows < n:
        raise ValueError(
            f"a batch of {global_rows} sample(s) cannot be shared by {n} processes; "
            "see main_model.distributed.check_batches"
        )
    base, extra = divmod(global_rows, n)
    start = r * base + min(r, extra)
    stop = start + base + (1 if r < extra else 0)
    return BatchShard(slice(start, stop), n / global_rows)


def check_batches(rows: int, batch_size: int) -> None:
    """Refuse, before training starts, batches that cannot be shared by the ranks.

    ``rows`` samples in (global) batches of ``batch_size``: every batch, the last smaller one
    included, must have at least one sample per rank. No-op in a single process.
    """
    n = world_size()
    if n <= 1:
        return
    last = rows % batch_size or batch_size
    if min(batch_size, last, rows) < n:
        raise ValueError(
            f"--batch-size is the global batch, shared by the {n} processes: {rows} training "
            f"samples in batches of {batch_size} leave a batch of {min(batch_size, last, rows)} "
            f"sample(s), fewer than one per process; choose a batch size >= {n} whose last "
            f"batch ({rows} mod batch size) is 0 or >= {n}"
        )


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when distributed, else ``module`` itself.

    Build it after the parameters that train have ``requires_grad`` set: DDP registers only
    those. ``find_unused_parameters=True`` because a DynaLay step leaves every loop conv that
    no sample of the rank looped without a gradient; DDP then contributes zeros for it on that
    rank, and a parameter no rank used keeps ``grad=None``, so Adam skips it exactly as in one
    process (a dummy ``0 * param`` term touching every parameter would instead give it a zero
    gradient, and Adam would move it by its momentum: not what one process does). Buffers
    (BatchNorm running statistics, the loop convs' norm estimates) are rank 0's, broadcast at
    every forward (DDP's default).
    """
    if not is_distributed():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )
