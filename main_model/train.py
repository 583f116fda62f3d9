"""Supervised training of the main model on chosen paths (PyTorch only).

A *recipe* says which path (action) each training sample takes and what the loss covers:

- ``dynalay`` (default): every sample trains the straight path **and** one loop path drawn
  uniformly from loop-1..n; loss = CE(straight) + CE(loop). The straight pass is computed
  anyway (loops warm-start from it), so keeping its loss costs one extra head and backward
  through layers that already ran, and the straight path gets the full gradient instead of a
  1/(n+1) share.
- ``uniform``: the previous recipe (and the thesis's warm-up read literally): one path per
  sample drawn uniformly from NOP, loop-1..n; loss = CE(that path).
- ``plain``: the straight path only: the same network trained as a plain CNN (the loop convs
  get no gradient). The separately trained "3-layer CNN" baseline.
- ``deq``: every block looped with TorchDEQ's Anderson solver and implicit backward, loss on
  that path only. The separately trained "DEQ with solvers" baseline.

In the alternating phase the agent chooses the paths (:func:`train_epoch` with an
:data:`ActionChooser`), with the recipe's rule for the straight loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from main_model import distributed
from main_model.network import DynaLayNet

#: Chooses one action per sample: (images (B, C, H, W), labels (B,)) -> actions (B,) int64.
ActionChooser = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Recipe:
    """How a main model is trained.

    Attributes:
        name: the recipe's key in :data:`RECIPES`.
        low, high: training actions are drawn uniformly from ``low..high`` (``high=None`` = n).
        train_straight: add CE of the straight pass to every sample's loss (the straight pass
            runs anyway; a sample whose action is NOP then counts its straight loss once).
        solver: ``fpi`` or TorchDEQ's ``anderson``/``broyden`` for the loops.
        description: one line for tables.
    """

    name: str
    low: int
    high: int | None
    train_straight: bool
    solver: str = "fpi"
    description: str = ""


RECIPES: dict[str, Recipe] = {
    "dynalay": Recipe("dynalay", 1, None, True, description="straight + uniform loop-1..n"),
    "uniform": Recipe("uniform", 0, None, False, description="one uniform path of NOP..loop-n"),
    "plain": Recipe("plain", 0, 0, True, description="straight path only (plain CNN)"),
    "deq": Recipe("deq", -1, None, False, "anderson", "all blocks looped, Anderson (DEQ)"),
}


def first_blocks_recipe(blocks: int) -> Recipe:
    """FPI in the first ``blocks`` blocks only (the thesis's Fig. 4.4 "Model m"): the
    ``dynalay`` recipe with its loop draws limited to loop-1..``blocks``, so blocks after them
    always run straight, i.e. as plain conv layers; ``blocks=0`` is the ``plain`` recipe."""
    if blocks < 0:
        raise ValueError(f"blocks must be >= 0, got {blocks}")
    if blocks == 0:
        return RECIPES["plain"]
    return Recipe(f"fpi-first-{blocks}", 1, blocks, True, description=f"FPI in blocks 1..{blocks}")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def recipe_actions(
    recipe: Recipe, n_actions: int, generator: torch.Generator | None = None
) -> ActionChooser:
    """The :data:`ActionChooser` of ``recipe``: uniform over its action range (``-1`` = loop-n)."""
    n_blocks = n_actions - 1
    low = n_blocks if recipe.low < 0 else recipe.low
    high = n_blocks if recipe.high is None else recipe.high

    def choose(images: Tensor, labels: Tensor) -> Tensor:
        draws = torch.randint(low, high + 1, (images.shape[0],), generator=generator)
        return draws.to(images.device)

    return choose


def uniform_actions(n_actions: int, generator: torch.Generator | None = None) -> ActionChooser:
    """An :data:`ActionChooser` drawing every path (NOP and loop-1..n) uniformly."""
    return recipe_actions(RECIPES["uniform"], n_actions, generator)


@dataclass
class EpochStats:
    """Mean loss and accuracy of one epoch, overall and per path (action), and its timing.

    ``loss``/``accuracy`` are those of each sample's chosen path; ``straight_accuracy`` is the
    straight pass's on the same samples. ``seconds`` is the epoch's wall time, of which
    ``backward_seconds`` was spent in ``loss.backward()``.
    """

    loss: float = 0.0
    accuracy: float = 0.0
    straight_accuracy: float = 0.0
    samples: int = 0
    seconds: float = 0.0
    backward_seconds: float = 0.0
    loss_per_action: dict[int, float] = field(default_factory=dict)
    accuracy_per_action: dict[int, float] = field(default_factory=dict)
    samples_per_action: dict[int, int] = field(default_factory=dict)


class _Accumulator:
    def __init__(self, n_actions: int) -> None:
        self.loss = torch.zeros(n_actions, dtype=torch.float64)
        self.correct = torch.zeros(n_actions, dtype=torch.float64)
        self.count = torch.zeros(n_actions, dtype=torch.float64)
        self.straight_correct = torch.zeros((), dtype=torch.float64)

    def add(self, losses: Tensor, correct: Tensor, actions: Tensor, straight_correct: Tensor):
        actions = actions.cpu()
        self.loss.index_add_(0, actions, losses.detach().double().cpu())
        self.correct.index_add_(0, actions, correct.double().cpu())
        self.count.index_add_(0, actions, torch.ones_like(actions, dtype=torch.float64))
        self.straight_correct += float(straight_correct.sum())

    def merge_ranks(self) -> None:
        """Sum the counts over the ranks, so every rank reports the whole epoch's statistics."""
        for total in (self.loss, self.correct, self.count, self.straight_correct):
            distributed.all_reduce_sum_(total)

    def stats(self) -> EpochStats:
        total = float(self.count.sum())
        seen = [a for a in range(len(self.count)) if self.count[a] > 0]
        return EpochStats(
            loss=float(self.loss.sum()) / max(total, 1.0),
            accuracy=float(self.correct.sum()) / max(total, 1.0),
            straight_accuracy=float(self.straight_correct) / max(total, 1.0),
            samples=int(total),
            loss_per_action={a: float(self.loss[a] / self.count[a]) for a in seen},
            accuracy_per_action={a: float(self.correct[a] / self.count[a]) for a in seen},
            samples_per_action={a: int(self.count[a]) for a in seen},
        )


class PathLogits(nn.Module):
    """One training step's forward as one module call: the straight pass, then each sample's
    action. DDP hooks its gradient allreduce to a module's ``forward``, so both passes must run
    inside one; in a single process it runs exactly what calling the model's methods runs.
    """

    def __init__(self, model: DynaLayNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: Tensor, actions: Tensor, solver: str = "fpi"
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, K) of the straight pass and (B, K) after each sample's action."""
        straight = self.model.straight(images)
        return straight.state.logits, self.model.step(straight.state, actions, solver).state.logits


def training_forward(model: DynaLayNet) -> nn.Module:
    """The module :func:`train_epoch` calls for ``model``: :class:`PathLogits`, wrapped in
    DistributedDataParallel when several processes train (:mod:`main_model.distributed`).
    Build it once per training run, after ``requires_grad`` is set on what trains."""
    return distributed.data_parallel(PathLogits(model))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(
    model: DynaLayNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    choose_actions: ActionChooser,
    on_batch: Callable[[float], None] | None = None,
    *,
    train_straight: bool = True,
    solver: str = "fpi",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward: nn.Module | None = None,
) -> EpochStats:
    """One pass over ``batches`` of (images (B, C, H, W), labels (B,)); cross-entropy loss.

    Each sample runs the straight pass then its chosen action; gradients through looped
    blocks are implicit (see :class:`main_model.fpi.FPIBlock`). ``train_straight`` adds the
    straight pass's CE for every sample (see the module docstring). ``scheduler`` steps after
    every optimiser step. ``on_batch(loss)`` is called after every step (progress bars).
    ``forward``: :func:`training_forward` of ``model``, built once by the caller (default: one
    built here).

    Several processes (:mod:`main_model.distributed`): ``batches`` are the global batches, the
    same on every rank; actions are chosen for the whole global batch (so random choices draw
    what one process draws), then each rank trains on its share of the rows with a loss
    scaled so that DDP's averaged gradient is that of the global batch's mean loss. The
    returned statistics cover every rank's samples; ``on_batch`` gets this rank's scaled loss.
    """
    model.train()
    forward = training_forward(model) if forward is None else forward
    totals = _Accumulator(model.n_actions)
    started, backward_seconds = time.perf_counter(), 0.0
    shared = distributed.is_distributed()
    for images, labels in batches:
        with torch.no_grad():
            actions = choose_actions(images, labels).to(images.device)
        if shared:
            shard = distributed.batch_shard(labels.shape[0])
            images, labels, actions = images[shard.rows], labels[shard.rows], actions[shard.rows]
        straight_logits, logits = forward(images, actions, solver)
        path_losses = per_sample(F.cross_entropy(logits, labels, reduction="none"))
        if train_straight:
            straight_losses = per_sample(F.cross_entropy(straight_logits, labels, reduction="none"))
            sample_losses = straight_losses + path_losses * (actions != 0)
        else:
            sample_losses = path_losses
        # One process: the mean, as always. Several: this rank's sum scaled by N / global rows,
        # which DDP's mean over the N ranks turns into the global batch's mean.
        loss = sample_losses.sum() * shard.loss_scale if shared else sample_losses.mean()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(images.device)
        backward_started = time.perf_counter()
        loss.backward()
        _synchronize(images.device)
        backward_seconds += time.perf_counter() - backward_started
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            straight_correct = per_sample(straight_logits.argmax(dim=1) == labels)
        correct = per_sample(logits.argmax(dim=1) == labels)
        totals.add(path_losses, correct, actions, straight_correct)
        if on_batch is not None:
            on_batch(float(loss.detach()))
    model.eval()
    totals.merge_ranks()
    stats = totals.stats()
    stats.seconds = time.perf_counter() - started
    stats.backward_seconds = backward_seconds
    return stats


def per_sample(values: Tensor) -> Tensor:
    """(B,) values per sample: ``values`` itself when (B,); for per-position values (B, T) (a
    language model's token losses or hits) their mean over the positions, float64 for hits."""
    if values.dim() == 1:
        return values
    return (
        values.flatten(1).to(torch.float64 if values.dtype == torch.bool else values.dtype).mean(1)
    )


def fit(
    model: DynaLayNet,
    epoch_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    *,
    epochs: int,
    batches_per_epoch: int,
    recipe: str | Recipe = "dynalay",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    seed: int = 0,
    on_batch: Callable[[float], None] | None = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` from scratch with ``recipe`` (Adam(W)); returns one :class:`EpochStats`
    per epoch.

    Args:
        epoch_batches: ``epoch -> batches`` of (images, labels) for that epoch (1-based).
        batches_per_epoch: for the learning-rate schedule.
        schedule: ``cosine`` (decay to 0 over all steps) or ``constant``.
        seed: seeds the recipe's path draws.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches_per_epoch)
        if schedule == "cosine"
        else None
    )
    choose = recipe_actions(recipe, model.n_actions, torch.Generator().manual_seed(seed))
    forward = training_forward(model)  # one DDP wrapper for the whole run when distributed
    history = []
    for epoch in range(1, epochs + 1):
        stats = train_epoch(
            model,
            optimizer,
            epoch_batches(epoch),
            choose,
            on_batch,
            train_straight=recipe.train_straight,
            solver=recipe.solver,
            scheduler=scheduler,
            forward=forward,
        )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history


def path_name(action: int) -> str:
    """``NOP`` for action 0, ``loop-k`` for action k (the static path's name in every report)."""
    return "NOP" if action == 0 else f"loop-{action}"


@torch.no_grad()
def evaluate_paths(model: DynaLayNet, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[int, float]:
    """Accuracy of every static path (0 = NOP .. n = loop all) on ``batches``."""
    return {a: s["accuracy"] for a, s in path_statistics(model, batches).items()}


@torch.no_grad()
def path_statistics(
    model: DynaLayNet,
    batches: Iterable[tuple[Tensor, Tensor]],
    solver: str = "fpi",
    actions: Sequence[int] | None = None,
) -> dict[int, dict[str, float]]:
    """Per static path (0 = NOP .. n = loop all; ``actions``: only these): accuracy, mean CE
    loss, mean FLOPs per sample (the straight pass included) and mean loop iterations per
    looped block."""
    model.eval()
    n = model.n_actions
    paths = list(range(n)) if actions is None else list(actions)
    correct = torch.zeros(n, dtype=torch.float64)
    loss = torch.zeros(n, dtype=torch.float64)
    flops = torch.zeros(n, dtype=torch.float64)
    iterations = torch.zeros(n, dtype=torch.float64)
    total = 0
    for images, labels in batches:
        straight = model.straight(images)
        for action in paths:
            output = straight
            if action > 0:
                actions = torch.full((images.shape[0],), action, device=images.device)
                output = model.step(straight.state, actions, solver)
                flops[action] += float(output.flops.sum())
                iterations[action] += float(output.iterations[:, :action].double().mean(1).sum())
            logits = output.state.logits
            flops[action] += float(straight.flops.sum())
            # Per sample: the mean over its positions (one position per image; T for a
            # language model's windows, all of length T, so the sum over tokens / T).
            positions = labels[0].numel()
            correct[action] += float((logits.argmax(dim=1) == labels).sum()) / positions
            loss[action] += float(F.cross_entropy(logits, labels, reduction="sum")) / positions
        total += images.shape[0]
    total = max(total, 1)
    return {
        action: {
            "accuracy": float(correct[action]) / total,
            "loss": float(loss[action]) / total,
            "flops": float(flops[action]) / total,
            "iterations": float(iterations[action]) / total,
        }
        for action in paths
    }
