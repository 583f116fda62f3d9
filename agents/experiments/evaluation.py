"""``run_rl.py eval RUN_DIR``: a finished run's agent against every baseline on the test split,
with ``results.md``, ``results.json`` and the plots written into the run directory.

The baselines include the full-information router (:mod:`agents.router`), one row per cost
weight just before the agent's, fitted on the run's holdout with the run's seed; its
cross-fitted holdout numbers are in ``results.json`` under ``router_holdout_cross_fit``.

    python run_rl.py eval RUN_DIR [--eval-size N] [--taus T ...] [--device D]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from agents.algorithms import load_agent_policy
from agents.cli import positive_int
from agents.config import TrainConfig, load_run_config
from agents.evaluate import PolicyResult, best_loop_on, evaluate_all
from agents.files import MODEL_FILE, RunFileError, final_checkpoints
from agents.report import (
    plot_action_frequencies,
    plot_pareto,
    plot_reward_curve,
    policy_kind,
    reward_curve_from_events,
    write_results,
)
from agents.router import ROUTER_BETAS, router_results
from dynalay_env.build import sequential_core
from dynalay_env.data import load_splits
from dynalay_env.registry import TEXT_ENV_IDS, dataset_of
from main_model import CheckpointError, load_main_model
from main_model.distributed import resolve_device

DEFAULT_TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
#: A language model's top next-token probability is rarely above 0.5: its thresholds sit lower.
TEXT_TAUS = (0.05, 0.1, 0.15, 0.2, 0.3)


def default_taus(env_id: str) -> tuple[float, ...]:
    """The confidence thresholds the threshold baseline sweeps on ``env_id`` by default: the
    language model's (:data:`TEXT_TAUS`) on WikiText-2, else the classifiers' (IMDB's two
    classes included, whose top probability is never below 0.5)."""
    return TEXT_TAUS if env_id == TEXT_ENV_IDS["WikiText2"] else DEFAULT_TAUS


def progress(message: str) -> None:
    print(f"  evaluating {message}", file=sys.stderr)


def evaluation_core(config: TrainConfig, run_dir: Path, device, eval_size: int | None):
    """The run's final main model over the test split, and its best loop path on the holdout."""
    model, _ = load_main_model(final_checkpoints(run_dir) / MODEL_FILE, device)
    splits = load_splits(
        dataset_of(config.env),
        config.data_dir,
        config.holdout_size,
        config.data_seed,
        config.download,
    )
    core, episodes = sequential_core(
        model, splits["test"], mdp=config.mdp, device=device, episodes=eval_size
    )
    return core, episodes, best_loop_on(model, splits["holdout"].to(device))


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
    core, episodes, threshold_loop = evaluation_core(config, run_dir, resolved, eval_size)
    agent = {
        f"agent ({config.algo}, beta={config.beta:g})": load_agent_policy(
            run_dir, config.algo, resolved
        )
    }
    results = evaluate_all(core, agent, episodes, list(taus), threshold_loop, progress=progress)
    splits = load_splits(
        dataset_of(config.env),
        config.data_dir,
        config.holdout_size,
        config.data_seed,
        config.download,
    )
    holdout = splits["holdout"].to(resolved)
    # The router reads the default observation: an agent that saw what its loops changed is
    # compared with it on the same images and model, observed as the router was fitted.
    router_core = core
    if config.observe_changes:
        router_core, _ = sequential_core(
            core.model,
            splits["test"],
            mdp=dataclasses.replace(config.mdp, observe_changes=False),
            device=resolved,
            episodes=eval_size,
        )
    routers, cross_fit, _ = router_results(
        core.model, holdout, router_core, episodes, config.mdp.alpha, ROUTER_BETAS, config.seed,
        progress,
    )  # fmt: skip
    results[-1:-1] = routers  # before the agent, which stays last
    extra = {
        "run_dir": str(run_dir),
        "env": config.env,
        "split": "test",
        "episodes": episodes,
        "router_holdout_cross_fit": cross_fit,
    }
    write_results(run_dir, results, f"DynaLay on {config.env}: agent vs baselines", extra)
    plot_pareto(results, run_dir / "pareto.png")
    oracle = next(r for r in results if policy_kind(r.name) == "oracle")
    plot_action_frequencies([results[-1], oracle], run_dir / "action_frequencies.png")
    plot_reward_curve(
        {results[-1].name: reward_curve_from_events(run_dir / "tb")}, run_dir / "reward_curve.png"
    )
    return results


def eval_main(argv: list[str]) -> int:
    """``run_rl.py eval``: parse the flags, evaluate, print the table."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py eval",
        description="Evaluate a run's agent against static paths, DEQ, random, confidence "
        "threshold and oracle on the test split; writes results.md, results.json and PNG plots "
        "into the run directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a finished run directory")
    parser.add_argument("--eval-size", type=positive_int, default=None, help="test samples (all)")
    parser.add_argument(
        "--taus",
        type=float,
        nargs="+",
        default=None,
        help=f"confidence thresholds (default: {list(DEFAULT_TAUS)}; WikiText-2 {list(TEXT_TAUS)})",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        parser.error(
            f"{run_dir / 'config.yaml'} is missing; is {run_dir} a finished run directory?"
        )
    try:
        final_checkpoints(run_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    try:
        results = evaluate_run(run_dir, args.eval_size, args.taus, args.device)
    except (RunFileError, CheckpointError) as error:
        print(f"run_rl.py eval: {error}", file=sys.stderr)
        return 2
    print((run_dir / "results.md").read_text())
    print(f"wrote {run_dir / 'results.md'}, results.json and plots to {run_dir}")
    return 0 if results else 1
