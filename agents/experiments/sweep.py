"""``run_rl.py sweep``: one agent per beta on one shared, frozen, pre-trained main model, all
compared with every baseline (the Pareto curve, frequency and accuracy against beta).

    python run_rl.py sweep --betas 0.03 0.1 0.3 1 [training flags]
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.algorithms import load_agent_policy
from agents.config import TrainConfig, load_run_config
from agents.evaluate import PolicyResult, evaluate_all
from agents.files import MODEL_FILE, final_checkpoints
from agents.report import (
    plot_action_frequencies,
    plot_beta_sweep,
    plot_pareto,
    plot_reward_curve,
    reward_curve_from_events,
    write_results,
)
from agents.trainer import AlternatingTrainer
from main_model.distributed import resolve_device

from .evaluation import default_taus, evaluation_core, progress


def beta_sweep(
    base: TrainConfig,
    betas: Sequence[float],
    sweep_dir: Path,
    eval_size: int | None = None,
    taus: Sequence[float] | None = None,
) -> list[PolicyResult]:
    """Train one agent per beta on one shared, frozen, pre-trained main model; compare all.

    The first beta's run pre-trains the main model (or loads ``base.checkpoint``); the others
    start from its checkpoint with no supervised phase, so every agent sees the same model.
    A beta's finished run is reused only when it was made with the same settings; otherwise
    :class:`~agents.config.RunConfigMismatch` is raised before anything is trained or written.
    """
    sweep_dir = Path(sweep_dir)
    run_dirs: dict[float, Path] = {}
    shared_checkpoint = base.checkpoint
    for beta in betas:
        config = dataclasses.replace(
            base, beta=beta, checkpoint=shared_checkpoint, supervised_epochs=0, rounds=1
        )
        run_dir = sweep_dir / f"beta_{beta:g}"
        print(f"sweep: training the agent for beta={beta:g} in {run_dir}", file=sys.stderr)
        AlternatingTrainer(config, run_dir).run()
        run_dirs[beta] = run_dir
        shared_checkpoint = str(final_checkpoints(run_dirs[betas[0]]) / MODEL_FILE)

    resolved = resolve_device(base.device)
    first = run_dirs[betas[0]]
    core, episodes, threshold_loop = evaluation_core(
        load_run_config(first), first, resolved, eval_size
    )
    agents = {
        f"agent beta={beta:g}": load_agent_policy(run_dirs[beta], base.algo, resolved)
        for beta in betas
    }
    taus = default_taus(base.env) if taus is None else taus
    results = evaluate_all(core, agents, episodes, list(taus), threshold_loop, progress=progress)
    agent_results = [r for r in results if r.name.startswith("agent beta=")]
    for result, beta in zip(agent_results, betas, strict=True):
        result.parameter = beta
    extra: dict[str, Any] = {
        "env": base.env,
        "split": "test",
        "episodes": episodes,
        "betas": list(betas),
        "run_dirs": {f"{b:g}": str(d) for b, d in run_dirs.items()},
    }
    write_results(sweep_dir, results, f"DynaLay on {base.env}: beta sweep vs baselines", extra)
    plot_pareto(results, sweep_dir / "pareto.png")
    plot_beta_sweep(list(betas), agent_results, sweep_dir / "beta_sweep.png")
    plot_action_frequencies(agent_results, sweep_dir / "action_frequencies.png")
    curves = {f"beta={b:g}": reward_curve_from_events(d / "tb") for b, d in run_dirs.items()}
    plot_reward_curve(curves, sweep_dir / "reward_curve.png")
    return results
