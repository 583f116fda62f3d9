"""``run_rl.py table``: does the trade-off pay? DynaLay against separately trained baselines,
over several seeds.

    python run_rl.py table --env DynaLay-FashionMNIST-v0 --seeds 0 1 2 --epochs 3 \\
        --train-size 30000 --betas 0.03 0.1 0.3 1 --total-timesteps 50000 \\
        --out docs/results/tradeoff                 # these are the defaults

Per seed, with the same training images, epochs, batch size and schedule for every model
(:data:`~agents.experiments.baselines.TRAINED_MODELS`):

- ``plain``: the DynaLay network trained on its straight path only (the thesis's "3-layer CNN");
- ``plain-2x``, ``plain-4x``: the same plain CNN made wider, about 2x and 4x its FLOPs;
- ``deq``: the same shape with every block looped by TorchDEQ's Anderson solver and implicit
  backward (the thesis's "DEQ with solvers");
- ``dynalay``: the main model trained with the DynaLay recipe; then one PPO agent per beta on
  it (main model frozen), and on the test split: its static paths, the confidence-threshold
  curve (its loop path chosen on the holdout), a random policy, the oracle, the agents and the
  full-information router (:mod:`agents.router`, one row per cost weight, fitted on the
  holdout: how much there is to learn from the agents' observation).

Every model reports test accuracy, FLOPs per sample, wall time per training epoch and the share
of it spent in ``backward()`` (the thesis's "Backward Pass Time"). Everything is written to
``out/seed<s>/`` as it finishes (a rerun skips what exists, so an interrupted table resumes);
``out/tradeoff.md``, ``out/tradeoff.json`` and ``out/tradeoff.png`` aggregate the seeds (mean and
sample standard deviation), state each target of the issue as met or missed, and say which
differences of the agents and the router from the threshold curve and the 2x-wider plain CNN
are significant (paired bootstrap intervals on the same test images, per seed:
:mod:`agents.experiments.significance`, which also keeps ``router.json``, ``router.pt`` and
``per_image.npz`` per seed, each made when missing, so a finished seed gains them on a rerun).

``models`` picks the separately trained baselines; ``dynalay_checkpoint`` uses a trained DynaLay
model instead of training one (``run_rl.py demo``: the model shipped with the package, against
baselines trained with the settings it records).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.algorithms import load_agent_policy
from agents.cli import add_config_flags, arg, config_from_flags, non_negative_float, positive_int
from agents.config import TrainConfig
from agents.evaluate import PolicyResult, best_loop_on, evaluate_all, run_policy, static_policy
from agents.files import RunFileError
from agents.report import plt, policy_kind
from agents.trainer import AlternatingTrainer
from dynalay_env.build import sequential_core
from dynalay_env.data import DEFAULT_IMAGE_HOLDOUT, DataNotFoundError, get_spec
from dynalay_env.mdp import MDPConfig
from dynalay_env.models import config_for
from dynalay_env.registry import ENV_IDS, dataset_of
from main_model import DynaLayConfig, DynaLayNet, load_main_model, save_main_model
from main_model.checkpoint import state_digest
from main_model.distributed import resolve_device
from main_model.io import atomic_write, write_json_atomic
from main_model.paths import path_statistics
from main_model.train import iterate_batches, train_main_model

from .baselines import BASELINES, TRAINED_MODELS
from .cli import SettingsMismatch, refuse_other_settings
from .common import experiment_splits, mean_std, say, train_config_from
from .evaluation import DEFAULT_TAUS
from .significance import (
    PER_IMAGE_FILE,
    add_columns,
    paired_comparisons,
    save_per_image,
    seed_extras,
    significance_markdown,
)

#: The reward every policy of the table is evaluated under (the thesis's: alpha 0.5, beta 0.3).
TABLE_MDP = MDPConfig()


@dataclass
class TableConfig:
    """Budget and settings of the table; every model of a seed gets the same budget."""

    env: str = arg("DynaLay-FashionMNIST-v0", f"one of {sorted(ENV_IDS.values())}")
    seeds: tuple[int, ...] = arg((0, 1, 2), "one table per seed; mean ± std over them")
    epochs: int = arg(3, "training epochs of every model", type=positive_int)
    train_size: int | None = arg(30000, "training images (holdout excluded)", type=positive_int)
    widths: tuple[int, ...] = arg((16, 32, 64), "channels of the blocks", type=positive_int)
    strides: tuple[int, ...] | None = arg(None, "None: 1, then 2s", type=positive_int)
    models: tuple[str, ...] = arg(BASELINES, "separately trained baselines", choices=BASELINES)
    dynalay_checkpoint: str | None = arg(None, "a trained DynaLay model (None: train one)")
    batch_size: int = arg(64, "batch of every model", type=positive_int)
    learning_rate: float = arg(1e-2, "Adam peak rate, all models", flag="--lr", type=float)
    betas: tuple[float, ...] = arg(
        (0.03, 0.1, 0.3, 1.0), "one PPO agent per beta", type=non_negative_float, sort=True
    )
    total_timesteps: int = arg(50000, "env steps per agent", type=positive_int)
    num_envs: int = arg(64, "batched env slots of the agents", type=positive_int)
    holdout_size: int = arg(DEFAULT_IMAGE_HOLDOUT, "the agents' images", type=positive_int)
    data_seed: int = arg(0, "seed of the holdout and the train_size subset")
    eval_size: int | None = arg(None, "test images (None: all)", type=positive_int)
    taus: tuple[float, ...] = arg(DEFAULT_TAUS, cli=False)
    data_dir: str | None = arg(None, "where to look for the dataset first")
    device: str = arg("auto", "auto (GPU when there is one), cpu, cuda")
    out: str = arg("docs/results/tradeoff", "results directory")


#: Settings that do not change any number of a finished seed (not saved, not compared).
FREE_KEYS = ("seeds", "device", "out")


def model_config(config: TableConfig, widths: tuple[int, ...] | None = None) -> DynaLayConfig:
    """The main-model config of the table's models (``widths`` for the wider baselines)."""
    return config_for(
        get_spec(dataset_of(config.env)), widths or config.widths, strides=config.strides
    )


