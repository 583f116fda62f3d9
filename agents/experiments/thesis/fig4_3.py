"""Fig. 4.3: (a) mean episode reward over training per seed; (b) action frequencies and test
accuracy of agents trained on the frozen pre-trained model against beta."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.report import plt, scalars_from_events
from main_model.paths import path_name

from ..common import mean_std
from .pieces import Reproduction, finish, pm, verdict_of, yes

NAME = "fig4.3"


def stabilises(reward: Sequence[float]) -> bool:
    """(a) on one curve: its last quarter varies no more than its first quarter (4+ points)."""
    values = np.asarray(reward)
    quarter = max(len(values) // 4, 1)
    return bool(len(values) >= 4 and values[-quarter:].std() <= values[:quarter].std())


def claims(rewards: Sequence[Sequence[float]], flops: Sequence[float]) -> dict[str, bool]:
    """(a) the reward stabilises on every seed's curve; (b) the mean FLOPs fall (never rise)
    as beta grows (``flops``: one mean per beta, betas ascending)."""
    return {
        "reward stabilises (every seed)": all(stabilises(curve) for curve in rewards),
        "higher beta, fewer FLOPs": all(
            b <= a + 1e-9 for a, b in zip(flops, flops[1:], strict=False)
        ),
    }


def run(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.3: (a) reward over training per seed; (b) frequencies and accuracy vs beta."""
    config = rep.config
    rewards = {}
    for seed in config.seeds:
        run_dir, _ = rep.alternating_run("pretrained", seed)
        steps, values = scalars_from_events(run_dir / "tb", "rollout/ep_rew_mean")
        rewards[seed] = {"steps": steps, "reward": values}
    sweep: dict[str, list[dict[str, Any]]] = {}
    for beta in config.betas:
        sweep[f"{beta:g}"] = [rep.frozen_agent(seed, beta) for seed in config.seeds]
    n_actions = len(config.widths) + 1
    names = [path_name(a) for a in range(n_actions)]
    frequencies = np.array(
        [np.mean([s["action_frequencies"] for s in runs], axis=0) for runs in sweep.values()]
    )
    accuracy = [mean_std([s["accuracy"] for s in runs], count=True) for runs in sweep.values()]
    flops = [mean_std([s["relative_flops"] for s in runs], count=True) for runs in sweep.values()]
    held = claims([curve["reward"] for curve in rewards.values()], [f["mean"] for f in flops])
    stable, deters = held.values()
    payload = {
        "reward_curves": rewards,
        "betas": list(config.betas),
        "frequencies": frequencies.tolist(),
        "accuracy": accuracy,
        "relative_flops": flops,
        "agents": sweep,
        "claims": held,
    }
    md = [
        "## Fig. 4.3: reward over training; frequencies and accuracy against beta",
        "",
        "Thesis: (a) the mean reward stabilises as training goes on, for every seed; (b) a "
        "higher penalty beta steers the agent away from the costly layers, with the validation "
        "accuracy shown alongside.",
        "",
        f"Measured: (a) `rollout/ep_rew_mean` of the alternating runs (beta {config.beta:g}), one "
        f"curve per seed; (b) one PPO agent per beta and seed on the frozen pre-trained model "
        f"({config.total_timesteps} env steps), on the test split:",
        "",
        "| beta | " + " | ".join(names) + " | test accuracy (%) | FLOPs (x plain CNN) |",
        "|---|" + "---|" * (n_actions + 2),
        *(
            f"| {beta:g} | "
            + " | ".join(f"{100 * share:.1f}%" for share in frequencies[i])
            + f" | {pm(accuracy[i])} | {pm(flops[i], 1.0)} |"
            for i, beta in enumerate(config.betas)
        ),
        "",
        f"Verdict: **{verdict_of(held)}**. (a) reward stabilises (last quarter of the curve "
        f"steadier than the first) on every seed: {yes(stable)}; (b) FLOPs fall as beta grows: "
        f"{yes(deters)}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for seed, curve in rewards.items():
        left.plot(curve["steps"], curve["reward"], label=f"seed {seed}")
    left.set_xlabel("env steps")
    left.set_ylabel("mean episode reward")
    left.set_title("(a) reward over training")
    left.legend()
    for action, name in enumerate(names):
        right.plot(config.betas, 100 * frequencies[:, action], "o-", label=name)
    right.set_xscale("log")
    right.set_xlabel("beta")
    right.set_ylabel("share of decisions (%)")
    twin = right.twinx()
    twin.plot(config.betas, [100 * a["mean"] for a in accuracy], "k--", label="test accuracy")
    twin.set_ylabel("test accuracy (%)")
    right.legend(loc="center left")
    right.set_title("(b) frequencies and accuracy vs beta")
    return finish(rep, NAME, payload, md, fig)
