"""The full-information router: what a policy could learn from the agent's observation.

On the holdout every static path's outcome is known (as the oracle knows it on test), so the
choice of a path is supervised learning, not RL (Bolukbasi et al. 2017's exit policy as
cost-sensitive classification): a small MLP reads the observation the env gives after the
straight pass (:func:`~main_model.observation.first_observation`) and predicts, per action a,
the probability p(a) that path a answers right. It acts by

    argmax_a  alpha * p(a) - beta * cost(a)

with ``cost(a)`` the env's normalised cost of the step (its mean FLOPs over the holdout /
``max_step_flops``; 0 for NOP), and ``beta`` swept (:data:`ROUTER_BETAS`). Nothing it reports
was fitted on the images it is scored on: on test it was fitted on the holdout, and its
holdout numbers are cross-fitted (:data:`CROSS_FIT_FOLDS` folds, each scored by a router fitted
on the others).

The router *is* a :class:`~main_model.adaptive.PolicyNetwork` (rule ``argmax``): the MLP, a
``Sigmoid`` giving p(a), and a last ``Linear`` (A -> A) with weight ``alpha * I`` and bias
``-beta * cost``, so its scores are exactly the expression above, and it exports to the same
classifier file as an agent (:func:`router_classifier`, one decision per image). Deterministic:
seeded initialisation, full-batch Adam, a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agents.evaluate import Policy, PolicyResult, fresh_core, run_policy
from dynalay_env.core import DynaLayCore
from main_model.adaptive import AdaptiveClassifier, ObservationNormalizer, PolicyNetwork
from main_model.checkpoint import CheckpointError, read_payload
from main_model.io import atomic_save
from main_model.network import FPINetwork
from main_model.observation import first_observation, observation_layout
from main_model.paths import per_sample
from main_model.train import iterate_batches

#: The cost weights the router's rows sweep (alpha is the MDP's). Loops change the answer of
#: about 2% of the images, so the useful betas are small: beta * cost(a) must stay below
#: alpha times a gain in p(a) of a few points.
ROUTER_BETAS = (0.0, 0.003, 0.01, 0.03, 0.1)
#: Folds of the holdout's cross-fitting.
CROSS_FIT_FOLDS = 5
#: Hidden widths of the router's MLP (the agents' default policy net: 64 x 64).
HIDDEN = (64, 64)
#: Full-batch Adam steps, learning rate and weight decay of every fit.
STEPS, LEARNING_RATE, WEIGHT_DECAY = 300, 1e-2, 1e-4
#: The observation's standardisation clips at this many standard deviations (as VecNormalize).
CLIP = 10.0


def router_name(beta: float) -> str:
    """The router's display name (``report.policy_kind`` knows it by its ``router `` prefix)."""
    return f"router beta={beta:g}"


@dataclass
class PathOutcomes:
    """Every static path's outcome on N samples, in the split's order.

    Attributes:
        observations: (N, D) float32, the observation after the straight pass.
        correct: (N, A) float64, right (1) or wrong (0) per path (a language model's share of
            right positions).
        flops: (N, A) float64, FLOPs per sample of each path, the straight pass included.
        step_flops: (N, A) float64, FLOPs of the path's step alone (0 for NOP).
    """

    observations: Tensor
    correct: Tensor
    flops: Tensor
    step_flops: Tensor


@torch.no_grad()
def path_outcomes(
    model: FPINetwork,
    split,
    actions: Sequence[int] | None = None,
    solver: str = "fpi",
    batch_size: int = 500,
) -> PathOutcomes:
    """Per sample, every path's outcome (``actions``: only these columns; the others 0), on
    the CPU. Batched per path, as :func:`main_model.paths.path_statistics` runs them."""
    model.eval()
    paths = list(range(model.n_actions)) if actions is None else list(actions)
    observations, correct, flops, step_flops = [], [], [], []
    for images, labels in iterate_batches(split, batch_size):
        straight = model.straight(images)
        observations.append(first_observation(straight.state, model.n_actions).cpu())
        batch = images.shape[0]
        hits = torch.zeros(batch, model.n_actions, dtype=torch.float64)
        total = torch.zeros(batch, model.n_actions, dtype=torch.float64)
        step = torch.zeros(batch, model.n_actions, dtype=torch.float64)
        for action in paths:
            output = straight
            if action > 0:
                chosen = torch.full((batch,), action, device=images.device)
                output = model.step(straight.state, chosen, solver)
                step[:, action] = output.flops.double().cpu()
            right = per_sample(output.state.logits.argmax(dim=1) == labels)
            hits[:, action] = right.double().cpu()
            total[:, action] = straight.flops.double().cpu() + step[:, action]
        correct.append(hits)
        flops.append(total)
        step_flops.append(step)
    return PathOutcomes(
        torch.cat(observations), torch.cat(correct), torch.cat(flops), torch.cat(step_flops)
    )


