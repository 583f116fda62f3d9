"""The batched core of the DynaLay MDP: N sample slots stepped together on one device.

Both Gymnasium faces (:class:`~dynalay_env.env.DynaLayEnv` with one slot and
:class:`~dynalay_env.vector_env.DynaLayVectorEnv` with N) drive this class; the dynamics live
here once, the reward in :mod:`dynalay_env.mdp`, the observation in
:mod:`main_model.observation`. The MDP's specification (actions, observation table, rewards,
episode end, arguments, info keys) is :class:`~dynalay_env.env.DynaLayEnv`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from dynalay_env.data import ImageSplit, TextSplit
from dynalay_env.mdp import MDPConfig, reward
from main_model import DynaLayNet, NetState
from main_model.network import SOLVERS

# The agent's view of a state and the decision bookkeeping live in main_model, so the deployable
# classifier (main_model.adaptive) replays episodes with the very same code.
from main_model.observation import (
    RESIDUAL_CLIP,
    decide,
    first_observation,
    observation_layout,
    observation_tensor,
)
from main_model.paths import per_sample


def answer_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """(B,) how right each sample's answer is, in [0, 1]: what the reward pays ``alpha`` for.

    One answer per sample (logits (B, K), labels (B,)): bool, right or wrong. One answer per
    position (logits (B, K, T), labels (B, T), a language model): float64, the share of the T
    positions whose next token is predicted right.
    """
    return per_sample(logits.argmax(dim=1) == labels)


def observation_space(model: DynaLayNet, max_steps: int, changes: bool = False) -> spaces.Box:
    """The (D,) float32 Box of the observations of ``model``'s states in episodes of at most
    ``max_steps`` decisions (layout: :func:`~main_model.observation.observation_layout`, with
    the ``changes`` values when asked: ``MDPConfig.observe_changes``).

    A function of the model and the episode length alone, so that an agent saved beside a main
    model can be read back with this space without building a core over data.
    """
    layout = observation_layout(model, changes)
    size = layout["step_index"].stop
    low = np.zeros(size, dtype=np.float32)
    high = np.full(size, np.inf, dtype=np.float32)
    low[layout["pooled_activations"]] = model.activation_bounds[0]
    high[layout["pooled_activations"]] = model.activation_bounds[1]
    high[layout["class_probabilities"]] = 1.0
    high[layout["residuals"]] = RESIDUAL_CLIP
    high[layout["previous_action"]] = 1.0
    if changes:  # changed (0/1), top probability change in [-1, 1], total variation in [0, 1]
        low[layout["changes"]] = (0.0, -1.0, 0.0)
        high[layout["changes"]] = 1.0
    high[layout["consecutive_count"]] = max_steps
    high[layout["step_index"]] = max_steps
    return spaces.Box(low, high, dtype=np.float32)


@dataclass
class CoreStep:
    """Result of :meth:`DynaLayCore.step` for all N slots (numpy, on the CPU).

    Attributes:
        reward: (N,) float32.
        terminated: (N,) bool, the episode ended with an answer.
        truncated: (N,) bool, cut by ``max_episode_steps`` before an answer.
        episode: per-slot episode summaries (see :meth:`DynaLayCore.episode_info`), valid where
            ``terminated | truncated``.
    """

    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    episode: dict[str, np.ndarray]


class DynaLayCore:
    """N sample slots of the DynaLay MDP over one data split, batched on one device.

    Args:
        model: the main model (put in eval mode and frozen while the core uses it).
        split: the samples episodes are drawn from (moved to ``device``).
        num_slots: N, the number of episodes run side by side.
        mdp: the reward's settings and the episode length (:class:`~dynalay_env.mdp.MDPConfig`).
        max_episode_steps: optional truncation (a Gymnasium time limit) below ``max_steps``.
        sequential: draw samples in order through the split (wrapping around), not at random.
        device: where the model and the images live.
        solver: how loops run: ``fpi`` (DynaLay's per-sample iteration) or TorchDEQ's
            ``anderson``/``broyden`` (for the DEQ baseline).
    """

    def __init__(
        self,
        model: DynaLayNet,
        split: ImageSplit | TextSplit,
        num_slots: int,
        *,
        mdp: MDPConfig = MDPConfig(),
        max_episode_steps: int | None = None,
        sequential: bool = False,
        device: torch.device | str = "cpu",
        solver: str = "fpi",
    ) -> None:
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        if not isinstance(mdp, MDPConfig):
            raise TypeError(f"mdp must be an MDPConfig, got {type(mdp).__name__}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        mismatch = split.model_mismatch(model)
        if mismatch is not None:
            raise ValueError(mismatch)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.split = split.to(self.device)
        self.num_slots = num_slots
        self.mdp = mdp
        self.max_steps = mdp.max_steps
        self.max_episode_steps = max_episode_steps
        self.sequential = sequential
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        self.n_blocks = model.n_blocks
        self.n_actions = model.n_actions
        self.max_step_flops = float(model.max_step_flops())
        self.cursor = 0
        self.changes = mdp.observe_changes
        self.observation_layout = observation_layout(self.model, self.changes)
        self.observation_size = self.observation_layout["step_index"].stop
        self.single_observation_space = self._observation_space()
        self.state: NetState | None = None

    # ----- observation -------------------------------------------------------------------------
    def _observation_space(self) -> spaces.Box:
        return observation_space(self.model, self.max_steps, self.changes)

    def observe(self) -> np.ndarray:
        """(N, D) float32 observations of every slot (a fresh array)."""
        if self.state is None:
            raise RuntimeError("call reset() before observing or stepping the environment")
        features = observation_tensor(
            self.state,
            self.previous_action,
            self.consecutive,
            self.steps,
            self.n_actions,
            self.previous_logits if self.changes else None,
        )
        return features.cpu().numpy()

    # ----- reset -----------------------------------------------------------------------------
    def draw_rows(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Positions in the split of the next ``count`` samples (sequential or random)."""
        if self.sequential:
            rows = (self.cursor + np.arange(count)) % len(self.split)
            self.cursor = int((self.cursor + count) % len(self.split))
            return rows
        return rng.integers(0, len(self.split), size=count)

    def reset_slots(
        self, slots: np.ndarray, rng: np.random.Generator, rows: np.ndarray | None = None
    ) -> None:
        """Start new episodes in ``slots`` (indices), on ``rows`` of the split or drawn ones."""
        self._start_episodes(slots, rng, rows)

    @torch.no_grad()
    def reset_and_observe(
        self, slots: np.ndarray, rng: np.random.Generator, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`reset_slots`, returning the (len(slots), D) first observations of ``slots``.

        They come from the straight pass of just these rows, so a caller that already holds
        the other slots' observations (the vector env's SameStep autoreset) need not observe
        all N slots again.
        """
        state = self._start_episodes(slots, rng, rows)
        if state is None:
            return np.zeros((0, self.observation_size), dtype=np.float32)
        return first_observation(state, self.n_actions, self.changes).cpu().numpy()

    @torch.no_grad()
    def _start_episodes(
        self, slots: np.ndarray, rng: np.random.Generator, rows: np.ndarray | None
    ) -> NetState | None:
        """Reset ``slots``; returns the straight-pass state of their new samples (None if none)."""
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0:
            return None
        if rows is None:
            rows = self.draw_rows(slots.size, rng)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.shape != slots.shape:
            raise ValueError(f"got {rows.size} sample rows for {slots.size} slots to reset")
        if rows.min() < 0 or rows.max() >= len(self.split):
            raise ValueError(f"sample rows must be in [0, {len(self.split) - 1}], got {rows}")
        rows_t = torch.as_tensor(rows, device=self.device)
        slots_t = torch.as_tensor(slots, device=self.device)
        output = self.model.straight(self.split.normalized(rows_t))
        every_slot = np.arange(self.num_slots)
        if self.state is None and not np.array_equal(np.sort(slots), every_slot):
            raise RuntimeError("the first reset must reset every slot")
        if np.array_equal(slots, every_slot):
            # Every slot, in order (the first reset; every step where all episodes end, as
            # with max_steps=1): the new state replaces the old one instead of being copied in.
            if self.state is None:
                self._allocate(output.state)
            else:
                self.state = output.state
        else:
            if self.state is None:
                self._allocate(output.state.clone())
            self.state.put_rows_(slots_t, output.state)
        self.rows[slots_t] = rows_t
        if self.changes:  # nothing has changed yet: the answer before = the answer now
            self.previous_logits[slots_t] = output.state.logits
        self.previous_action[slots_t] = -1
        self.consecutive[slots_t] = 0
        self.steps[slots_t] = 0
        self.total_cost[slots_t] = 0.0
        self.total_flops[slots_t] = output.flops
        self.iterations[slots_t] = 0
        self.action_history[slots_t] = -1
        return output.state

    def _allocate(self, template: NetState) -> None:
        """Per-slot buffers, allocated once on the first reset."""
        n, device = self.num_slots, self.device
        self.state = template
        # The answer's logits before the last decision (the observation's ``changes``).
        self.previous_logits = template.logits.clone() if self.changes else None
        self.rows = torch.zeros(n, dtype=torch.long, device=device)
        self.previous_action = torch.full((n,), -1, dtype=torch.long, device=device)
        self.consecutive = torch.zeros(n, dtype=torch.long, device=device)
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.total_cost = torch.zeros(n, dtype=torch.float64, device=device)
        self.total_flops = torch.zeros(n, dtype=torch.long, device=device)
        self.iterations = torch.zeros(n, self.n_blocks, dtype=torch.long, device=device)
        self.action_history = torch.full((n, self.max_steps), -1, dtype=torch.long, device=device)

    # ----- step ------------------------------------------------------------------------------
    def validate_actions(self, actions) -> np.ndarray:
        """(N,) int64 actions, or a ValueError that says what was wrong."""
        array = np.asarray(actions)
        if array.shape != (self.num_slots,):
            raise ValueError(
                f"expected {self.num_slots} action(s) of shape ({self.num_slots},), "
                f"got shape {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.integer):
            if not (np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))):
                raise ValueError(f"actions must be integers, got {array!r}")
        array = array.astype(np.int64)
        if array.min() < 0 or array.max() >= self.n_actions:
            raise ValueError(
                f"actions must be in [0, {self.n_actions - 1}] (0 = NOP, k = loop blocks 1..k), "
                f"got {array.tolist()}"
            )
        return array

    @torch.no_grad()
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> CoreStep:
        """Apply one decision in every ``active`` slot (all by default); others are untouched."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        actions_t = torch.as_tensor(self.validate_actions(actions), device=self.device)
        active_t = (
            torch.ones(self.num_slots, dtype=torch.bool, device=self.device)
            if active is None
            else torch.as_tensor(np.asarray(active, dtype=bool), device=self.device)
        )
        actions_t = torch.where(active_t, actions_t, torch.zeros_like(actions_t))
        labels = self.split.labels[self.rows]
        # What the shaped reward's potential and the change features need of the state before.
        correct_before = (
            answer_accuracy(self.state.logits, labels) if self.mdp.shaping != "none" else None
        )
        if self.changes:
            self.previous_logits = self.state.logits.clone()
        output = self.model.step(self.state, actions_t, solver=self.solver)
        self.state = output.state

        looped = (actions_t > 0) & active_t
        cost = output.flops.double() / self.max_step_flops
        # Written in every slot (inactive ones get their own entry back): a boolean or
        # nonzero() selection of the active slots would wait for the device to know how many.
        slots = torch.arange(self.num_slots, device=self.device)
        column = self.steps.clamp_max(self.max_steps - 1)
        self.action_history[slots, column] = torch.where(
            active_t, actions_t, self.action_history[slots, column]
        )
        decision = decide(
            self.previous_action, self.consecutive, self.steps, actions_t, active_t, self.max_steps
        )
        count = decision.count
        self.steps = decision.steps
        self.consecutive = decision.consecutive
        self.previous_action = decision.previous_action
        self.total_cost += torch.where(looped, cost, 0.0)
        self.total_flops += output.flops
        self.iterations += output.iterations

        correct = answer_accuracy(self.state.logits, labels)
        terminated = decision.ended
        truncated = torch.zeros_like(terminated)
        if self.max_episode_steps is not None:
            truncated = active_t & ~terminated & (self.steps >= self.max_episode_steps)
        rewards = reward(
            self.mdp,
            looped=looped,
            cost=cost,
            count=count,
            actions=actions_t,
            terminated=terminated,
            correct=correct,
            correct_before=correct_before,
        )
        return CoreStep(
            reward=rewards.float().cpu().numpy(),
            terminated=terminated.cpu().numpy(),
            truncated=truncated.cpu().numpy(),
            episode=self.episode_info(correct),
        )

    def episode_info(self, correct: Tensor | None = None) -> dict[str, np.ndarray]:
        """Per-slot summary of the episode so far, as numpy arrays over the N slots: the keys
        listed under ``## Info keys`` of :class:`~dynalay_env.env.DynaLayEnv`, each (N, ...),
        ``actions`` (N, max_steps) with -1 after the last decision."""
        prediction = self.state.logits.argmax(dim=1)
        label = self.split.labels[self.rows]
        if correct is None:
            correct = answer_accuracy(self.state.logits, label)
        values = {
            "prediction": prediction,
            "label": label,
            "correct": correct,
            "total_cost": self.total_cost,
            "flops": self.total_flops,
            "actions": self.action_history,
            "iterations": self.iterations,
            "episode_steps": self.steps,
            "residuals": self.state.residual,
            "dataset_index": self.split.indices[self.rows],
        }
        if label.dim() > 1:  # a language model: its perplexity too
            nll = torch.nn.functional.cross_entropy(self.state.logits, label, reduction="none")
            values["nll"] = nll.double().mean(dim=1)
            values["perplexity"] = values["nll"].exp()
        # Copies: on the CPU .numpy() shares memory with buffers the next reset overwrites.
        return {key: value.cpu().numpy().copy() for key, value in values.items()}