def _say(message: str) -> None:
    say("table", message)


def train_model(name: str, config: TableConfig, seed: int, splits, out_dir: Path, device) -> dict:
    """Train (or reuse) one model of the table; returns its JSON record."""
    record_file, model_file = out_dir / f"{name}.json", out_dir / f"{name}.pt"
    if record_file.is_file() and model_file.is_file():
        return json.loads(record_file.read_text())
    trained = TRAINED_MODELS[name]
    widths = trained.widths(config.widths)
    if not trained.baseline and config.dynalay_checkpoint is not None:
        _say(f"seed {seed}: using the trained DynaLay model {config.dynalay_checkpoint}")
        model, _ = load_main_model(config.dynalay_checkpoint, device)
        history = []
    else:
        _say(
            f"seed {seed}: training {name} ({trained.recipe}, widths {widths}, "
            f"{config.epochs} epochs)"
        )
        model, history = train_main_model(
            splits["train"],
            epochs=config.epochs,
            config=model_config(config, widths),
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            recipe=trained.recipe,
            seed=seed,
            device=device,
        )
    paths = trained.paths(model.n_blocks)
    test = iterate_batches(splits["test"], 500)
    stats = path_statistics(model, test, solver=trained.solver, actions=paths)
    seconds = [h.seconds for h in history]
    record = {
        "name": name,
        "seed": seed,
        "recipe": trained.recipe,
        "widths": list(widths),
        "straight_flops": model.straight_flops(),
        "epoch_seconds": float(np.mean(seconds)) if seconds else None,
        "backward_share": (
            float(sum(h.backward_seconds for h in history) / sum(seconds)) if seconds else None
        ),
        "paths": {str(a): s for a, s in stats.items()},
    }
    if trained.baseline:  # timed like the policies: its path through a sequential env core
        core, episodes = sequential_core(
            model, splits["test"], mdp=TABLE_MDP, device=device, solver=trained.solver
        )
        run_policy(core, static_policy(paths[0]), min(episodes, 512), name)  # warm-up, untimed
        timed = run_policy(core, static_policy(paths[0]), episodes, name)
        record["ms_per_sample"] = timed.ms_per_sample
    save_main_model(model, model_file, metadata={"table": name, "seed": seed})
    write_json_atomic(record, record_file)
    return record


