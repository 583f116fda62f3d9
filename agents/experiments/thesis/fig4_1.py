"""Fig. 4.1: the agent's action frequencies over training, from the TensorBoard events of the
alternating runs (one per seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agents.report import plt, scalars_from_events
from main_model.paths import path_name

from ..common import sample_std
from .pieces import Reproduction, finish, verdict_of, yes

NAME = "fig4.1"


def frequency_curves(tb_dir: Path, n_actions: int) -> tuple[list[int], np.ndarray]:
    """(steps, (n_actions, steps) shares) of ``dynalay/action_freq_<a>`` in a run's events."""
    steps, _ = scalars_from_events(tb_dir, "dynalay/action_freq_0")
    curves = np.array(
        [scalars_from_events(tb_dir, f"dynalay/action_freq_{a}")[1] for a in range(n_actions)]
    )
    return steps, curves.reshape(n_actions, len(steps))


def claims(mean: np.ndarray) -> dict[str, bool]:
    """The thesis's three claims on the mean share of each action (NOP first)."""
    n_actions = len(mean)
    return {
        "NOP most frequent": int(np.argmax(mean)) == 0,
        "loop-3 rarest loop": n_actions < 4 or mean[3] < min(mean[1], mean[2]),
        "loop-1 ~25% and loop-2 ~20% (within 10 points)": n_actions < 3
        or (abs(mean[1] - 0.25) <= 0.1 and abs(mean[2] - 0.20) <= 0.1),
    }


def run(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.1: how often each action was chosen while the agents trained."""
    n_actions = len(rep.config.widths) + 1
    per_seed = {}
    for seed in rep.config.seeds:
        run_dir, summary = rep.alternating_run("pretrained", seed)
        steps, curves = frequency_curves(run_dir / "tb", n_actions)
        per_seed[seed] = {
            "steps": steps,
            "frequencies": curves.tolist(),
            "final_agent_on_test": summary["action_frequencies"],
        }
    overall = np.array([np.mean(s["frequencies"], axis=1) for s in per_seed.values()])
    mean, std = overall.mean(axis=0), sample_std(overall, axis=0)
    # PPO samples its actions while it learns (near-uniformly at first); the trained agent acts
    # greedily. Both are reported; the verdict follows the thesis's caption ("during training").
    final = np.array([s["final_agent_on_test"] for s in per_seed.values()])
    names = [path_name(a) for a in range(n_actions)]
    held = claims(mean)
    nop_most, loop3_rare, near = held.values()

    def shares(means: np.ndarray, stds: np.ndarray) -> str:
        pairs = zip(names, means, stds, strict=True)
        return ", ".join(f"{n} {100 * m:.1f} ± {100 * s:.1f}%" for n, m, s in pairs)

    payload = {
        "per_seed": per_seed,
        "mean_frequency": dict(zip(names, mean.tolist(), strict=True)),
        "std_frequency": dict(zip(names, std.tolist(), strict=True)),
        "final_agent_frequency": dict(zip(names, final.mean(axis=0).tolist(), strict=True)),
        "claims": held,
    }
    md = [
        "## Fig. 4.1: action frequencies during training",
        "",
        "Thesis (CIFAR-10): NOP is chosen most often, loop-1 about 25% and loop-2 about 20% of "
        "the time, loop-3 rarely.",
        "",
        f"Measured: share of the agent's decisions during all RL phases of the alternating runs "
        f"(beta {rep.config.beta:g}; PPO samples its actions while it learns), mean ± std over "
        f"seeds {list(rep.config.seeds)}: {shares(mean, std)}. The trained agents themselves "
        f"(greedy, on the test split): {shares(final.mean(axis=0), sample_std(final, axis=0))}.",
        "",
        f"Verdict: **{verdict_of(held)}** (on the frequencies during training, as the "
        f"thesis's caption says). NOP most frequent: {yes(nop_most)}; "
        f"loop-3 rarest loop: {yes(loop3_rare)}; loop-1/loop-2 near 25%/20%: {yes(near)}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    positions = np.arange(n_actions)
    left.bar(positions - 0.2, 100 * mean, 0.4, yerr=100 * std, label="during training")
    left.bar(positions + 0.2, 100 * final.mean(axis=0), 0.4, label="trained agent, test")
    left.set_xticks(positions, names)
    left.set_ylabel("share of decisions (%)")
    left.set_title("mean over seeds")
    left.legend()
    first = per_seed[rep.config.seeds[0]]
    for action, name in enumerate(names):
        right.plot(first["steps"], 100 * np.asarray(first["frequencies"][action]), label=name)
    right.set_xlabel("env steps")
    right.set_ylabel("share of decisions (%)")
    right.set_title(f"per rollout, seed {rep.config.seeds[0]}")
    right.legend()
    return finish(rep, NAME, payload, md, fig)
