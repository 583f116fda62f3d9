"""The reward of the DynaLay MDP and its settings, in one place.

:class:`MDPConfig` holds the four settings (``alpha``, ``beta``, ``max_steps``, ``penalty``),
their defaults (the thesis's) and their checks; :func:`reward` is the one function that turns a
decision into a reward. The core (:class:`~dynalay_env.core.DynaLayCore`) calls it on every
step; nothing else computes a reward.

    R = alpha * correct                                   when the episode ends with the answer
      - beta * cost * consecutive_count                   for a loop action (penalty="consecutive")
      - beta * cost * k                                   for loop-k          (penalty="layer")

A new reward option is a field of :class:`MDPConfig` (with its check) and its use in
:func:`reward`; the envs, ``build_core`` and the trainer pass the config object on unchanged
(``TrainConfig.mdp`` builds it from a run's flags).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, where

#: Readings of the reward's last factor (see :class:`MDPConfig`'s ``penalty``).
PENALTIES = ("consecutive", "layer")


@dataclass(frozen=True)
class MDPConfig:
    """The reward's settings and the episode length.

    Attributes:
        alpha: reward per correct answer (a language model's: times its share of positions
            predicted right). Finite, >= 0.
        beta: weight of the compute penalty. Finite, >= 0.
        max_steps: decisions per episode before the answer is forced (1 = the thesis's one-shot
            choice). An int >= 1.
        penalty: what multiplies ``beta * cost`` in a loop's reward. The thesis's equation
            names it "consecutive layer count", its text "which layer is chosen":
            ``consecutive`` (default): decisions in a row, this one included, that chose this
            same k; ``layer``: k itself, the index of the deepest looped block.
    """

    alpha: float = 0.5
    beta: float = 0.3
    max_steps: int = 1
    penalty: str = "consecutive"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"max_steps must be an integer, got {steps!r}")
        if steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {steps}")
        object.__setattr__(self, "max_steps", int(steps))
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, mdp: MDPConfig | None = None, **settings: Any) -> MDPConfig:
        """The config of an env constructor's keyword arguments: ``mdp`` as given, or one made
        of the loose ``alpha=``, ``beta=``, ``max_steps=``, ``penalty=`` (None: the default).
        Both at once is refused (which would win?)."""
        given = {key: value for key, value in settings.items() if value is not None}
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown MDP settings {unknown}")
        if mdp is not None:
            if given:
                raise ValueError(
                    f"pass the reward settings either as mdp=MDPConfig(...) or as keywords, not "
                    f"both (got mdp and {sorted(given)})"
                )
            if not isinstance(mdp, MDPConfig):
                raise TypeError(f"mdp must be an MDPConfig, got {type(mdp).__name__}")
            return mdp
        return cls(**given)


def reward(
    mdp: MDPConfig,
    *,
    looped: Tensor,
    cost: Tensor,
    count: Tensor,
    actions: Tensor,
    terminated: Tensor,
    correct: Tensor,
) -> Tensor:
    """(N,) float64 rewards of one decision in N slots (see the module docstring).

    Args:
        looped: (N,) bool, the slot took a loop action (an active slot with k >= 1).
        cost: (N,) float64, this step's FLOPs / the most expensive step's, in [0, 1].
        count: (N,) int64, decisions in a row (this one included) that chose this same k.
        actions: (N,) int64, the actions k.
        terminated: (N,) bool, the episode ends with the answer on this step.
        correct: (N,) bool or float64 in [0, 1], how right the current answer is.
    """
    multiplier = count if mdp.penalty == "consecutive" else actions
    value = where(looped, -mdp.beta * cost * multiplier, 0.0)
    return value + where(terminated, mdp.alpha * correct.double(), 0.0)
