"""DynaLay's command line: train an agent (and the main model) with alternating phases.

    python run_rl.py --algo ppo --env DynaLay-CIFAR10-v0 --seed 0
    python run_rl.py --resume runs/DynaLay-CIFAR10-v0_ppo_s0_20261123-120000
    python run_rl.py eval RUN_DIR            # agent vs baselines: results.md/.json + plots
    python run_rl.py sweep --betas 0.03 0.1 0.3 1 [training flags]   # Pareto over beta
    python run_rl.py table --seeds 0 1 2 [budget flags]   # vs separately trained baselines
    python run_rl.py demo                    # `make demo`: the shipped model's agents vs a plain CNN
    python run_rl.py reproduce all [--quick]  # the thesis's Chapter 4, each claim with a verdict
    python run_rl.py options --betas 0.1     # PPO options vs threshold, router, cascade (a table's)
    python run_rl.py export RUN_DIR --output dynalay.pt   # main model + agent in one file
    python run_rl.py predict dynalay.pt IMAGE [IMAGE ...] [--json]   # classify image files
    python run_rl.py convert RUN_DIR --trust-pickles  # an old run directory: pickles to JSON

The logic lives in :mod:`agents.trainer`; the training flags are the fields of
:class:`agents.config.TrainConfig` (:mod:`agents.cli`); this file parses and checks them, and
prints the summary. Bad flags exit with code 2 and a message that says what to change; a run
that diverges (a non-finite loss, weight or observation) exits with code 3 and a message naming
the phase, the step and what to try, its last verified phase intact for ``--resume``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import main_model.distributed as distributed
from agents.cli import add_config_flags, config_from_flags, given_flags, non_negative_float
from agents.config import TRAINABLE_ENV_IDS, RunConfigMismatch, TrainConfig, load_run_config
from agents.files import RunFileError
from agents.trainer import AlternatingTrainer
from dynalay_env import DataNotFoundError
from dynalay_env.data import SplitOverlapError
from main_model.checkpoint import CheckpointError
from main_model.divergence import TrainingDiverged
from main_model.paths import path_name

#: The exit code of a run stopped by TrainingDiverged (2: bad flags or missing data).
DIVERGED = 3


def build_parser() -> argparse.ArgumentParser:
    """The training flags: one per :class:`TrainConfig` field (its help is the field's), and
    ``--resume``."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py",
        description="Train a DynaLay agent: pre-train the main model, then alternate RL "
        "(Stable-Baselines3 on the batched env) and supervised phases.",
        epilog="Sub-commands: 'run_rl.py eval RUN_DIR' (agent vs baselines on the test split), "
        "'run_rl.py sweep --betas B [B ...] [flags above]' (one agent per beta, Pareto plots), "
        "'run_rl.py table' (DynaLay vs separately trained baselines over seeds), 'run_rl.py "
        "demo', 'run_rl.py reproduce EXPERIMENT|all' (the thesis's Chapter 4 with verdicts), "
        "'run_rl.py export RUN_DIR --output F' and 'run_rl.py predict F IMAGE...' (the "
        "deployable classifier), 'run_rl.py convert RUN_DIR --trust-pickles' (a run directory "
        "from before DynaLay stopped unpickling); each has its own --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(parser, TrainConfig)
    parser.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run"
    )
    return parser


def resume_conflicts(args: argparse.Namespace, saved: TrainConfig) -> list[str]:
    """``--flag given (saved: value)`` for each flag on the command line that contradicts the
    resumed run's config; flags left out, or equal to the saved values, are fine."""
    differences = saved.differences(config_from_flags(TrainConfig, args))
    return [
        f"{flag} {differences[field][1]!r} (saved: {differences[field][0]!r})"
        for field, flag in sorted(given_flags(TrainConfig, args).items(), key=lambda f: f[1])
        if field in differences
    ]


