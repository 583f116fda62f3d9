"""A warm start for the agent: behaviour cloning of the confidence-threshold rule, before PPO.

The rule (:func:`agents.evaluate.threshold_policy`): answer at once (NOP) when the top class
probability is >= tau, else take the loop most accurate on the holdout, then answer. Its
demonstrations are played on a sequential core over the agent's holdout split, so they are
observations of the very episodes the agent will learn on (for ``max_steps > 1`` also the
looped states, where the rule answers). The policy's action head (SB3's ``mlp_extractor``
policy branch and ``action_net``; the value branch is left alone) is then fitted to them by
cross-entropy, as SkipNet pre-trains its gates before RL: PPO starts from a policy that is
already the threshold rule instead of a uniform one it must first unlearn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.evaluate import best_loop_on, threshold_policy
from dynalay_env.build import sequential_core
from dynalay_env.core import DynaLayCore
from dynalay_env.mdp import MDPConfig
from main_model import DynaLayNet

#: Maps (B, D) observations to (B,) actions (as :data:`agents.evaluate.Policy`).
Rule = Callable[[np.ndarray], np.ndarray]


def demonstrations(core: DynaLayCore, rule: Rule, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``rule``'s (M, D) float32 observations and (M,) int64 actions over ``episodes`` episodes
    of ``core`` (a sequential core walks its split in order): every decision it takes, M >=
    ``episodes`` (more when it loops and ``max_steps > 1``)."""
    rng = np.random.default_rng(0)
    observations: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    remaining = episodes
    while remaining > 0:
        core.reset_slots(np.arange(core.num_slots), rng)
        running = np.arange(core.num_slots) < min(remaining, core.num_slots)
        while running.any():
            seen = core.observe()
            chosen = np.asarray(rule(seen), dtype=np.int64)
            observations.append(seen[running])
            actions.append(chosen[running])
            result = core.step(chosen, active=running)
            running &= ~(result.terminated | result.truncated)
        remaining -= core.num_slots
    return np.concatenate(observations), np.concatenate(actions)


def _policy_of(policy: object) -> ActorCriticPolicy:
    if not isinstance(policy, ActorCriticPolicy):
        raise ValueError(
            f"behaviour cloning (bc_epochs > 0) fits an actor-critic policy's action head "
            f"(ppo, a2c); this agent's policy is a {type(policy).__name__}"
        )
    return policy


def action_logits(policy: ActorCriticPolicy, observations: torch.Tensor) -> torch.Tensor:
    """(B, A) the policy's action logits of (B, D) (normalised) observations."""
    return _policy_of(policy).get_distribution(observations).distribution.logits


def clone(
    policy: ActorCriticPolicy,
    observations: np.ndarray,
    targets: np.ndarray,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
) -> float:
    """Fit ``policy``'s action head to ``targets`` (M,) on ``observations`` (M, D), as the
    agent sees them (normalised if it is), by ``epochs`` passes of Adam on the cross-entropy
    in shuffled minibatches (``seed``). Returns the share of the M observations on which the
    fitted policy's greedy action equals the target."""
    policy = _policy_of(policy)
    if epochs < 1:
        raise ValueError(f"behaviour cloning needs epochs >= 1, got {epochs}")
    inputs = torch.as_tensor(observations, dtype=torch.float32, device=policy.device)
    labels = torch.as_tensor(targets, dtype=torch.long, device=policy.device)
    head = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    optimizer = torch.optim.Adam(head, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    was_training = policy.training
    policy.train(True)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(policy.device)
        for batch in order.split(batch_size):
            loss = torch.nn.functional.cross_entropy(
                action_logits(policy, inputs[batch]), labels[batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.train(was_training)
    return float((greedy_actions(policy, inputs) == labels).float().mean())


@torch.no_grad()
def greedy_actions(policy: ActorCriticPolicy, observations: torch.Tensor) -> torch.Tensor:
    """(B,) int64 the policy's deterministic actions (argmax of its logits)."""
    return action_logits(policy, observations).argmax(dim=1)


def clone_threshold_rule(
    policy: ActorCriticPolicy,
    model: DynaLayNet,
    holdout,
    mdp: MDPConfig,
    tau: float,
    epochs: int,
    seed: int = 0,
    normalize: Callable[[np.ndarray], np.ndarray] = lambda observations: observations,
    update_stats: Callable[[np.ndarray], None] | None = None,
) -> dict[str, float]:
    """Fit ``policy`` to the threshold rule (``tau``, the holdout's most accurate loop) on the
    rule's decisions over the whole ``holdout`` split, episodes of ``mdp``.

    ``update_stats``: first feed the raw observations to the agent's observation normalisation
    (VecNormalize's running statistics, which PPO then continues from); ``normalize``: the
    agent's view of them. Returns ``agreement`` (share of the decisions where the greedy policy
    now acts as the rule), ``decisions`` and ``loop``.
    """
    device = next(model.parameters()).device
    core, episodes = sequential_core(model, holdout, mdp=mdp, device=device)
    loop = best_loop_on(model, holdout)
    rule = threshold_policy(core.observation_layout, tau, loop)
    observations, targets = demonstrations(core, rule, episodes)
    if update_stats is not None:
        update_stats(observations)
    agreement = clone(policy, normalize(observations), targets, epochs, seed=seed)
    return {"agreement": agreement, "decisions": float(len(targets)), "loop": float(loop)}