@dataclass
class RouterFit:
    """A fitted router: the observation's standardisation and the MLP to logits of p(a)."""

    normalizer: ObservationNormalizer
    layers: list[list[Any]]  # the MLP's PolicyNetwork layer specs, ending in Linear(., A)
    state_dict: dict[str, Tensor]

    def probabilities(self, observations: Tensor) -> Tensor:
        """(N, D) float32 observations -> (N, A) predicted p(correct) per path."""
        mlp = PolicyNetwork(self.layers, "argmax")
        mlp.load_state_dict(self.state_dict)
        with torch.no_grad():
            return torch.sigmoid(mlp(self.normalizer(observations.cpu())))

    def payload(self) -> dict[str, Any]:
        """Plain values and CPU tensors (loads with ``torch.load(weights_only=True)``)."""
        return {
            "normalization": self.normalizer.stats(),
            "layers": self.layers,
            "state_dict": self.state_dict,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RouterFit:
        return cls(
            ObservationNormalizer(**payload["normalization"]),
            [list(spec) for spec in payload["layers"]],
            dict(payload["state_dict"]),
        )


@dataclass
class SavedRouter:
    """A router as ``run_rl.py table`` keeps it beside its main model (``router.pt``): the fit
    on the whole holdout, each path's normalised cost (A,) and the MDP's alpha. Plain tensors:
    read with ``weights_only``, no code from the file runs."""

    fit: RouterFit
    cost: Tensor
    alpha: float

    def save(self, path: str | Path) -> Path:
        payload = {**self.fit.payload(), "cost": self.cost, "alpha": self.alpha}
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> SavedRouter:
        """Raises :class:`~main_model.CheckpointError` naming ``path`` when it is not one."""
        payload = read_payload(
            path, "a saved DynaLay router", "it is written by 'run_rl.py table' (router.pt)"
        )
        keys = ("normalization", "layers", "state_dict", "cost", "alpha")
        if not isinstance(payload, dict) or any(key not in payload for key in keys):
            raise CheckpointError(
                f"{path} is not a saved DynaLay router (it lacks {', '.join(keys)}); it is "
                "written by 'run_rl.py table' (router.pt)"
            )
        cost = torch.as_tensor(payload["cost"], dtype=torch.float64)
        return cls(RouterFit.from_payload(payload), cost, float(payload["alpha"]))

    def network(self, beta: float) -> PolicyNetwork:
        """The router at cost weight ``beta`` (:func:`router_network`)."""
        return router_network(self.fit, self.alpha, beta, self.cost)


def fit_router(observations: Tensor, correct: Tensor, seed: int) -> RouterFit:
    """Fit p(correct | observation) per path: (N, D) observations, (N, A) outcomes in [0, 1].

    Binary cross-entropy per path on a shared MLP, full batch, :data:`STEPS` Adam steps; the
    initialisation is seeded without touching the global RNG.
    """
    observations = observations.cpu().float()
    targets = correct.cpu().float()
    mean = observations.double().mean(0)
    var = observations.double().var(0, unbiased=False)
    normalizer = ObservationNormalizer(mean, var, clip=CLIP, epsilon=1e-8)
    inputs = normalizer(observations)
    sizes = [inputs.shape[1], *HIDDEN, targets.shape[1]]
    layers: list[list[Any]] = []
    for i, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(["Linear", width_in, width_out, True])
        if i < len(sizes) - 2:
            layers.append(["ReLU"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = PolicyNetwork(layers, "argmax")
    optimizer = torch.optim.Adam(mlp.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_of = nn.BCEWithLogitsLoss()
    with torch.enable_grad():
        for _ in range(STEPS):
            optimizer.zero_grad()
            loss = loss_of(mlp(inputs), targets)
            loss.backward()
            optimizer.step()
    state = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    return RouterFit(normalizer, layers, state)


def path_costs(outcomes: PathOutcomes, max_step_flops: float) -> Tensor:
    """(A,) the env's normalised cost of each path's step, its mean over ``outcomes``."""
    return outcomes.step_flops.mean(0) / float(max_step_flops)


def router_network(fit: RouterFit, alpha: float, beta: float, cost: Tensor) -> PolicyNetwork:
    """The router as a PolicyNetwork whose scores are ``alpha * p(a) - beta * cost(a)``."""
    n_actions = int(cost.numel())
    layers = [*fit.layers, ["Sigmoid"], ["Linear", n_actions, n_actions, True]]
    network = PolicyNetwork(layers, "argmax")
    state = dict(fit.state_dict)  # the MLP's layers keep their indices
    last = len(layers) - 1
    state[f"net.{last}.weight"] = alpha * torch.eye(n_actions)
    state[f"net.{last}.bias"] = (-beta * cost).float()
    network.load_state_dict(state)
    return network.eval().requires_grad_(False)


def router_scores(network: PolicyNetwork, normalizer: ObservationNormalizer, obs) -> Tensor:
    """(N, A) the router's stated scores ``alpha * p(a) - beta * cost(a)`` of (N, D) obs."""
    with torch.no_grad():
        return network(normalizer(torch.as_tensor(obs, dtype=torch.float32)))


def router_policy(
    network: PolicyNetwork, normalizer: ObservationNormalizer, model: FPINetwork
) -> Policy:
    """The router as an env policy: its argmax at the first decision, NOP after a loop (its
    path is one decision, as the exported classifier's ``max_steps=1`` answers)."""
    step_index = observation_layout(model)["step_index"]

    def choose(observations: np.ndarray) -> np.ndarray:
        if observations.shape[1] != network.in_features:
            raise ValueError(
                f"the router reads the default observation ({network.in_features} values), "
                f"this env gives {observations.shape[1]}: evaluate it without observe_changes"
            )
        actions = router_scores(network, normalizer, observations).argmax(dim=1).numpy()
        return np.where(observations[:, step_index][:, 0] >= 1, 0, actions).astype(np.int64)

    return choose


def router_classifier(
    model: FPINetwork,
    fit: RouterFit,
    alpha: float,
    beta: float,
    cost: Tensor,
    **classifier_options: Any,
) -> AdaptiveClassifier:
    """The main model and the router as one deployable classifier (one decision per image;
    ``classifier_options``: pixel_mean, pixel_std, class_names, metadata)."""
    extra = classifier_options.pop("metadata", None) or {}
    metadata = {"algo": "router", "alpha": alpha, "beta": beta, **extra}
    return AdaptiveClassifier(
        model,
        router_network(fit, alpha, beta, cost),
        max_steps=1,
        normalizer=ObservationNormalizer(**fit.normalizer.stats()),
        metadata=metadata,
        **classifier_options,
    )


def cross_fitted_choices(
    outcomes: PathOutcomes, cost: Tensor, alpha: float, betas: Sequence[float], seed: int
) -> dict[float, Tensor]:
    """Per beta, (N,) the path each holdout sample gets from a router fitted on the other
    folds (:data:`CROSS_FIT_FOLDS`, a seeded permutation)."""
    count = outcomes.correct.shape[0]
    folds = min(CROSS_FIT_FOLDS, count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    probabilities = torch.zeros_like(outcomes.correct, dtype=torch.float32)
    for fold in range(folds):
        held = order[fold::folds]
        kept = torch.ones(count, dtype=torch.bool)
        kept[held] = False
        fit = fit_router(outcomes.observations[kept], outcomes.correct[kept], seed + fold)
        probabilities[held] = fit.probabilities(outcomes.observations[held])
    return {beta: (alpha * probabilities - beta * cost.float()).argmax(dim=1) for beta in betas}


def choice_summary(outcomes: PathOutcomes, chosen: Tensor) -> dict[str, Any]:
    """Accuracy, FLOPs (x NOP) and action shares of per-sample ``chosen`` paths."""
    rows = torch.arange(len(chosen))
    n_actions = outcomes.correct.shape[1]
    return {
        "accuracy": float(outcomes.correct[rows, chosen].mean()),
        "relative_flops": float(outcomes.flops[rows, chosen].mean() / outcomes.flops[:, 0].mean()),
        "action_frequencies": (torch.bincount(chosen, minlength=n_actions) / len(chosen)).tolist(),
    }


def router_results(
    model: FPINetwork,
    holdout,
    base: DynaLayCore,
    episodes: int,
    alpha: float,
    betas: Sequence[float] = ROUTER_BETAS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[PolicyResult], dict[str, Any], RouterFit]:
    """Fit the router on ``holdout`` and evaluate one row per beta on ``base``'s split.

    Returns the test rows (``parameter`` = beta, per-image ``records``), the holdout's
    cross-fitted numbers (JSON: per beta, and the holdout's oracle and NOP for scale) and the
    fit on the whole holdout (for :func:`router_classifier`).
    """
    say = progress or (lambda _: None)
    say("router: every path on the holdout")
    outcomes = path_outcomes(model, holdout)
    cost = path_costs(outcomes, model.max_step_flops())
    say("router: cross-fitting on the holdout")
    choices = cross_fitted_choices(outcomes, cost, alpha, betas, seed)
    best = outcomes.correct.max(dim=1).values
    masked = torch.where(outcomes.correct == best[:, None], outcomes.flops, torch.inf)
    holdout_summary = {
        "folds": min(CROSS_FIT_FOLDS, outcomes.correct.shape[0]),
        "cost": cost.tolist(),
        "alpha": alpha,
        "rows": {router_name(b): choice_summary(outcomes, c) for b, c in choices.items()},
        "oracle": choice_summary(outcomes, masked.argmin(dim=1)),
        "NOP": choice_summary(outcomes, torch.zeros(len(best), dtype=torch.long)),
    }
    fit = fit_router(outcomes.observations, outcomes.correct, seed)
    results = []
    for beta in betas:
        name = router_name(beta)
        say(name)
        policy = router_policy(router_network(fit, alpha, beta, cost), fit.normalizer, model)
        result = run_policy(fresh_core(base), policy, episodes, name)
        result.parameter = beta
        results.append(result)
    return results, holdout_summary, fit