#: The table's settings its agents train with as they are (TrainConfig fields of the same name;
#: its batch size and learning rate are the main models', which the agents leave frozen).
AGENT_FIELDS = (
    "env", "data_seed", "device", "num_envs", "total_timesteps", "widths", "strides",
    "holdout_size", "train_size", "eval_size", "data_dir",
)  # fmt: skip


def table_agent_config(config: TableConfig, seed: int, beta: float, out_dir: Path) -> TrainConfig:
    """The seed's PPO agent for ``beta``: RL only, on the frozen DynaLay model of ``out_dir``."""
    return train_config_from(
        config, AGENT_FIELDS, algo="ppo", seed=seed, rounds=1, supervised_epochs=0, beta=beta,
        checkpoint=str(out_dir / "dynalay.pt"),
    )  # fmt: skip


def train_agents(config: TableConfig, seed: int, out_dir: Path) -> dict[float, Path]:
    """One agent per beta on the seed's frozen DynaLay model (skipped where it finished)."""
    run_dirs = {}
    for beta in config.betas:
        run_dir = out_dir / f"agent_beta_{beta:g}"
        run_dirs[beta] = run_dir
        if (run_dir / "summary.json").is_file():
            continue
        _say(f"seed {seed}: training the agent for beta={beta:g}")
        AlternatingTrainer(table_agent_config(config, seed, beta, out_dir), run_dir).run()
    return run_dirs


def evaluate_seed(config: TableConfig, seed: int, splits, out_dir: Path, device) -> list[dict]:
    """Static paths, threshold curve, random, oracle and the agents on the test split."""
    result_file = out_dir / "policies.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    model, _ = load_main_model(out_dir / "dynalay.pt", device)
    run_dirs = train_agents(config, seed, out_dir)
    core, episodes = sequential_core(model, splits["test"], mdp=TABLE_MDP, device=device)
    agents = {f"agent beta={b:g}": load_agent_policy(d, "ppo", device) for b, d in run_dirs.items()}
    threshold_loop = best_loop_on(model, splits["holdout"])
    _say(f"seed {seed}: evaluating every policy on {episodes} test images")
    results: list[PolicyResult] = evaluate_all(
        core, agents, episodes, list(config.taus), threshold_loop, deq_solver=None
    )
    for beta, result in zip(config.betas, results[-len(config.betas) :], strict=True):
        result.parameter = beta
    payload = [r.to_json() for r in results]
    columns: dict[str, np.ndarray] = {}
    add_columns(columns, results)  # for the paired differences (per_image.npz)
    save_per_image(out_dir / PER_IMAGE_FILE, columns)
    write_json_atomic(payload, result_file)
    return payload


def check_settings(config: TableConfig, out: Path, dynalay: DynaLayNet | None) -> None:
    """Reuse finished work only when it was made with the same settings (seeds may differ).

    ``dynalay``: the model of ``config.dynalay_checkpoint``, when given."""
    current = {k: v for k, v in dataclasses.asdict(config).items() if k not in FREE_KEYS}
    # The main model's defaults (contraction, tol, strides, norm...) shape every number too.
    if dynalay is not None:
        current["dynalay_digest"] = state_digest(dynalay)
    current["model_config"] = model_config(config).to_dict()
    refuse_other_settings(
        out / "table_config.json",
        current,
        "table",
        "choose another --out or delete it",
        read=_read_settings,
    )


