"""One training step's forward (:class:`TrainingForward`) and what it hands the loss
(:class:`PathLogits`): the module :func:`main_model.train.train_epoch` calls, one per run."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

import main_model.distributed as distributed
from main_model.network import DynaLayNet
from main_model.recipes import Recipe


@dataclass
class PathLogits:
    """What one training step's forward computed, for :func:`sample_losses`.

    Attributes:
        straight: (B, K) logits of the straight pass.
        chosen: (B, K) logits after each sample's action.
        iterates: (B, K) logits of the same actions stopped after each of the recipe's
            ``iterate_losses`` iterations (empty without them).
        jacobian: () the step's Jacobian regulariser (None unless the recipe weights it).
    """

    straight: Tensor
    chosen: Tensor
    iterates: tuple[Tensor, ...] = ()
    jacobian: Tensor | None = None


class TrainingForward(nn.Module):
    """One training step's forward as one module call: the straight pass, then each sample's
    action (and what the recipe's ``iterate_losses`` and ``jacobian_weight`` read). DDP hooks
    its gradient allreduce to a module's ``forward``, so every pass must run inside one; in a
    single process it runs exactly what calling the model's methods runs.
    """

    def __init__(self, model: DynaLayNet, recipe: Recipe | None = None) -> None:
        super().__init__()
        self.model = model
        self.iterate_losses = () if recipe is None else recipe.iterate_losses
        self.jacobian = recipe is not None and recipe.jacobian_weight > 0

    def forward(self, images: Tensor, actions: Tensor, solver: str = "fpi") -> PathLogits:
        straight = self.model.straight(images)
        chosen = self.model.step(straight.state, actions, solver, jacobian=self.jacobian)
        iterates = tuple(
            self.model.step(straight.state, actions, solver, unroll=steps).state.logits
            for steps in self.iterate_losses
        )
        return PathLogits(straight.state.logits, chosen.state.logits, iterates, chosen.jacobian)


def training_forward(model: DynaLayNet, recipe: Recipe | None = None) -> nn.Module:
    """The module :func:`train_epoch` calls for ``model`` trained with ``recipe``:
    :class:`TrainingForward`, wrapped in DistributedDataParallel when several processes train
    (:mod:`main_model.distributed`). Build it once per training run, after ``requires_grad``
    is set on what trains."""
    return distributed.data_parallel(TrainingForward(model, recipe))
