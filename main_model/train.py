"""Supervised training of a main model (PyTorch only): one epoch, a whole run, a pre-training.

- :func:`train_epoch`: one pass over batches, each sample along the path an
  :data:`~main_model.recipes.ActionChooser` picks (a recipe's draws, or the agent's choices in
  the alternating trainer's supervised phases); the loss is computed in one place,
  :func:`sample_losses`.
- :func:`fit`: a run from scratch with a :class:`~main_model.recipes.Recipe`, Adam(W) and a
  cosine schedule.
- :func:`train_main_model` / :func:`pretrain_main_model`: :func:`fit` on a data split, with a
  progress bar, a duration estimate (and a limit, :class:`PretrainTooLongError`) and the
  split's provenance recorded in the model (which rows it trained on).
- every step is checked to be finite (:mod:`main_model.divergence`): a diverging run raises
  :class:`~main_model.divergence.TrainingDiverged` before anything non-finite can be saved.

Data comes as a :class:`Split`, a small protocol that ``dynalay_env``'s image and text splits
follow, so nothing here imports the environment package. Recipes live in
:mod:`main_model.recipes`, per-path statistics in :mod:`main_model.paths`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import main_model.distributed as distributed
from main_model.divergence import TrainingDiverged, check_finite_step
from main_model.network import DynaLayConfig, DynaLayNet
from main_model.paths import evaluate_paths, path_name, per_sample
from main_model.progress import progress_bar
from main_model.recipes import ActionChooser, Recipe, get_recipe, recipe_actions
from main_model.sequence import DynaLaySeqConfig, DynaLaySeqNet
from main_model.training_forward import PathLogits, training_forward

#: ``fit``'s optimisers, by name.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
}
#: A distillation teacher: model inputs (B, ...) -> logits (B, K, ...), called without gradient
#: (e.g. a separately trained wider plain CNN, :func:`straight_logits_of`).
Teacher = Callable[[Tensor], Tensor]
#: Batches timed, after a first warm-up batch, before a training run's duration is estimated.
_TIMED_BATCHES = 1


class Split(Protocol):
    """What training needs of a data split (``dynalay_env.data.ImageSplit`` and ``TextSplit``):
    its length and device, a copy on another device, a batch of model inputs for some rows, the
    labels, a ``spec`` with the dataset's ``name``, and the record a model trained on it keeps
    (:meth:`training_provenance`). A text split also has a ``vocabulary``."""

    labels: Tensor
    spec: Any

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def to(self, device: str | torch.device) -> Split: ...

    def normalized(self, rows: Tensor) -> Tensor: ...

    def training_provenance(self) -> dict: ...


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_losses(
    paths: PathLogits,
    labels: Tensor,
    actions: Tensor,
    recipe: Recipe,
    teacher_logits: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """THE LOSS of a training step, per sample: ``(sample_losses, path_losses)``, both (B,).

    ``path_losses``: cross-entropy of each sample's chosen path (``paths.chosen``; a language
    model's: the mean over its positions). ``sample_losses``, what is minimised (its mean over
    the batch, plus ``recipe.jacobian_weight`` x ``paths.jacobian``, :func:`train_epoch`):
    ``path_losses``, plus, with ``recipe.train_straight``, the straight pass's cross-entropy
    for every sample (a NOP sample's path *is* the straight pass: counted once). Every option
    of the loss belongs here, so :func:`train_epoch` and everything built on it share it.

    ``recipe.loop_weighting`` (:data:`~main_model.recipes.LOOP_WEIGHTINGS`, with
    ``train_straight``) weights each loop path's loss by what the straight pass left to do, so
    the loop learns what the straight pass lacks instead of a copy of it: ``hard`` by
    1 - p_straight(label), ``unsure`` by 1 - max p_straight (the samples a confidence policy
    sends to a loop), both detached and scaled to mean 1 over the batch's loop samples;
    ``uniform`` weighs all alike.

    ``teacher_logits`` (same shape as the logits, with ``recipe.distill_weight`` w > 0): a
    loop path's loss becomes (1 - w) CE(label) + w T^2 KL(teacher_T || loop_T) at temperature
    T, so the loop learns what a stronger model knows beyond the label while the straight path
    keeps learning the labels. ``paths.iterates`` (``recipe.iterate_losses``): the loop
    path's answer after fewer iterations adds its cross-entropy, weighted gamma ** (states
    after it). With ``recipe.loop_share`` < 1 every loop term is scaled by 1 / share (the
    share of samples that loop). The weighting above applies to every loop term; ``path_losses`` stays the
    chosen path's cross-entropy (what the statistics report).
    """
    path_losses = per_sample(F.cross_entropy(paths.chosen, labels, reduction="none"))
    if recipe.distill_weight > 0 and teacher_logits is None:
        raise ValueError(f"recipe {recipe.name!r} distils its loops: teacher_logits are needed")
    if len(paths.iterates) != len(recipe.iterate_losses):
        raise ValueError(
            f"recipe {recipe.name!r} reads the loops after {recipe.iterate_losses} iterations, "
            f"got {len(paths.iterates)} such answers (build the forward with training_forward("
            "model, recipe))"
        )
    if not recipe.train_straight:
        return path_losses, path_losses
    straight_losses = per_sample(F.cross_entropy(paths.straight, labels, reduction="none"))
    looped = (actions != 0).to(path_losses.dtype)
    if recipe.loop_weighting != "uniform":
        looped = looped * _loop_weights(paths.straight, labels, recipe.loop_weighting, looped)
    if recipe.loop_share < 1.0:  # fewer samples loop: each stands for 1 / share of them
        looped = looped / recipe.loop_share
    loop_losses = path_losses
    if recipe.distill_weight > 0:
        w = recipe.distill_weight
        loop_losses = (1.0 - w) * path_losses + w * _distillation(
            paths.chosen, teacher_logits, recipe.distill_temperature
        )
    for after, logits in enumerate(reversed(paths.iterates), start=1):
        loss = per_sample(F.cross_entropy(logits, labels, reduction="none"))
        loop_losses = loop_losses + recipe.iterate_gamma**after * loss
    return straight_losses + loop_losses * looped, path_losses


def _distillation(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """(B,) T^2 KL(softmax(teacher / T) || softmax(logits / T)), the class dimension being 1."""
    student = F.log_softmax(logits / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=1)
    return per_sample(kl) * temperature**2


def straight_logits_of(model: DynaLayNet) -> Teacher:
    """A :data:`Teacher` from a trained main model: its straight pass's logits, in eval mode
    and without gradient (a plain CNN baseline is a main model trained on that path only),
    on the device of the images it is given, wherever the teacher's weights are."""
    model.eval().requires_grad_(False)
    device = next(model.parameters()).device

    def logits(images: Tensor) -> Tensor:
        with torch.no_grad():
            return model.straight(images.to(device)).state.logits.to(images.device)

    return logits


