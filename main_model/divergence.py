"""A training run that diverges stops, in the step it happens, before anything is saved.

:func:`check_finite_step` runs after every optimiser step of :func:`main_model.train.train_epoch`:
the loss and every floating-point tensor a checkpoint of the model would hold (weights, the loop
weights among them, BatchNorm's running statistics) must be finite, or
:class:`TrainingDiverged` is raised. It costs one host sync per step (one flag, computed on the
device), and it runs before the next forward, whose FFT contraction bound (an SVD) would
otherwise fail on a non-finite loop weight with a linear-algebra error that says nothing of
training. Whoever knows more fills in the exception: :func:`~main_model.train.fit` the epoch,
the alternating trainer (``agents.trainer``) the phase and what to try.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import main_model.distributed as distributed

#: What to try when training diverges, where no caller knows better (the trainer does).
DIVERGENCE_ADVICE = "Nothing non-finite was kept; try a lower learning rate."


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss, gradient, weight or statistic, and stopped.

    Raised by :func:`main_model.train.train_epoch` in the step where it happened, before the next forward and
    before anything is saved; its message says where (``phase``, ``epoch`` or RL ``rollout``,
    ``step``, each filled in by whoever knows it: :func:`fit` the epoch, the alternating
    trainer the phase) and what to try (``advice``). ``what`` names the first non-finite value.
    """

    def __init__(
        self,
        what: str,
        *,
        step: int | None = None,
        epoch: int | None = None,
        rollout: int | None = None,
        phase: str | None = None,
        advice: str = DIVERGENCE_ADVICE,
    ) -> None:
        super().__init__(what)
        self.what, self.step, self.epoch, self.rollout = what, step, epoch, rollout
        self.phase, self.advice = phase, advice

    def __str__(self) -> str:
        where = [
            f"{name} {value}"
            for name, value in (
                ("phase", self.phase),
                ("epoch", self.epoch),
                ("rollout", self.rollout),
                ("step", self.step),
            )
            if value is not None
        ]
        place = f" in {', '.join(where)}" if where else ""
        return f"training diverged{place}: {self.what}. {self.advice}"


def _state_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """The floating-point tensors a checkpoint of ``model`` holds: its parameters (the loop
    weights among them) and buffers (BatchNorm's running statistics, the power vectors)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tensor) for name, tensor in named if tensor.is_floating_point()]


def _finite_flag(loss: Tensor, tensors: list[tuple[str, Tensor]]) -> Tensor:
    """A bool on the device: ``loss`` and every tensor all finite. No host sync: the caller
    reads it once per step. Non-finite gradients need no check of their own: Adam carries a
    NaN or inf gradient into its weight in the same step (inf / inf is NaN)."""
    checks = [torch.isfinite(loss.detach()).all()]
    checks += [torch.isfinite(tensor.detach()).all() for _, tensor in tensors]
    return torch.stack(checks).all()


def _first_non_finite(loss: Tensor, model: nn.Module) -> str:
    """What :class:`TrainingDiverged` names: the loss, else the first gradient, else the first
    weight or statistic that is not finite (after the step; computed only once it failed)."""
    if not torch.isfinite(loss.detach()).all():
        return f"the loss is {float(loss.detach().double().sum())}"
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            return f"the gradient of {name} is not finite"
    for name, tensor in _state_tensors(model):
        if not torch.isfinite(tensor).all():
            kind = "loop weight" if "loop_conv" in name else "weight or statistic"
            return f"the {kind} {name} is not finite after the optimiser step"
    return "a non-finite value on another rank"  # torchrun: the flag is summed over the ranks


def check_finite_step(loss: Tensor, model: nn.Module, step: int) -> None:
    """Raise :class:`TrainingDiverged` unless ``loss`` and ``model``'s weights and statistics
    are all finite. The step's one host sync (under torchrun: every rank's flag, summed, so
    all ranks stop together)."""
    finite = _finite_flag(loss, _state_tensors(model))
    if distributed.is_distributed():
        bad = distributed.all_reduce_sum_((~finite).to(torch.float32).reshape(1))
        finite = bad[0] == 0
    if not bool(finite):
        raise TrainingDiverged(_first_non_finite(loss, model), step=step)
