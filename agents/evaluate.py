"""Evaluate policies on a data split in order, batched: the agent against every baseline.

Baselines: static paths (always NOP = the plain CNN, always loop-k), the DEQ baseline (loop all
blocks with TorchDEQ's Anderson solver), a uniformly random policy, the confidence-threshold
early-exit policy (loop when the max class probability is below tau) over a sweep of tau, for
``max_steps > 1`` the confidence cascade (loop again while it is below tau), and the oracle
(per sample, the cheapest path that is correct: an upper bound nobody can deploy).

Every policy runs on a fresh sequential core over the same split, so all of them see the same
samples in the same order; the computation is grouped by action (real savings, not masking),
and the wall time per sample is measured around the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dynalay_env.build import sequential_core
from dynalay_env.core import DynaLayCore
from main_model.network import FPINetwork
from main_model.observation import first_observation
from main_model.paths import path_statistics, per_sample
from main_model.train import iterate_batches

#: Maps (B, D) observations to (B,) actions.
Policy = Callable[[np.ndarray], np.ndarray]


@dataclass
class PolicyResult:
    """Outcome of a policy on ``episodes`` samples.

    Attributes:
        name: e.g. ``agent``, ``static loop-2``, ``threshold tau=0.9``.
        accuracy: share of correct answers (a language model's: the mean over episodes of the
            share of positions whose next token is right, so of all tokens: windows are equal).
        mean_cost: mean of the summed normalised step costs per episode.
        relative_flops: mean FLOPs per sample / FLOPs of the plain CNN (1.0 = always NOP).
        action_frequencies: share of decisions that chose each action.
        mean_reward: mean episode return.
        mean_steps: mean decisions per episode (1 for one-shot episodes).
        ms_per_sample: wall time per sample in milliseconds (None for the oracle).
        perplexity: a language model's, exp of the mean next-token negative log-likelihood over
            every token of the episodes (None for classifiers; then not written to JSON).
        records: per-episode arrays (``dataset_index``, ``correct``, ``cost``, ``flops``,
            ``first_action``, and ``nll`` for a language model), in episode order; not written
            to JSON.
    """

    name: str
    episodes: int
    accuracy: float
    mean_cost: float
    relative_flops: float
    action_frequencies: list[float]
    mean_reward: float
    mean_steps: float = 1.0
    ms_per_sample: float | None = None
    parameter: float | None = None
    perplexity: float | None = None
    records: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("records")
        if values["perplexity"] is None:  # classifiers: their JSON as before
            values.pop("perplexity")
        return values


def run_policy(
    core: DynaLayCore, policy: Policy, episodes: int, name: str = "policy"
) -> PolicyResult:
    """Play ``episodes`` episodes on ``core`` (a sequential core walks its split in order).

    Slots are refilled in waves: all N slots start, every slot plays its episode to the end,
    then the next wave starts; the last wave only counts the slots it needs.
    """
    rng = np.random.default_rng(0)
    columns: dict[str, list] = {k: [] for k in ("dataset_index", "correct", "cost", "flops")}
    columns.update(first_action=[], reward=[], steps=[])
    actions: list[int] = []
    remaining = episodes
    started = time.perf_counter()
    while remaining > 0:
        core.reset_slots(np.arange(core.num_slots), rng)
        wave = min(remaining, core.num_slots)
        running = np.ones(core.num_slots, dtype=bool)
        returns = np.zeros(core.num_slots)
        while running.any():
            result = core.step(policy(core.observe()), active=running)
            returns += np.where(running, result.reward, 0.0)
            finished = running & (result.terminated | result.truncated)
            episode = result.episode
            for slot in np.flatnonzero(finished[:wave]):
                chosen = episode["actions"][slot]
                chosen = chosen[chosen >= 0]
                columns["dataset_index"].append(int(episode["dataset_index"][slot]))
                # bool for classifiers, the share of right tokens for a language model
                columns["correct"].append(episode["correct"][slot].item())
                if "nll" in episode:
                    columns.setdefault("nll", []).append(float(episode["nll"][slot]))
                columns["cost"].append(float(episode["total_cost"][slot]))
                columns["flops"].append(float(episode["flops"][slot]))
                columns["first_action"].append(int(chosen[0]))
                columns["reward"].append(float(returns[slot]))
                columns["steps"].append(len(chosen))
                actions.extend(chosen.tolist())
            running &= ~finished
        remaining -= wave
    elapsed = time.perf_counter() - started
    records = {key: np.asarray(value) for key, value in columns.items()}
    counts = np.bincount(np.asarray(actions, dtype=np.int64), minlength=core.n_actions)
    return PolicyResult(
        name=name,
        episodes=len(records["correct"]),
        accuracy=float(records["correct"].mean()),
        mean_cost=float(records["cost"].mean()),
        relative_flops=float(records["flops"].mean()) / float(core.model.straight_flops()),
        action_frequencies=(counts / max(counts.sum(), 1)).tolist(),
        mean_reward=float(records["reward"].mean()),
        mean_steps=float(records["steps"].mean()),
        ms_per_sample=1000.0 * elapsed / max(len(records["correct"]), 1),
        perplexity=float(np.exp(records["nll"].mean())) if "nll" in records else None,
        records=records,
    )


# ----- baseline policies ------------------------------------------------------------------------
def static_policy(action: int) -> Policy:
    """Always the same action (0 = the plain CNN, k = always loop blocks 1..k)."""
    return lambda observations: np.full(len(observations), action, dtype=np.int64)


def random_policy(n_actions: int, seed: int = 0) -> Policy:
    """Uniformly random actions."""
    rng = np.random.default_rng(seed)
    return lambda observations: rng.integers(0, n_actions, size=len(observations))


def threshold_policy(layout: dict[str, slice], tau: float, loop_action: int) -> Policy:
    """Early exit: answer when the max class probability is >= tau, else loop once, then answer.

    ``loop_action`` is the loop the uncertain samples take (the most accurate static path).
    """
    probabilities, step_index = layout["class_probabilities"], layout["step_index"]

    def choose(observations: np.ndarray) -> np.ndarray:
        confident = observations[:, probabilities].max(axis=1) >= tau
        already_looped = observations[:, step_index][:, 0] >= 1
        return np.where(confident | already_looped, 0, loop_action).astype(np.int64)

    return choose


def cascade_policy(layout: dict[str, slice], tau: float, loop_action: int) -> Policy:
    """Per-step confidence cascade: loop again while the max class probability is below tau.

    Every decision looks at the current answer (up to ``max_steps`` of them; the env forces the
    answer at the last): the rival of an agent that introspects between loops. With
    ``max_steps=1`` it is :func:`threshold_policy`.
    """
    probabilities = layout["class_probabilities"]

    def choose(observations: np.ndarray) -> np.ndarray:
        confident = observations[:, probabilities].max(axis=1) >= tau
        return np.where(confident, 0, loop_action).astype(np.int64)

    return choose


def oracle_result(static_results: list[PolicyResult]) -> PolicyResult:
    """Per sample the cheapest static path that is correct (NOP where none is; for a language
    model's windows, the cheapest of the most accurate paths): an upper bound.

    ``static_results[k]`` must be always-k, evaluated on the same samples in the same order.
    """
    reference = static_results[0].records["dataset_index"]
    for result in static_results:
        if not np.array_equal(result.records["dataset_index"], reference):
            raise ValueError("static results must cover the same samples in the same order")
    correct = np.stack([r.records["correct"] for r in static_results])  # (paths, N)
    cost = np.stack([r.records["cost"] for r in static_results])
    flops = np.stack([r.records["flops"] for r in static_results])
    # The most accurate path, the cheapest among equals (bool: the cheapest correct one, else NOP,
    # the cheapest of all; a language model's share of right tokens: its best path).
    masked_cost = np.where(correct == correct.max(axis=0), cost, np.inf)
    chosen = masked_cost.argmin(axis=0)
    columns = np.arange(correct.shape[1])
    straight_flops = static_results[0].records["flops"].mean() / static_results[0].relative_flops
    n_actions = len(static_results)
    reward = np.stack([r.records["reward"] for r in static_results])
    chosen_correct = correct[chosen, columns]
    return PolicyResult(
        name="oracle",
        episodes=correct.shape[1],
        accuracy=float(chosen_correct.mean()),
        mean_cost=float(cost[chosen, columns].mean()),
        relative_flops=float(flops[chosen, columns].mean() / straight_flops),
        action_frequencies=(np.bincount(chosen, minlength=n_actions) / len(chosen)).tolist(),
        mean_reward=float(reward[chosen, columns].mean()),
        ms_per_sample=None,
        records={"dataset_index": reference, "correct": chosen_correct, "first_action": chosen},
    )


def fresh_core(base: DynaLayCore, solver: str = "fpi") -> DynaLayCore:
    """A fresh sequential core like ``base`` (model, split, slots, MDP), with ``solver``."""
    core, _ = sequential_core(
        base.model,
        base.split,
        mdp=base.mdp,
        device=base.device,
        max_slots=base.num_slots,
        solver=solver,
    )
    return core


def best_loop_on(model, split, batch_size: int = 500) -> int:
    """The most accurate static loop path (1..n) of ``model`` on ``split`` (use the holdout)."""
    loops = range(1, model.n_actions)
    stats = path_statistics(model, iterate_batches(split, batch_size), actions=loops)
    return max(loops, key=lambda action: stats[action]["accuracy"])


def evaluate_all(
    base: DynaLayCore,
    agent_policies: dict[str, Policy],
    episodes: int,
    taus: list[float],
    threshold_loop: int,
    deq_solver: str | None = "anderson",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[PolicyResult]:
    """Evaluate the agent(s) and every baseline on ``episodes`` samples of ``base``'s split.

    ``threshold_loop``: the loop the threshold policy's uncertain samples take, chosen on the
    holdout (:func:`best_loop_on`), never on the split evaluated here. ``deq_solver``: also
    run loop-all with that TorchDEQ solver on this model (``None``: skip).
    """
    say = progress or (lambda _: None)
    results: list[PolicyResult] = []

    def run(name: str, policy: Policy, solver: str = "fpi", parameter: float | None = None):
        say(name)
        result = run_policy(fresh_core(base, solver), policy, episodes, name)
        result.parameter = parameter
        results.append(result)
        return result

    n_actions = base.n_actions
    # One untimed wave first: the first policy's ms/sample would otherwise also pay the
    # process's one-off costs (allocator, thread pools, lazy initialisation).
    run_policy(fresh_core(base), static_policy(n_actions - 1), min(episodes, base.num_slots))
    statics = [
        run("static NOP (plain CNN)" if k == 0 else f"static loop-{k}", static_policy(k))
        for k in range(n_actions)
    ]
    if deq_solver is not None:
        run(f"loop-all with {deq_solver}", static_policy(n_actions - 1), solver=deq_solver)
    run("random", random_policy(n_actions, seed))
    for tau in taus:
        policy = threshold_policy(base.observation_layout, tau, threshold_loop)
        run(f"threshold tau={tau:g} (loop-{threshold_loop})", policy, parameter=tau)
    if base.max_steps > 1:  # with one decision the cascade is the threshold rule
        for tau in taus:
            policy = cascade_policy(base.observation_layout, tau, threshold_loop)
            run(f"cascade tau={tau:g} (loop-{threshold_loop})", policy, parameter=tau)
    results.append(oracle_result(statics))
    for name, policy in agent_policies.items():
        run(name, policy)
    return results


@torch.no_grad()
def first_decision_metrics(
    model: FPINetwork,
    policy: Policy,
    split,
    size: int,
    batch_size: int = 500,
    changes: bool = False,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``policy``'s first decision on the first ``size``
    samples of ``split`` (``model`` left in eval mode): the straight pass, the observation the
    env shows, one action per sample, its answer. Per sample: right or wrong, or a language
    model's share of positions right (and its mean token loss), as the env's reward and the
    training statistics count them. ``changes``: the observation has the change values
    (``MDPConfig.observe_changes``), all 0 at a first decision."""
    model.eval()
    correct, loss, seen = 0.0, 0.0, 0
    for images, labels in iterate_batches(split, batch_size):
        images, labels = images[: size - seen], labels[: size - seen]
        straight = model.straight(images)
        observations = first_observation(straight.state, model.n_actions, changes)
        observations = observations.cpu().numpy()
        actions = torch.as_tensor(policy(observations), device=images.device).long()
        logits = model.step(straight.state, actions).state.logits
        correct += float(per_sample(logits.argmax(dim=1) == labels).sum())
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        loss += float(per_sample(losses).sum())
        seen += len(labels)
        if seen >= size:
            break
    return {"accuracy": correct / max(seen, 1), "loss": loss / max(seen, 1)}