def prepare(argv: list[str] | None) -> tuple[TrainConfig, Path]:
    """Parse and check the flags; exits with code 2 and a clear message when they are wrong."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is not None:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            parser.error(
                f"--resume {run_dir}: no config.yaml there; is it a DynaLay run directory?"
            )
        saved = load_run_config(run_dir)
        conflicts = resume_conflicts(args, saved)
        if conflicts:
            parser.error(
                f"--resume {run_dir} continues the run with the settings in its config.yaml; "
                f"these flags contradict them: {'; '.join(conflicts)}. Drop them to resume, or "
                "start a new run without --resume"
            )
        return saved, run_dir
    config = config_from_flags(TrainConfig, args)
    if config.env not in TRAINABLE_ENV_IDS:
        parser.error(f"unknown --env {config.env!r}; choose one of {TRAINABLE_ENV_IDS}")
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        parser.error(f"--checkpoint {config.checkpoint} does not exist")
    if config.conf is not None and not Path(config.conf).is_file():
        parser.error(f"--conf {config.conf} does not exist")
    if config.exploration > 1:
        parser.error(f"--exploration must be in [0, 1], got {config.exploration}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.logdir) / f"{config.env}_{config.algo}_s{config.seed}_{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
    return config, run_dir


def format_summary(summary: dict) -> str:
    frequencies = ", ".join(
        f"{path_name(a)} {share:.1%}" for a, share in enumerate(summary["action_frequencies"])
    )
    perplexity = summary.get("perplexity")  # language models only
    perplexity = "" if perplexity is None else f" | perplexity {perplexity:.1f}"
    warnings = "".join(
        f"\nwarning: after phase {note['phase']} the main model was no better than chance on the "
        f"holdout ({note['accuracy']:.1%}, chance {note['chance']:.1%}): try a lower --lr"
        for note in summary.get("below_chance", [])
    )
    return (
        f"test accuracy {summary['accuracy']:.4f}{perplexity} on {summary['episodes']} samples | "
        f"mean cost {summary['mean_cost']:.4f} | FLOPs vs plain CNN "
        f"{summary['relative_flops']:.2f}x | actions: {frequencies}{warnings}\n"
        f"run directory: {summary['run_dir']}"
    )


def sweep_main(argv: list[str]) -> int:
    """``run_rl.py sweep``: the training flags, ``--betas`` and ``--taus``."""
    from agents.experiments.evaluation import DEFAULT_TAUS, TEXT_TAUS
    from agents.experiments.sweep import beta_sweep

    parser = build_parser()
    parser.prog = "run_rl.py sweep"
    parser.description = (
        "Train one agent per beta on one shared pre-trained main model and compare them with "
        "every baseline (Pareto curve, frequency and accuracy vs beta)."
    )
    parser.add_argument("--betas", type=non_negative_float, nargs="+", required=True)
    parser.add_argument(
        "--taus",
        type=float,
        nargs="+",
        default=None,
        help=f"confidence thresholds (default: {list(DEFAULT_TAUS)}; WikiText-2 {list(TEXT_TAUS)})",
    )
    args = parser.parse_args(argv)
    config = config_from_flags(TrainConfig, args)
    if config.env not in TRAINABLE_ENV_IDS:
        parser.error(f"unknown --env {config.env!r}; choose one of {TRAINABLE_ENV_IDS}")
    sweep_dir = Path(config.logdir) / f"sweep_{config.env}_{config.algo}_s{config.seed}"
    try:
        beta_sweep(config, sorted(args.betas), sweep_dir, config.eval_size, args.taus)
    except RunConfigMismatch as error:
        advice = (
            f"sweep directories are named by env, algo and seed only: run a sweep with other "
            f"settings under another --logdir, or delete {sweep_dir}"
        )
        parser.error(str(RunConfigMismatch(error.run_dir, error.differences, advice)))
    except (DataNotFoundError, RunFileError, CheckpointError) as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    print((sweep_dir / "results.md").read_text())
    print(f"sweep directory: {sweep_dir}")
    return 0


def _imported(module: str, name: str) -> Callable[[list[str]], int]:
    """A sub-command whose module is imported only when it runs."""
    return lambda argv: getattr(importlib.import_module(module), name)(argv)


#: ``run_rl.py <name> ...``: each takes the remaining arguments and returns the exit code.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "eval": _imported("agents.experiments.evaluation", "eval_main"),
    "sweep": sweep_main,
    "table": _imported("agents.experiments.tradeoff", "table_main"),
    "demo": _imported("agents.experiments.demo", "demo_main"),
    "reproduce": _imported("agents.experiments.thesis", "reproduce_main"),
    "options": _imported("agents.experiments.agent_options", "options_main"),
    "export": _imported("agents.deploy", "export_main"),
    "predict": _imported("agents.deploy", "predict_main"),
    "convert": _imported("agents.convert", "convert_main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        try:
            return SUBCOMMANDS[argv[0]](argv[1:])
        except TrainingDiverged as error:  # sweep, table, demo, reproduce: they train too
            print(f"run_rl.py {argv[0]}: {error}", file=sys.stderr)
            return DIVERGED
    config, run_dir = prepare(argv)
    try:
        trainer = AlternatingTrainer(config, run_dir)
        summary = trainer.run()
        prints = distributed.is_main_process()  # under torchrun every rank has the summary
        distributed.shutdown()  # and leaves the group with the others
    except (
        DataNotFoundError,
        SplitOverlapError,
        RunConfigMismatch,
        RunFileError,
        CheckpointError,  # a main-model file that is not one (weights-only: nothing ran)
    ) as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:  # the message says where, and what to try
        print(f"run_rl.py: {error}", file=sys.stderr)
        return DIVERGED
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: python run_rl.py --resume {run_dir}", file=sys.stderr)
        return 130
    if prints:
        print(format_summary(summary))
        print(json.dumps({k: v for k, v in summary.items() if k != "phases"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