def _read_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved table_config.json as today's settings: its model config read as a checkpoint's
    is (a field added since, absent there, has the value those models were trained with:
    ``DynaLayConfig.LEGACY_DEFAULTS``, and power iteration for ``spectral_norm``, as
    ``main_model.checkpoint`` reads a checkpoint from before that field)."""
    if "model_config" not in saved:
        return saved
    legacy = {"spectral_norm": "power", **saved["model_config"]}
    return {**saved, "model_config": DynaLayConfig.from_dict(legacy).to_dict()}


def validate(config: TableConfig) -> DynaLayNet | None:
    """Refuse settings that would make the table compare unlike things; returns the model of
    ``config.dynalay_checkpoint`` (None when the table trains its own)."""
    unknown = sorted(set(config.models) - set(BASELINES))
    if unknown or "plain" not in config.models:
        raise ValueError(
            f"models must include 'plain' and be among {list(BASELINES)}, got {config.models}"
        )
    trained = None
    if config.dynalay_checkpoint is not None:
        trained, _ = load_main_model(config.dynalay_checkpoint)
        expected = model_config(config)
        if (trained.config.widths, trained.config.strides) != (expected.widths, expected.strides):
            raise ValueError(
                f"the DynaLay model {config.dynalay_checkpoint} has widths "
                f"{trained.config.widths} and strides {trained.config.strides}; the baselines "
                f"would get {expected.widths} and {expected.strides}: pass the same --widths "
                f"and --strides"
            )
    return trained


def run_table(config: TableConfig) -> dict[str, Any]:
    """Train and evaluate everything for every seed, then aggregate; returns the JSON written."""
    dynalay = validate(config)
    out = Path(config.out)
    check_settings(config, out, dynalay)
    device = resolve_device(config.device)
    splits = experiment_splits(config, device)
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in config.seeds:
        seed_dir = out / f"seed{seed}"
        models = {
            name: train_model(name, config, seed, splits, seed_dir, device)
            for name in (*config.models, "dynalay")
        }
        policies = evaluate_seed(config, seed, splits, seed_dir, device)
        extras = seed_extras(
            seed, config.betas, config.models, splits, seed_dir, device, policies, TABLE_MDP
        )
        per_seed[seed] = {
            "models": models,
            "policies": [*policies, *extras["router"]["policies"]],
            "per_image": extras["per_image"],
        }
    summary = aggregate(config, per_seed)
    write_json_atomic(summary, out / "tradeoff.json")
    markdown = tradeoff_markdown(summary)
    atomic_write(out / "tradeoff.md", lambda p: Path(p).write_text(markdown))
    plot_tradeoff(summary, out / "tradeoff.png")
    return summary


def table_main(argv: list[str]) -> int:
    """``run_rl.py table``: the flags are :class:`TableConfig`'s fields."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py table",
        description="DynaLay against separately trained baselines (plain CNN, wider plain CNNs, "
        "DEQ with Anderson) at equal training budget, over several seeds: tradeoff.md/.json and "
        "tradeoff.png in --out, every model and agent checkpoint beside them. Resumable: a rerun "
        "with the same flags skips what finished.",
    )
    add_config_flags(parser, TableConfig)
    config = config_from_flags(TableConfig, parser.parse_args(argv))
    if config.env not in ENV_IDS.values():
        parser.error(f"unknown --env {config.env!r}; choose one of {sorted(ENV_IDS.values())}")
    try:
        run_table(config)
    except (SettingsMismatch, ValueError) as error:
        parser.error(str(error))
    except (DataNotFoundError, RunFileError) as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    print((Path(config.out) / "tradeoff.md").read_text())
    return 0


