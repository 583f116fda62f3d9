"""Supervised training of the main model on chosen paths (PyTorch only).

``train_epoch`` trains on batches where every sample carries an action (the path it takes):
uniform over all paths for pre-training ("all paths", as the thesis's warm-up), or the paths
an agent picks mixed with some uniform exploration in the alternating phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from main_model.network import DynaLayNet

#: Chooses one action per sample: (images (B, C, H, W), labels (B,)) -> actions (B,) int64.
ActionChooser = Callable[[Tensor, Tensor], Tensor]


def uniform_actions(n_actions: int, generator: torch.Generator | None = None) -> ActionChooser:
    """An :data:`ActionChooser` drawing every path (NOP and loop-1..n) uniformly."""

    def choose(images: Tensor, labels: Tensor) -> Tensor:
        draws = torch.randint(0, n_actions, (images.shape[0],), generator=generator)
        return draws.to(images.device)

    return choose


@dataclass
class EpochStats:
    """Mean loss and accuracy of one epoch, overall and per path (action)."""

    loss: float = 0.0
    accuracy: float = 0.0
    samples: int = 0
    loss_per_action: dict[int, float] = field(default_factory=dict)
    accuracy_per_action: dict[int, float] = field(default_factory=dict)
    samples_per_action: dict[int, int] = field(default_factory=dict)


class _Accumulator:
    def __init__(self, n_actions: int) -> None:
        self.loss = torch.zeros(n_actions, dtype=torch.float64)
        self.correct = torch.zeros(n_actions, dtype=torch.float64)
        self.count = torch.zeros(n_actions, dtype=torch.float64)

    def add(self, losses: Tensor, correct: Tensor, actions: Tensor) -> None:
        actions = actions.cpu()
        self.loss.index_add_(0, actions, losses.detach().double().cpu())
        self.correct.index_add_(0, actions, correct.double().cpu())
        self.count.index_add_(0, actions, torch.ones_like(actions, dtype=torch.float64))

    def stats(self) -> EpochStats:
        total = float(self.count.sum())
        seen = [a for a in range(len(self.count)) if self.count[a] > 0]
        return EpochStats(
            loss=float(self.loss.sum()) / max(total, 1.0),
            accuracy=float(self.correct.sum()) / max(total, 1.0),
            samples=int(total),
            loss_per_action={a: float(self.loss[a] / self.count[a]) for a in seen},
            accuracy_per_action={a: float(self.correct[a] / self.count[a]) for a in seen},
            samples_per_action={a: int(self.count[a]) for a in seen},
        )


def train_epoch(
    model: DynaLayNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    choose_actions: ActionChooser,
    on_batch: Callable[[float], None] | None = None,
) -> EpochStats:
    """One pass over ``batches`` of (images (B, C, H, W), labels (B,)); cross-entropy loss.

    Each sample runs the straight pass then its chosen action; gradients through looped
    blocks are implicit (see :class:`main_model.fpi.FPIBlock`). ``on_batch(loss)`` is called
    after every optimiser step (progress bars).
    """
    model.train()
    totals = _Accumulator(model.n_actions)
    for images, labels in batches:
        with torch.no_grad():
            actions = choose_actions(images, labels).to(images.device)
        logits = model(images, actions)
        losses = F.cross_entropy(logits, labels, reduction="none")
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        optimizer.step()
        totals.add(losses, logits.argmax(dim=1) == labels, actions)
        if on_batch is not None:
            on_batch(float(losses.detach().mean()))
    model.eval()
    return totals.stats()


@torch.no_grad()
def evaluate_paths(model: DynaLayNet, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[int, float]:
    """Accuracy of every static path (0 = NOP .. n = loop all) on ``batches``."""
    model.eval()
    correct = torch.zeros(model.n_actions, dtype=torch.float64)
    total = 0
    for images, labels in batches:
        state = model.straight(images).state
        for action in range(model.n_actions):
            if action == 0:
                logits = state.logits
            else:
                actions = torch.full((images.shape[0],), action, device=images.device)
                logits = model.step(state, actions).state.logits
            correct[action] += float((logits.argmax(dim=1) == labels).sum())
        total += images.shape[0]
    return {action: float(correct[action]) / max(total, 1) for action in range(model.n_actions)}
