"""Run a policy over a data split in order, batched, and summarise accuracy and compute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dynalay_env.core import DynaLayCore

#: Maps (B, D) observations to (B,) actions.
Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class PolicyResult:
    """Outcome of a policy on ``episodes`` samples.

    Attributes:
        accuracy: share of correct answers.
        mean_cost: mean of the summed normalised step costs per episode.
        relative_flops: mean FLOPs per sample / FLOPs of the plain CNN (1.0 = always NOP).
        action_frequencies: share of decisions that chose each action.
        mean_reward: mean episode return.
    """

    episodes: int
    accuracy: float
    mean_cost: float
    relative_flops: float
    action_frequencies: list[float]
    mean_reward: float


def run_policy(core: DynaLayCore, policy: Policy, episodes: int) -> PolicyResult:
    """Play ``episodes`` episodes on ``core`` (a sequential core walks its split in order).

    Slots are refilled in waves: all N slots start, every slot plays its episode to the end,
    then the next wave starts; the last wave only counts the slots it needs.
    """
    rng = np.random.default_rng(0)
    correct, cost, flops, rewards, actions = [], [], [], [], []
    remaining = episodes
    while remaining > 0:
        core.reset_slots(np.arange(core.num_slots), rng)
        wave = min(remaining, core.num_slots)
        running = np.ones(core.num_slots, dtype=bool)
        returns = np.zeros(core.num_slots)
        while running.any():
            result = core.step(policy(core.observe()), active=running)
            returns += np.where(running, result.reward, 0.0)
            finished = running & (result.terminated | result.truncated)
            for slot in np.flatnonzero(finished[:wave]):
                correct.append(bool(result.episode["correct"][slot]))
                cost.append(float(result.episode["total_cost"][slot]))
                flops.append(float(result.episode["flops"][slot]))
                rewards.append(float(returns[slot]))
                chosen = result.episode["actions"][slot]
                actions.extend(chosen[chosen >= 0].tolist())
            running &= ~finished
        remaining -= wave
    straight = float(core.model.straight_flops())
    counts = np.bincount(np.asarray(actions, dtype=np.int64), minlength=core.n_actions)
    return PolicyResult(
        episodes=len(correct),
        accuracy=float(np.mean(correct)),
        mean_cost=float(np.mean(cost)),
        relative_flops=float(np.mean(flops)) / straight,
        action_frequencies=(counts / max(counts.sum(), 1)).tolist(),
        mean_reward=float(np.mean(rewards)),
    )