# ----- aggregation --------------------------------------------------------------------------------
def aggregate(config: TableConfig, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Rows (mean and std over seeds) and the targets of the issue, met or missed."""
    seeds = sorted(per_seed)
    plain_flops = [per_seed[s]["models"]["plain"]["straight_flops"] for s in seeds]
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, accuracy, flops, **extra) -> None:
        rows[name] = {
            "kind": kind,
            "accuracy": mean_std(accuracy),
            "relative_flops": mean_std(flops),
            **extra,
        }

    def timing(records: list[dict]) -> dict[str, Any]:
        """Training wall time per epoch and backward share (absent for a model not trained
        here, e.g. ``dynalay_checkpoint``)."""
        if any(r["epoch_seconds"] is None for r in records):
            return {}
        return {
            "epoch_seconds": mean_std([r["epoch_seconds"] for r in records]),
            "backward_share": mean_std([r["backward_share"] for r in records]),
        }

    def wall(records: list[dict]) -> dict[str, Any]:
        """Test time per image (absent where a record has none: a policy without one, the
        oracle; a model timed before the table timed its baselines)."""
        if any(r.get("ms_per_sample") is None for r in records):
            return {}
        return {"ms_per_sample": mean_std([r["ms_per_sample"] for r in records])}

    for name in config.models:
        records = [per_seed[s]["models"][name] for s in seeds]
        path = str(TRAINED_MODELS[name].paths(len(records[0]["widths"]))[0])
        add(
            name,
            "separately trained",
            [r["paths"][path]["accuracy"] for r in records],
            [r["paths"][path]["flops"] / f for r, f in zip(records, plain_flops, strict=True)],
            **wall(records),
            widths=records[0]["widths"],
            **timing(records),
        )
    dynalay_timing = timing([per_seed[s]["models"]["dynalay"] for s in seeds])

    def key(policy: dict) -> str:  # the threshold's loop path may differ between seeds
        return policy["name"].split(" (loop-")[0]

    names = [key(p) for p in per_seed[seeds[0]]["policies"]]
    for name in names:
        found = [next(p for p in per_seed[s]["policies"] if key(p) == name) for s in seeds]
        kind = policy_kind(name)
        add(
            f"DynaLay {name}",
            kind,
            [p["accuracy"] for p in found],
            [p["relative_flops"] for p in found],
            action_frequencies=np.mean([p["action_frequencies"] for p in found], 0).tolist(),
            parameter=found[0].get("parameter"),
            **wall(found),
            **(dynalay_timing if kind == "static" and "NOP" in name else {}),
        )
    return {
        "config": {**dataclasses.asdict(config), "seeds": seeds},
        "rows": rows,
        "targets": targets(rows),
        "significance": paired_comparisons(per_seed),
    }


def _threshold_accuracy_at(rows: dict[str, Any], flops: float) -> float | None:
    """The threshold curve's accuracy at ``flops`` (linear between its points)."""
    curve = sorted(
        (r["relative_flops"]["mean"], r["accuracy"]["mean"])
        for r in rows.values()
        if r["kind"] == "threshold"
    )
    if not curve or flops < curve[0][0]:
        return None
    xs, ys = zip(*curve, strict=True)
    return float(np.interp(flops, xs, ys))


def targets(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured numbers (means over seeds) and met / missed."""
    acc = {name: r["accuracy"]["mean"] for name, r in rows.items()}
    flops = {name: r["relative_flops"]["mean"] for name, r in rows.items()}
    loops = [n for n, r in rows.items() if r["kind"] == "static" and "loop" in n]
    best = max(loops, key=lambda n: acc[n])
    agents = [n for n, r in rows.items() if r["kind"] == "agent"]
    nop = next(n for n, r in rows.items() if r["kind"] == "static" and "NOP" in n)
    out = [
        {
            "target": "NOP path within 0.5 points of the separately trained plain CNN",
            "measured": f"NOP {acc[nop]:.2%} vs plain {acc['plain']:.2%}",
            "met": acc[nop] >= acc["plain"] - 0.005,
        },
        {
            "target": "best static loop path >= 2 points above the plain CNN",
            "measured": f"{best} {acc[best]:.2%} vs plain {acc['plain']:.2%}",
            "met": acc[best] >= acc["plain"] + 0.02,
        },
    ]
    close = [a for a in agents if acc[a] >= acc[best] - 0.005 and flops[a] <= 0.5 * flops[best]]
    out.append(
        {
            "target": "an agent within 0.5 points of the best static path at <= 50% of its FLOPs",
            "measured": "; ".join(f"{a}: {acc[a]:.2%} at {flops[a]:.2f}x" for a in agents)
            + f" (best static {acc[best]:.2%} at {flops[best]:.2f}x)",
            "met": bool(close),
        }
    )
    below = []
    for a in agents:
        curve = _threshold_accuracy_at(rows, flops[a])
        if curve is not None and acc[a] < curve:
            below.append(f"{a} ({acc[a]:.2%} vs threshold {curve:.2%} at {flops[a]:.2f}x)")
    out.append(
        {
            "target": "every agent above the confidence-threshold curve",
            "measured": "below: " + "; ".join(below) if below else "all agents above or left of it",
            "met": not below,
        }
    )
    wider = [w for w in ("plain-2x", "plain-4x") if w in acc]
    if wider:
        wide = [
            f"{a} beats {w}"
            for a in agents
            for w in wider
            if acc[a] > acc[w] and flops[a] <= flops[w]
        ]
        out.append(
            {
                "target": "stretch: an agent more accurate than a wider plain CNN at no more FLOPs",
                "measured": "; ".join(wide)
                or ", ".join(f"{w} {acc[w]:.2%} at {flops[w]:.2f}x" for w in wider),
                "met": bool(wide),
            }
        )
    return out


def _fmt(stat: dict[str, float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit}"


def tradeoff_markdown(summary: dict[str, Any]) -> str:
    config = summary["config"]
    lines = [
        "| model / policy | test accuracy (%) | FLOPs (x plain CNN) | ms / test image "
        "| s / training epoch | backward share |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary["rows"].items():
        wall = _fmt(row["ms_per_sample"], digits=3) if "ms_per_sample" in row else ""
        epoch = _fmt(row["epoch_seconds"], digits=1) if "epoch_seconds" in row else ""
        share = _fmt(row["backward_share"], 100, 0, "%") if "backward_share" in row else ""
        lines.append(
            f"| {name} | {_fmt(row['accuracy'], 100)} | {_fmt(row['relative_flops'])} | "
            f"{wall} | {epoch} | {share} |"
        )
    lines += ["", "| target | measured (mean over seeds) | verdict |", "|---|---|---|"]
    for target in summary["targets"]:
        verdict = "met" if target["met"] else "**missed**"
        lines.append(f"| {target['target']} | {target['measured']} | {verdict} |")
    lines += significance_markdown(summary.get("significance", []))
    lines += [
        "",
        f"Seeds {config['seeds']}; mean ± standard deviation over seeds. {config['epochs']} "
        f"epochs on {config['train_size'] or 'all the'} training images (holdout excluded), "
        f"batch {config['batch_size']}, "
        f"Adam lr {config['learning_rate']:g} with cosine decay, widths {config['widths']}; "
        f"agents: PPO, {config['total_timesteps']} steps each on the "
        f"{config['holdout_size']}-image holdout. Test split: all of it unless eval_size is set "
        f"({config['eval_size']}).",
    ]
    if config.get("dynalay_checkpoint"):
        lines.append(
            f"The DynaLay model was not trained here: {config['dynalay_checkpoint']} (trained "
            "with the same images, epochs and schedule as the baselines; see its provenance)."
        )
    return "\n".join(lines) + "\n"


def plot_tradeoff(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy against FLOPs with error bars over seeds; the threshold curve as a line."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    rows = summary["rows"]
    styles = {
        "separately trained": ("s", "tab:blue"),
        "static": ("o", "tab:cyan"),
        "random": ("x", "black"),
        "oracle": ("*", "tab:green"),
        "agent": ("P", "tab:red"),
        "router": ("^", "tab:brown"),
    }
    curve = sorted(
        (r["relative_flops"]["mean"], r["accuracy"]["mean"], r["accuracy"]["std"])
        for r in rows.values()
        if r["kind"] == "threshold"
    )
    if curve:
        xs, ys, es = zip(*curve, strict=True)
        ax.errorbar(
            xs,
            [100 * y for y in ys],
            [100 * e for e in es],
            fmt="-",
            color="tab:gray",
            label="confidence threshold (tau sweep)",
        )
    seen = set()
    for name, row in rows.items():
        if row["kind"] not in styles:
            continue
        marker, color = styles[row["kind"]]
        label = None if row["kind"] in seen else row["kind"]
        seen.add(row["kind"])
        x, y = row["relative_flops"]["mean"], 100 * row["accuracy"]["mean"]
        ax.errorbar(
            x,
            y,
            yerr=100 * row["accuracy"]["std"],
            xerr=row["relative_flops"]["std"],
            fmt=marker,
            color=color,
            ms=8,
            capsize=3,
            label=label,
        )
        ax.annotate(
            name.replace("DynaLay ", ""),
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean FLOPs per test image, relative to the plain CNN (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("DynaLay vs separately trained baselines (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return path
