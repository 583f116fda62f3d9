"""The reward of the DynaLay MDP and its settings, in one place.

:class:`MDPConfig` holds the settings (``alpha``, ``beta``, ``max_steps``, ``penalty``,
``shaping``, and ``observe_changes``, which is the observation's), their defaults (the thesis's) and their checks; :func:`reward` is the one function that turns a
decision into a reward. The core (:class:`~dynalay_env.core.DynaLayCore`) calls it on every
step; nothing else computes a reward.

    R = alpha * correct                                   when the episode ends with the answer
      - beta * cost * consecutive_count                   for a loop action (penalty="consecutive")
      - beta * cost * k                                   for loop-k          (penalty="layer")
      + F(s, s') = Phi(s') - Phi(s)                        with shaping="nop" (see below)

Shaping (``shaping="nop"``, off by default: the registered ids keep the thesis's reward) adds
the potential-based term of Ng, Harada & Russell (1999), "Policy invariance under reward
transformations", with the potential Phi(s) = alpha * correct(s), how right the answer of state
s would be, known in the env from the label, and Phi = 0 at the end of an episode. Every
episode s_0 .. s_T then gets back the default return plus a telescoping sum, sum_t F(s_t,
s_{t+1}) = Phi(s_T) - Phi(s_0) = -alpha * correct(s_0): a term fixed by the straight pass, the
same for every policy from that state. So the order of policies by expected return, and the
optimal policy, are unchanged, while each step now pays what it changed: NOP 0, a loop alpha *
(correct after - correct before) - its cost. Discounting: F is written with gamma = 1 (episodes
are at most ``max_steps`` long, so the undiscounted return is finite); for ``max_steps=1``
there is one step and the discount never enters. An agent that discounts (PPO's gamma < 1)
over ``max_steps > 1`` sees the shaped return approximately, not exactly, policy-invariant
(Ng et al.'s theorem wants the same gamma in F): the discounted sum of F is -Phi(s_0) plus
(1 - gamma) * sum_{t>=1} gamma^(t-1) * Phi(s_t), at most (1 - gamma) * alpha * (max_steps - 1).
An episode cut by ``max_episode_steps`` (truncated, not terminated) keeps its Phi(s_T).

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
#: Potential-based reward shaping (see the module docstring): none, or relative to NOP.
SHAPINGS = ("none", "nop")


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
        shaping: ``none`` (default, the thesis's reward) or ``nop``: the potential-based term
            of the module docstring, so a step is paid alpha * (correct after - correct
            before) on top of its cost; the optimal policy is the same.
        observe_changes: the observation also shows what the last decision changed (three
            values: :func:`~main_model.observation.change_features`); off by default, so the
            registered ids and the saved agents keep their observation size. Not part of the
            reward, but a setting of the episodes that everything building a core passes on.
    """

    alpha: float = 0.5
    beta: float = 0.3
    max_steps: int = 1
    penalty: str = "consecutive"
    shaping: str = "none"
    observe_changes: bool = False

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
        if self.shaping not in SHAPINGS:
            raise ValueError(f"shaping must be one of {SHAPINGS}, got {self.shaping!r}")
        if self.observe_changes not in (True, False):
            raise TypeError(f"observe_changes must be True or False, got {self.observe_changes!r}")
        object.__setattr__(self, "observe_changes", bool(self.observe_changes))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, mdp: MDPConfig | None = None, **settings: Any) -> MDPConfig:
        """The config of an env constructor's keyword arguments: ``mdp`` as given, or one made
        of the loose ``alpha=``, ``beta=``, ``max_steps=``, ``penalty=``, ``shaping=``,
        ``observe_changes=`` (None: the default).
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
    correct_before: Tensor | None = None,
) -> Tensor:
    """(N,) float64 rewards of one decision in N slots (see the module docstring).

    Args:
        looped: (N,) bool, the slot took a loop action (an active slot with k >= 1).
        cost: (N,) float64, this step's FLOPs / the most expensive step's, in [0, 1].
        count: (N,) int64, decisions in a row (this one included) that chose this same k.
        actions: (N,) int64, the actions k.
        terminated: (N,) bool, the episode ends with the answer on this step.
        correct: (N,) bool or float64 in [0, 1], how right the current answer is.
        correct_before: (N,) like ``correct``, how right the answer was before this decision;
            needed (only) with ``shaping="nop"``.
    """
    multiplier = count if mdp.penalty == "consecutive" else actions
    value = where(looped, -mdp.beta * cost * multiplier, 0.0)
    value = value + where(terminated, mdp.alpha * correct.double(), 0.0)
    if mdp.shaping == "none":
        return value
    if correct_before is None:
        raise ValueError('shaping="nop" needs correct_before, how right the answer was before')
    # F = Phi(s') - Phi(s), Phi = alpha * correct and 0 once the episode has ended. A slot that
    # neither looped nor ended took no decision (inactive), and its state did not move.
    before = mdp.alpha * correct_before.double()
    after = where(terminated, 0.0, mdp.alpha * correct.double())
    return value + where(looped | terminated, after - before, 0.0)