def _loop_weights(
    straight_logits: Tensor, labels: Tensor, weighting: str, looped: Tensor
) -> Tensor:
    """(B,) detached weights of the loop losses, mean 1 over the looped samples."""
    with torch.no_grad():
        probabilities = straight_logits.softmax(dim=1)
        if weighting == "hard":
            left = 1.0 - per_sample(probabilities.gather(1, labels.unsqueeze(1)).squeeze(1))
        elif weighting == "unsure":
            left = 1.0 - per_sample(probabilities.amax(dim=1))
        else:
            raise ValueError(f"unknown loop weighting {weighting!r}")
        mean = (left * looped).sum() / looped.sum().clamp_min(1.0)
        return left / mean.clamp_min(1e-6)


def train_epoch(
    model: DynaLayNet,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    choose_actions: ActionChooser,
    on_batch: Callable[[float], None] | None = None,
    *,
    recipe: Recipe | str = "dynalay",
    solver: str | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward: nn.Module | None = None,
    teacher: Teacher | None = None,
) -> EpochStats:
    """One pass over ``batches`` of (images (B, C, H, W), labels (B,)); cross-entropy loss.

    Each sample runs the straight pass then its chosen action; gradients through looped
    blocks are implicit (see :class:`main_model.fpi.FPIBlock`). The loss is
    :func:`sample_losses` of ``recipe`` (its straight loss, loop weighting, iterate losses,
    distillation from ``teacher``'s logits of the same images: see there; under torchrun a
    weighting's mean is taken over each rank's share), plus ``recipe.jacobian_weight`` x the
    step's Jacobian regulariser; the paths are ``choose_actions``', not the recipe's draws.
    ``solver``: how loops run (default: the recipe's). ``scheduler`` steps after
    every optimiser step. ``on_batch(loss)`` is called after every step (progress bars).
    ``forward``: :func:`training_forward` of ``model`` and ``recipe``, built once by the
    caller (default: one built here). After every optimiser step the loss and the model's weights and statistics
    must be finite (:func:`check_finite_step`, the step's one extra host sync), else
    :class:`TrainingDiverged` is raised, naming the step (1-based within the epoch).

    Several processes (:mod:`main_model.distributed`): ``batches`` are the global batches, the
    same on every rank; actions are chosen for the whole global batch (so random choices draw
    what one process draws), then each rank trains on its share of the rows with a loss
    scaled so that DDP's averaged gradient is that of the global batch's mean loss. The
    returned statistics cover every rank's samples; ``on_batch`` gets this rank's scaled loss.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    solver = recipe.solver if solver is None else solver
    model.train()
    forward = training_forward(model, recipe) if forward is None else forward
    totals = _Accumulator(model.n_actions)
    started, backward_seconds = time.perf_counter(), 0.0
    shared = distributed.is_distributed()
    for step, (images, labels) in enumerate(batches, start=1):
        try:
            with torch.no_grad():  # a chooser may raise TrainingDiverged too (the agent's)
                actions = choose_actions(images, labels).to(images.device)
            if shared:
                shard = distributed.batch_shard(labels.shape[0])
                images, labels, actions = (t[shard.rows] for t in (images, labels, actions))
            paths = forward(images, actions, solver)
        except torch.linalg.LinAlgError as error:
            # The FFT contraction bound's SVD fails on non-finite loop weights (ones that came
            # in with the model: the steps here are checked before the next forward).
            raise TrainingDiverged(
                "the loops' contraction bound could not be computed (a loop weight is not "
                f"finite: {str(error).splitlines()[0]})",
                step=step,
            ) from error
        except TrainingDiverged as error:
            error.step = step
            raise
        teacher_logits = teacher(images) if recipe.distill_weight > 0 else None
        losses, path_losses = sample_losses(paths, labels, actions, recipe, teacher_logits)
        # One process: the mean, as always. Several: this rank's sum scaled by N / global rows,
        # which DDP's mean over the N ranks turns into the global batch's mean.
        loss = losses.sum() * shard.loss_scale if shared else losses.mean()
        if paths.jacobian is not None:  # each rank's mean: DDP's mean of them is the batch's
            loss = loss + recipe.jacobian_weight * paths.jacobian
        optimizer.zero_grad(set_to_none=True)
        _synchronize(images.device)
        backward_started = time.perf_counter()
        loss.backward()
        _synchronize(images.device)
        backward_seconds += time.perf_counter() - backward_started
        optimizer.step()
        check_finite_step(loss, model, step)  # before the next forward computes the bound
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            straight_correct = per_sample(paths.straight.argmax(dim=1) == labels)
            correct = per_sample(paths.chosen.argmax(dim=1) == labels)
        totals.add(path_losses, correct, actions, straight_correct)
        if on_batch is not None:
            on_batch(float(loss.detach()))
    model.eval()
    totals.merge_ranks()
    stats = totals.stats()
    stats.seconds = time.perf_counter() - started
    stats.backward_seconds = backward_seconds
    return stats


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
    optimizer: str = "adamw",
    choose_actions: ActionChooser | None = None,
    solver: str | None = None,
    teacher: Teacher | None = None,
) -> list[EpochStats]:
    """Train ``model`` with ``recipe`` (Adam(W)); returns one :class:`EpochStats` per epoch.

    Args:
        epoch_batches: ``epoch -> batches`` of (images, labels) for that epoch (1-based).
        batches_per_epoch: for the learning-rate schedule.
        schedule: ``cosine`` (decay to 0 over all steps) or ``constant``.
        seed: seeds the recipe's path draws.
        on_batch: called with each step's loss; ``on_epoch(epoch, stats)`` after each epoch.
        optimizer: ``adamw`` (from scratch) or ``adam`` (the alternating trainer's
            supervised phases, which fine-tune; both without weight decay by default).
        choose_actions: who chooses each sample's path (default: the recipe's draws; the
            trainer passes its agent's choices); the recipe still sets the loss.
        solver: how loops run (default: the recipe's).
        teacher: the loop paths' distillation teacher, needed when the recipe's
            ``distill_weight`` > 0 (:func:`straight_logits_of` makes one of a plain CNN).

    Raises :class:`TrainingDiverged` (with its epoch) as soon as a step is not finite.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if recipe.distill_weight > 0 and teacher is None:
        raise ValueError(
            f"recipe {recipe.name!r} distils its loops (distill_weight "
            f"{recipe.distill_weight}) but no teacher was given: pass teacher= (e.g. "
            "straight_logits_of(a trained wider plain CNN))"
        )
    optimizer_ = OPTIMIZERS[optimizer](
        model.parameters(), lr=learning_rate, weight_decay=weight_decay
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer_, epochs * batches_per_epoch)
        if schedule == "cosine"
        else None
    )
    choose = (
        recipe_actions(recipe, model.n_actions, torch.Generator().manual_seed(seed))
        if choose_actions is None
        else choose_actions
    )
    forward = training_forward(model, recipe)  # one DDP wrapper for the whole run
    history = []
    for epoch in range(1, epochs + 1):
        try:
            stats = train_epoch(
                model,
                optimizer_,
                epoch_batches(epoch),
                choose,
                on_batch,
                recipe=recipe,
                solver=solver,
                scheduler=scheduler,
                forward=forward,
                teacher=teacher,
            )
        except TrainingDiverged as error:
            error.epoch = epoch
            raise
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return history


