"""DynaLay's command line: train an agent (and the main model) with alternating phases.

    python run_rl.py --algo ppo --env DynaLay-CIFAR10-v0 --seed 0
    python run_rl.py --resume runs/DynaLay-CIFAR10-v0_ppo_s0_20261123-120000
    python run_rl.py eval RUN_DIR            # agent vs baselines: results.md/.json + plots
    python run_rl.py sweep --betas 0.03 0.1 0.3 1 [training flags]   # Pareto over beta
    python run_rl.py table --seeds 0 1 2 [budget flags]   # vs separately trained baselines
    python run_rl.py demo                    # `make demo`: the shipped model's agents vs a plain CNN
    python run_rl.py reproduce all [--quick]  # the thesis's Chapter 4, each claim with a verdict
    python run_rl.py export RUN_DIR --output dynalay.pt   # main model + agent in one file
    python run_rl.py predict dynalay.pt IMAGE [IMAGE ...] [--json]   # classify image files
    python run_rl.py convert RUN_DIR --trust-pickles  # an old run directory: pickles to JSON

The logic lives in :mod:`agents.trainer`; this file parses flags, checks them, and prints the
summary. Bad flags exit with code 2 and a message that says what to change; a run that diverges
(a non-finite loss, weight or observation) exits with code 3 and a message naming the phase, the
step and what to try, its last verified phase intact for ``--resume``.
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
from agents.algorithms import ALGORITHMS, HYPERPARAMS_FILE
from agents.config import RunConfigMismatch, TrainConfig, load_run_config
from agents.experiments.cli import non_negative_float, non_negative_int, positive_int
from agents.files import RunFileError
from agents.trainer import AlternatingTrainer
from dynalay_env import ENV_IDS, TEXT_ENV_IDS, DataNotFoundError
from dynalay_env.data import SplitOverlapError
from dynalay_env.mdp import PENALTIES, SHAPINGS
from main_model.divergence import TrainingDiverged
from main_model.paths import path_name
from main_model.recipes import RECIPES

DEFAULTS = TrainConfig()
#: The exit code of a run stopped by TrainingDiverged (2: bad flags or missing data).
DIVERGED = 3
#: What train and sweep accept: the image ids and the text ids (the table's baselines are CNNs).
TRAINABLE_ENV_IDS = sorted([*ENV_IDS.values(), *TEXT_ENV_IDS.values()])


def build_parser() -> argparse.ArgumentParser:
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
    add = parser.add_argument
    add("--algo", default=DEFAULTS.algo, choices=sorted(ALGORITHMS), help="SB3 algorithm")
    add("--env", default=DEFAULTS.env, help=f"env id, one of {TRAINABLE_ENV_IDS}")
    add("--seed", type=int, default=DEFAULTS.seed, help="seed of the model and the agent")
    add(
        "--data-seed",
        type=int,
        default=DEFAULTS.data_seed,
        help="seed of the holdout (and --train-size subset) carved out of the training set",
    )
    add(
        "--recipe",
        default=DEFAULTS.recipe,
        choices=sorted(RECIPES),
        help="main-model training recipe (main_model/train.py)",
    )
    add("--device", default=DEFAULTS.device, help="auto (GPU when there is one), cpu, cuda")
    add("--num-envs", type=positive_int, default=DEFAULTS.num_envs, help="batched env slots")
    add(
        "--total-timesteps",
        type=positive_int,
        default=DEFAULTS.total_timesteps,
        help="env steps per RL phase",
    )
    add("--rounds", type=positive_int, default=DEFAULTS.rounds, help="RL+supervised rounds")
    add(
        "--pretrain-epochs",
        type=non_negative_int,
        default=DEFAULTS.pretrain_epochs,
        help="warm-up epochs on all paths (thesis: 20; 0: the rounds start from an untrained "
        "main model)",
    )
    add(
        "--no-agent-pretrain",
        dest="agent_pretrain",
        action="store_false",
        help="each round trains the main model first, so round 1 follows an untrained agent "
        "(default: the agent learns on the warmed-up model first; thesis Sec. 4.0.5)",
    )
    add(
        "--track-test",
        type=non_negative_int,
        default=DEFAULTS.track_test,
        help="after every supervised epoch, log the test accuracy and loss of the agent's paths "
        "on this many test images to TensorBoard (0: off)",
    )
    add(
        "--supervised-epochs",
        type=non_negative_int,
        default=DEFAULTS.supervised_epochs,
        help="epochs per supervised phase (0: RL phases only, main model frozen)",
    )
    add(
        "--exploration",
        type=non_negative_float,
        default=DEFAULTS.exploration,
        help="share of random paths in supervised phases",
    )
    add(
        "--alpha", type=non_negative_float, default=DEFAULTS.alpha, help="reward per correct answer"
    )
    add("--beta", type=non_negative_float, default=DEFAULTS.beta, help="compute penalty weight")
    add(
        "--gamma-loss",
        type=non_negative_float,
        default=DEFAULTS.gamma_loss,
        help="gamma of the thesis's total loss L = CE - gamma * R (logged)",
    )
    add(
        "--max-steps",
        type=positive_int,
        default=DEFAULTS.max_steps,
        help="decisions per episode (1 = one-shot)",
    )
    add(
        "--penalty",
        default=DEFAULTS.penalty,
        choices=PENALTIES,
        help="what multiplies beta * cost in a loop's reward: the 'consecutive' count of the "
        "same choice (the thesis's equation) or the chosen 'layer' k (its text)",
    )
    add(
        "--shaping",
        default=DEFAULTS.shaping,
        choices=SHAPINGS,
        help="'nop': add the potential-based term alpha * (correct after - correct before) "
        "to each step (Ng et al. 1999: the optimal policy is unchanged); 'none': the thesis's",
    )
    add(
        "--observe-changes",
        action="store_true",
        help="the observation also shows what the last loop changed (prediction changed, top "
        "probability change, total variation); for --max-steps > 1",
    )
    add(
        "--bc-epochs",
        type=non_negative_int,
        default=DEFAULTS.bc_epochs,
        help="before the first RL phase, fit the policy to the confidence-threshold rule for "
        "this many epochs on the holdout's observations (0: off)",
    )
    add(
        "--bc-tau",
        type=non_negative_float,
        default=DEFAULTS.bc_tau,
        help="the cloned threshold rule's tau: NOP when the top probability is >= tau",
    )
    add("--batch-size", type=positive_int, default=DEFAULTS.batch_size, help="main-model batch")
    add("--lr", type=float, default=DEFAULTS.learning_rate, help="main-model Adam learning rate")
    add(
        "--widths",
        type=positive_int,
        nargs="+",
        default=list(DEFAULTS.widths),
        help="channels of the FPI blocks",
    )
    add(
        "--strides",
        type=positive_int,
        nargs="+",
        default=None,
        help="stride of each block's injection conv (default: 1, then 2s)",
    )
    add(
        "--holdout-size",
        type=positive_int,
        default=DEFAULTS.holdout_size,
        help="training samples kept unseen for the agent (default: 5000 images, or the text "
        "dataset's own: 1000 WikiText-2 windows, 2500 IMDB reviews)",
    )
    add("--train-size", type=positive_int, default=None, help="cap on train samples per epoch")
    add("--eval-size", type=positive_int, default=None, help="test samples in the summary")
    add("--data-dir", default=None, help="where to look for the dataset first")
    add("--download", action="store_true", help="let torchvision download the dataset")
    add("--checkpoint", default=None, help="main-model checkpoint to start from (no pretraining)")
    add("--logdir", default=DEFAULTS.logdir, help="parent of the run directories")
    add("--conf", default=None, help=f"hyperparameter YAML (default: {HYPERPARAMS_FILE.name})")
    add("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        algo=args.algo,
        env=args.env,
        seed=args.seed,
        data_seed=args.data_seed,
        recipe=args.recipe,
        device=args.device,
        num_envs=args.num_envs,
        total_timesteps=args.total_timesteps,
        rounds=args.rounds,
        pretrain_epochs=args.pretrain_epochs,
        agent_pretrain=args.agent_pretrain,
        track_test=args.track_test,
        supervised_epochs=args.supervised_epochs,
        exploration=args.exploration,
        alpha=args.alpha,
        beta=args.beta,
        gamma_loss=args.gamma_loss,
        max_steps=args.max_steps,
        penalty=args.penalty,
        shaping=args.shaping,
        observe_changes=args.observe_changes,
        bc_epochs=args.bc_epochs,
        bc_tau=args.bc_tau,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        widths=tuple(args.widths),
        strides=None if args.strides is None else tuple(args.strides),
        holdout_size=args.holdout_size,
        train_size=args.train_size,
        eval_size=args.eval_size,
        data_dir=args.data_dir,
        download=args.download,
        checkpoint=args.checkpoint,
        logdir=args.logdir,
        conf=args.conf,
    )


#: Flags whose argparse name is not the TrainConfig field they set.
FIELD_OF_FLAG = {"lr": "learning_rate"}


def resume_conflicts(
    args: argparse.Namespace, argv: list[str] | None, saved: TrainConfig
) -> list[str]:
    """``--flag given (saved: value)`` for each flag on the command line that contradicts the
    resumed run's config; flags left out, or equal to the saved values, are fine."""
    unset = object()
    written = build_parser()  # the same flags, with a default no command line can produce
    written.set_defaults(**dict.fromkeys(vars(args), unset))
    given = {dest for dest, value in vars(written.parse_args(argv)).items() if value is not unset}
    given.discard("resume")
    differences = saved.differences(config_from_args(args))
    return [
        f"--{dest.replace('_', '-')} {differences[field][1]!r} (saved: {differences[field][0]!r})"
        for dest in sorted(given)
        if (field := FIELD_OF_FLAG.get(dest, dest)) in differences
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
        conflicts = resume_conflicts(args, argv, saved)
        if conflicts:
            parser.error(
                f"--resume {run_dir} continues the run with the settings in its config.yaml; "
                f"these flags contradict them: {'; '.join(conflicts)}. Drop them to resume, or "
                "start a new run without --resume"
            )
        return saved, run_dir
    if args.env not in TRAINABLE_ENV_IDS:
        parser.error(f"unknown --env {args.env!r}; choose one of {TRAINABLE_ENV_IDS}")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    if args.conf is not None and not Path(args.conf).is_file():
        parser.error(f"--conf {args.conf} does not exist")
    if args.exploration > 1:
        parser.error(f"--exploration must be in [0, 1], got {args.exploration}")
    config = config_from_args(args)
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
    if args.env not in TRAINABLE_ENV_IDS:
        parser.error(f"unknown --env {args.env!r}; choose one of {TRAINABLE_ENV_IDS}")
    config = config_from_args(args)
    sweep_dir = Path(config.logdir) / f"sweep_{config.env}_{config.algo}_s{config.seed}"
    try:
        beta_sweep(config, sorted(args.betas), sweep_dir, config.eval_size, args.taus)
    except RunConfigMismatch as error:
        advice = (
            f"sweep directories are named by env, algo and seed only: run a sweep with other "
            f"settings under another --logdir, or delete {sweep_dir}"
        )
        parser.error(str(RunConfigMismatch(error.run_dir, error.differences, advice)))
    except (DataNotFoundError, RunFileError) as error:
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
    except (DataNotFoundError, SplitOverlapError, RunConfigMismatch, RunFileError) as error:
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
