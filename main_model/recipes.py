"""Training recipes: which path (action) each training sample takes and what the loss covers.

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

A recipe becomes an :data:`ActionChooser` (:func:`recipe_actions`) that
:func:`main_model.train.train_epoch` asks for every batch; in the alternating phase the agent
chooses the paths instead, with the recipe's rule for the straight loss. A new recipe is one
:data:`RECIPES` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: Chooses one action per sample: (images (B, C, H, W), labels (B,)) -> actions (B,) int64.
ActionChooser = Callable[[Tensor, Tensor], Tensor]


#: How a recipe weights each sample's loop-path loss (:func:`main_model.train.sample_losses`).
LOOP_WEIGHTINGS = ("uniform", "hard", "unsure")


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
        loop_weighting: how each sample's loop loss is weighted (:data:`LOOP_WEIGHTINGS`,
            :func:`main_model.train.sample_losses`): ``uniform``, or toward the samples the
            straight pass gets wrong (``hard``) or is unsure of (``unsure``).
        distill_weight: the share, in [0, 1], of each loop path's loss that is distillation
            from a teacher (KL to its softened class probabilities) instead of cross-entropy
            to the label; the straight path always learns the labels alone. 0 (the default)
            trains without a teacher; above 0 training needs one (``teacher=`` of
            :func:`main_model.train.fit`).
        distill_temperature: the softening temperature T of that KL (scaled by T^2, as in
            Hinton et al. 2015, so its gradient does not shrink with T).
        iterate_losses: a loss on several iterations (TorchDEQ's fixed-point correction): each
            loop path is also read after exactly these many iterations of every looped block
            (increasing, each >= 1; backprop through them) and each such answer's
            cross-entropy joins the loop loss, weighted ``iterate_gamma`` ** (how many states
            come after it), the fixed point's weight being 1; () (the default): the fixed point
            alone.
        iterate_gamma: that decay, in (0, 1] (TorchDEQ's ``exp`` weighting, 0.8 there).
        loop_share: the share, in (0, 1], of each batch's samples that take a drawn loop path
            (the others take NOP: the straight pass alone), with their loop losses scaled by
            1 / share so that the expected loss is the full recipe's; a cheaper training step
            (the loops run on fewer samples) at the cost of noisier loop gradients. 1 (the
            default): every sample draws a path (and draws no extra random numbers).
        jacobian_weight: a weight >= 0 on TorchDEQ's Jacobian regulariser at every looped
            block's fixed point (a Hutchinson estimate of ||J_f(z*)||_F^2 per element, Bai et
            al. 2021), added to the batch's mean loss; 0 (the default) trains without it.
    """

    name: str
    low: int
    high: int | None
    train_straight: bool
    solver: str = "fpi"
    description: str = ""
    loop_weighting: str = "uniform"
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    iterate_losses: tuple[int, ...] = ()
    iterate_gamma: float = 0.8
    jacobian_weight: float = 0.0
    loop_share: float = 1.0

    def __post_init__(self) -> None:
        if self.loop_weighting not in LOOP_WEIGHTINGS:
            raise ValueError(
                f"loop_weighting must be one of {LOOP_WEIGHTINGS}, got {self.loop_weighting!r}"
            )
        if self.loop_weighting != "uniform" and not self.train_straight:
            raise ValueError("a loop weighting needs train_straight (it reads the straight pass)")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if self.distill_weight > 0 and not self.train_straight:
            raise ValueError(
                "distillation needs train_straight (the straight path learns the labels, the "
                "loop paths the teacher)"
            )
        steps = tuple(self.iterate_losses)
        if any(not isinstance(k, int) or k < 1 for k in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(
                f"iterate_losses must be increasing iteration counts >= 1, e.g. (1, 2), got {steps!r}"
            )
        object.__setattr__(self, "iterate_losses", steps)  # a list (from JSON) becomes a tuple
        if steps and not self.train_straight:
            raise ValueError("iterate_losses needs train_straight (they add to the loop loss)")
        if not 0.0 < self.iterate_gamma <= 1.0:
            raise ValueError(f"iterate_gamma must be in (0, 1], got {self.iterate_gamma}")
        if self.jacobian_weight < 0:
            raise ValueError(f"jacobian_weight must be >= 0, got {self.jacobian_weight}")
        if not 0.0 < self.loop_share <= 1.0:
            raise ValueError(f"loop_share must be in (0, 1], got {self.loop_share}")
        if self.loop_share < 1.0 and not self.train_straight:
            raise ValueError(
                "loop_share < 1 needs train_straight (its NOP samples train the straight path)"
            )


RECIPES: dict[str, Recipe] = {
    # The loop loss weighted toward the samples the straight pass is unsure of: measured better
    # than uniform on the Fashion-MNIST holdout (docs/results.md, "Loops worth their FLOPs").
    "dynalay": Recipe(
        "dynalay",
        1,
        None,
        True,
        description="straight + loop-1..n, unsure-weighted",
        loop_weighting="unsure",
    ),
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
    """The :data:`ActionChooser` of ``recipe``: uniform over its action range (``-1`` = loop-n),
    for a ``recipe.loop_share`` of the samples (NOP for the others)."""
    n_blocks = n_actions - 1
    low = n_blocks if recipe.low < 0 else recipe.low
    high = n_blocks if recipe.high is None else recipe.high

    def choose(images: Tensor, labels: Tensor) -> Tensor:
        draws = torch.randint(low, high + 1, (images.shape[0],), generator=generator)
        if recipe.loop_share < 1.0:  # the others train their straight path only
            keep = torch.rand(images.shape[0], generator=generator) < recipe.loop_share
            draws = torch.where(keep, draws, torch.zeros_like(draws))
        return draws.to(images.device)

    return choose


def uniform_actions(n_actions: int, generator: torch.Generator | None = None) -> ActionChooser:
    """An :data:`ActionChooser` drawing every path (NOP and loop-1..n) uniformly."""
    return recipe_actions(RECIPES["uniform"], n_actions, generator)