# ----- a main model trained on a data split -------------------------------------------------------
class PretrainTooLongError(RuntimeError):
    """Training a main model was estimated to take longer than allowed (``time_limit_s``)."""


def iterate_batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled (when ``generator`` is given) batches of model inputs (normalised images, or
    token ids) and labels of ``split``, in order otherwise."""
    order = (
        torch.randperm(len(split), generator=generator)
        if generator is not None
        else torch.arange(len(split))
    )
    order = order.to(split.device)
    for start in range(0, len(split), batch_size):
        rows = order[start : start + batch_size]
        yield split.normalized(rows), split.labels[rows]


def new_main_model(
    config: DynaLayConfig | DynaLaySeqConfig, split: Split
) -> DynaLayNet | DynaLaySeqNet:
    """An untrained main model of ``config`` for ``split``'s data (with its vocabulary)."""
    if isinstance(config, DynaLaySeqConfig):
        return DynaLaySeqNet(config, split.vocabulary)
    return DynaLayNet(config)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train_main_model(
    train_split: Split,
    *,
    epochs: int,
    config: DynaLayConfig | DynaLaySeqConfig,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    recipe: str | Recipe = "dynalay",
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    time_limit_s: float | None = None,
    teacher: Teacher | None = None,
) -> tuple[DynaLayNet, list[EpochStats]]:
    """Train a main model of ``config`` from scratch on ``train_split`` with ``recipe`` (see
    :mod:`main_model.recipes`; ``plain`` gives the plain-CNN baseline), Adam with cosine decay.

    ``teacher``: the loops' distillation teacher when ``recipe`` distils (see :func:`fit`).

    ``time_limit_s``: after the first few batches the whole run's duration is estimated (and
    printed when ``progress``); over this limit, :class:`PretrainTooLongError` is raised then.

    Under torchrun (:mod:`main_model.distributed`) every process calls this with the same
    arguments: ``batch_size`` is the global batch, each process trains on its share of it
    through DDP, and all end with the same weights (pass ``progress`` on rank 0 only).

    Returns the model (in eval mode, recording its training rows in ``provenance``:
    ``train_split.training_provenance()``, the recipe and the epochs) and one
    :class:`EpochStats` per epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    torch.manual_seed(seed)
    device = torch.device(device)
    model = new_main_model(config, train_split).to(device)
    split = train_split.to(device)
    distributed.check_batches(len(split), batch_size)  # several processes: a global batch each
    generator = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(split) // batch_size)
    bar = progress_bar(
        total=epochs * batches_per_epoch,
        desc=f"train {split.spec.name} main model ({recipe.name}, {epochs} epochs)",
        disable=not progress,
    )

    total_batches = epochs * batches_per_epoch
    batch_ends: list[float] = []

    def advance(loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if len(batch_ends) <= _TIMED_BATCHES and total_batches > _TIMED_BATCHES + 1:
            batch_ends.append(time.perf_counter())
            if len(batch_ends) == _TIMED_BATCHES + 1:  # the first batch is warm-up: not timed
                per_batch = (batch_ends[-1] - batch_ends[0]) / _TIMED_BATCHES
                check_duration(per_batch, total_batches)

    def check_duration(per_batch: float, total: int) -> None:
        estimate = per_batch * total
        summary = (
            f"training {total} batches ({epochs} epoch(s) of {batches_per_epoch}) of a "
            f"{'/'.join(map(str, model.config.widths))} {split.spec.name} main model takes about "
            f"{format_duration(estimate)} here ({per_batch:.2f} s per batch on {device.type})"
        )
        if time_limit_s is not None and estimate > time_limit_s:
            raise PretrainTooLongError(
                f"{summary}, over the limit of {format_duration(time_limit_s)}."
            )
        if progress:
            bar.write(f"DynaLay: {summary}", file=sys.stderr)

    with bar:
        history = fit(
            model,
            lambda epoch: iterate_batches(split, batch_size, generator),
            epochs=epochs,
            batches_per_epoch=batches_per_epoch,
            recipe=recipe,
            learning_rate=learning_rate,
            seed=seed,
            on_batch=advance,
            teacher=teacher,
        )
    model.provenance = {
        **train_split.training_provenance(),
        "recipe": recipe.name,
        "epochs": epochs,
    }
    return model.eval(), history


def pretrain_main_model(
    train_split: Split,
    *,
    eval_split: Split | None = None,
    progress: bool = True,
    **training: Any,
) -> DynaLayNet:
    """:func:`train_main_model` (``training`` are its keyword arguments), returning the model.

    ``eval_split``: when given, the accuracy of every static path on it is printed at the end.
    """
    model, _ = train_main_model(train_split, progress=progress, **training)
    if eval_split is not None and progress:
        device = next(model.parameters()).device
        accuracy = evaluate_paths(model, iterate_batches(eval_split.to(device), 256))
        summary = ", ".join(f"{path_name(a)} {acc:.3f}" for a, acc in accuracy.items())
        print(f"main model accuracy on {eval_split.spec.name} per path: {summary}", file=sys.stderr)
    return model
