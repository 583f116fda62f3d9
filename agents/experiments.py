"""Evaluation of a finished run and the beta sweep, with their tables and plots.

python run_rl.py eval RUN_DIR                 # agent vs baselines on the test split
python run_rl.py sweep --betas 0.03 0.1 0.3 1 [training flags]   # Pareto over beta
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.vec_env import VecNormalize

from agents.config import TrainConfig, load_run_config
from agents.evaluate import PolicyResult, best_loop_on, evaluate_all, sequential_core
from agents.files import AGENT_FILE, MODEL_FILE, NORMALIZE_FILE, RunDirectory
from agents.report import (
    plot_action_frequencies,
    plot_beta_sweep,
    plot_pareto,
    plot_reward_curve,
    reward_curve_from_events,
    write_results,
)
from agents.trainer import ALGORITHMS, AlternatingTrainer, dataset_of
from dynalay_env import TEXT_ENV_IDS
from dynalay_env.data import load_splits
from dynalay_env.models import resolve_device
from main_model import load_main_model

DEFAULT_TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
#: A language model's top next-token probability is rarely above 0.5: its thresholds sit lower.
TEXT_TAUS = (0.05, 0.1, 0.15, 0.2, 0.3)


def default_taus(env_id: str) -> tuple[float, ...]:
    """The confidence thresholds the threshold baseline sweeps on ``env_id`` by default: the
    language model's (:data:`TEXT_TAUS`) on WikiText-2, else the classifiers' (IMDB's two
    classes included, whose top probability is never below 0.5)."""
    return TEXT_TAUS if env_id == TEXT_ENV_IDS["WikiText2"] else DEFAULT_TAUS


def final_checkpoints(run_dir: Path) -> Path:
    """The folder with the run's final main model and agent (its last complete phase's)."""
    return RunDirectory(run_dir).final_folder(load_run_config(run_dir).phases())


def _say(message: str) -> None:
    print(f"  evaluating {message}", file=sys.stderr)


def _test_core(config: TrainConfig, run_dir: Path, device, eval_size: int | None):
    """The run's main model over the test split, and its best loop path on the holdout."""
    model, _ = load_main_model(final_checkpoints(run_dir) / MODEL_FILE, device)
    splits = load_splits(
        dataset_of(config.env),
        config.data_dir,
        config.holdout_size,
        config.data_seed,
        config.download,
    )
    core, episodes = sequential_core(
        model,
        splits["test"],
        alpha=config.alpha,
        beta=config.beta,
        max_steps=config.max_steps,
        penalty=config.penalty,
        device=device,
        episodes=eval_size,
    )
    return core, episodes, best_loop_on(model, splits["holdout"].to(device))


def load_agent_policy(run_dir: Path, algo: str, device):
    """The run's agent, deterministic, with its observation normalisation when it has one."""
    checkpoints = final_checkpoints(run_dir)
    agent = ALGORITHMS[algo].load(checkpoints / AGENT_FILE, device=device)
    stats_file = checkpoints / NORMALIZE_FILE
    if not stats_file.is_file():
        return lambda observations: agent.predict(observations, deterministic=True)[0]
    with open(stats_file, "rb") as handle:
        # VecNormalize pickles without its venv; normalize_obs needs only the statistics.
        normalizer: VecNormalize = pickle.load(handle)
    normalizer.training = False
    return lambda observations: agent.predict(
        normalizer.normalize_obs(observations), deterministic=True
    )[0]


def evaluate_run(
    run_dir: Path,
    eval_size: int | None = None,
    taus: Sequence[float] | None = None,
    device: str = "auto",
) -> list[PolicyResult]:
    """Agent vs every baseline on the test split; writes results and plots into ``run_dir``.

    ``taus``: the threshold baseline's confidence thresholds (default: :func:`default_taus`).
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    taus = default_taus(config.env) if taus is None else taus
    resolved = resolve_device(device)
    core, episodes, threshold_loop = _test_core(config, run_dir, resolved, eval_size)
    agent = {
        f"agent ({config.algo}, beta={config.beta:g})": load_agent_policy(
            run_dir, config.algo, resolved
        )
    }
    results = evaluate_all(core, agent, episodes, list(taus), threshold_loop, progress=_say)
    extra = {"run_dir": str(run_dir), "env": config.env, "split": "test", "episodes": episodes}
    write_results(run_dir, results, f"DynaLay on {config.env}: agent vs baselines", extra)
    plot_pareto(results, run_dir / "pareto.png")
    oracle = next(r for r in results if r.name == "oracle")
    plot_action_frequencies([results[-1], oracle], run_dir / "action_frequencies.png")
    plot_reward_curve(
        {results[-1].name: reward_curve_from_events(run_dir / "tb")}, run_dir / "reward_curve.png"
    )
    return results


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
    core, episodes, threshold_loop = _test_core(load_run_config(first), first, resolved, eval_size)
    agents = {
        f"agent beta={beta:g}": load_agent_policy(run_dirs[beta], base.algo, resolved)
        for beta in betas
    }
    taus = default_taus(base.env) if taus is None else taus
    results = evaluate_all(core, agents, episodes, list(taus), threshold_loop, progress=_say)
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


def best_static(results: Sequence[PolicyResult]) -> PolicyResult:
    """The most accurate static path (ties: the cheaper one)."""
    statics = [r for r in results if r.name.startswith("static")]
    return max(statics, key=lambda r: (r.accuracy, -r.relative_flops))


def dominated_by(point: PolicyResult, others: Sequence[PolicyResult]) -> list[str]:
    """Names of the deployable policies at least as accurate and as cheap, one strictly."""
    names = []
    for other in others:
        if other.name == "oracle" or other is point:
            continue
        no_worse = other.accuracy >= point.accuracy and other.relative_flops <= point.relative_flops
        better = other.accuracy > point.accuracy or other.relative_flops < point.relative_flops
        if no_worse and better:
            names.append(other.name)
    return names
