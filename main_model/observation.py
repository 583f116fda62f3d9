"""What an agent sees of the main model's state, and the bookkeeping of its decisions.

Shared by the environment (``dynalay_env.core``, which defines the episodes and the rewards) and
the deployable classifier (:mod:`main_model.adaptive`, which replays the episodes without the
env): one definition of the observation and of when an episode ends, so the two cannot drift.
The observation layout is documented in ``dynalay_env.env.DynaLayEnv``'s docstring (its table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from main_model.network import FPINetwork, NetState

#: FPI residuals are clipped to [0, RESIDUAL_CLIP] in the observation (``inf`` = diverged).
RESIDUAL_CLIP = 10.0


#: The values of :func:`change_features`, in order.
CHANGE_FEATURES = ("prediction_changed", "top_probability_change", "total_variation")


def observation_layout(model: FPINetwork, changes: bool = False) -> dict[str, slice]:
    """Where each part of an observation of ``model``'s state lies in the (D,) vector, in the
    order :func:`observation_tensor` writes them; D = ``step_index``'s stop, the last slice.

    ``changes``: the observation also holds ``changes`` (:func:`change_features`, 3 values),
    placed before the counters so that ``step_index`` stays last; off by default, the layout
    every saved agent was trained on."""
    sizes = {
        "pooled_activations": sum(model.config.widths),
        "class_probabilities": model.probability_features,
        "residuals": model.n_blocks,
        **({"changes": len(CHANGE_FEATURES)} if changes else {}),
        "previous_action": model.n_actions,
        "consecutive_count": 1,
        "step_index": 1,
    }
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = slice(start, start + size)
        start += size
    return layout


def change_features(logits: Tensor, previous_logits: Tensor) -> Tensor:
    """(B, 3) float32: what the last decision changed between the answers ``previous_logits``
    and ``logits`` (both (B, K), or (B, K, T) per position, then averaged over the T positions).

    In the order of :data:`CHANGE_FEATURES`: whether the predicted class changed (0 or 1; per
    position: the share that changed), the change of the top class probability (now minus
    before, in [-1, 1]) and the total variation distance between the two softmaxes, 0.5 *
    sum_k |p_k - q_k| in [0, 1]. All 0 when nothing changed (a first observation, or a loop
    that left the logits as they were): PABEE's signal, "stop when the answer stops moving".
    """
    batch = logits.shape[0]
    now = logits.float().softmax(dim=1).reshape(batch, logits.shape[1], -1)
    before = previous_logits.float().softmax(dim=1).reshape(batch, logits.shape[1], -1)
    changed = (now.argmax(dim=1) != before.argmax(dim=1)).float()
    top_change = now.amax(dim=1) - before.amax(dim=1)
    total_variation = 0.5 * (now - before).abs().sum(dim=1)
    return torch.stack([changed, top_change, total_variation], dim=1).mean(dim=2)


def observation_tensor(
    state: NetState,
    previous_action: Tensor,
    consecutive: Tensor,
    steps: Tensor,
    n_actions: int,
    previous_logits: Tensor | None = None,
) -> Tensor:
    """(B, D) float32 observations (layout: :func:`observation_layout`) of a batch of states.

    ``previous_action`` (B,) is -1 before the first decision; ``consecutive`` and ``steps`` (B,)
    are counts. ``previous_logits``: the answer's logits before the last decision, for the
    layout with ``changes`` (None: the layout without). Used by the core and by anything that
    needs the agent's view of a state. No host sync.
    """
    # One-hot by comparison, all zeros for -1: one_hot() would read the actions' min and max
    # back to the host to check them (two syncs per call on the CPU).
    previous = previous_action.unsqueeze(1) == torch.arange(
        n_actions, device=previous_action.device
    )
    parts = [
        state.pooled(),
        state.class_probabilities(),  # the softmax, or its summary for per-position logits
        state.residual.nan_to_num(RESIDUAL_CLIP).clamp(0.0, RESIDUAL_CLIP),
        *([] if previous_logits is None else [change_features(state.logits, previous_logits)]),
        previous.float(),
        consecutive.unsqueeze(1).float(),
        steps.unsqueeze(1).float(),
    ]
    return torch.cat(parts, dim=1).to(torch.float32)


def first_observation(state: NetState, n_actions: int, changes: bool = False) -> Tensor:
    """(B, D) observations right after reset (straight pass, no decision taken yet); with
    ``changes``, those values are 0 (nothing has changed yet)."""
    batch, device = state.batch_size, state.logits.device
    none = torch.full((batch,), -1, dtype=torch.long, device=device)
    zeros = torch.zeros(batch, dtype=torch.long, device=device)
    previous_logits = state.logits if changes else None
    return observation_tensor(state, none, zeros, zeros, n_actions, previous_logits)


@dataclass
class Decision:
    """The counters of B episodes after one decision (all (B,) tensors).

    Attributes:
        previous_action: the action just taken (unchanged where the episode was not active).
        consecutive: decisions in a row, this one included, that chose this same action.
        steps: decisions taken so far.
        count: the consecutive count of this decision (the reward's ``consecutive`` factor),
            also where the episode was not active.
        ended: bool, the episode answered now: an active episode that chose NOP (0) or
            reached ``max_steps`` decisions.
    """

    previous_action: Tensor
    consecutive: Tensor
    steps: Tensor
    count: Tensor
    ended: Tensor


def decide(
    previous_action: Tensor,
    consecutive: Tensor,
    steps: Tensor,
    actions: Tensor,
    active: Tensor,
    max_steps: int,
) -> Decision:
    """One decision of every ``active`` (B,) bool episode: ``actions`` (B,) long, 0 = NOP.

    The episode logic of DynaLay: NOP answers at once; a loop answers only when it was the
    ``max_steps``-th decision, otherwise the agent decides again on the looped state. Inputs are
    the counters before the decision (``previous_action`` -1 before the first); nothing is
    modified in place. No host sync.
    """
    count = torch.where(actions == previous_action, consecutive + 1, 1)
    steps = steps + active.long()
    return Decision(
        previous_action=torch.where(active, actions, previous_action),
        consecutive=torch.where(active, count, consecutive),
        steps=steps,
        count=count,
        ended=active & ((actions == 0) | (steps >= max_steps)),
    )
